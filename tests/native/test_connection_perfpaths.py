"""The cheap paths of the native receive: ``recv``/``recv_exactly``/
``with_data`` return a one-shot awaitable (not a coroutine), and a receive
already waiting on an empty buffer gets its ``bytes`` built straight from the
provided buffer.  These tests pin down that both keep the documented
semantics: order, no loss when a woken receive is never resumed, single use,
and the loop fast paths (get_debug, create_future, call_soon) they lean on.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import random
import socket
import sys
import threading

import pytest

import ringline
from ringline._net import stream as _stream
from tests.support import HOST, IO_TIMEOUT, conn_pair, run, until
from tests.support.backends import uring_only

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("native_backend")]


async def park(awaitable):
    """Start awaiting ``awaitable`` by hand: return its iterator and the
    future it waits on (as a Task would see it)."""
    it = awaitable.__await__()
    fut = it.send(None)
    assert asyncio.isfuture(fut) and not fut.done()
    return it, fut


@uring_only("the portable backend's receives are coroutines (a documented difference)")
def test_receive_is_a_single_use_awaitable_not_a_coroutine():
    async def main():
        async with conn_pair() as (srv, cli):
            r = srv.recv()
            assert not inspect.iscoroutine(r) and inspect.isawaitable(r)
            cli.send_nowait(b"x")
            assert await asyncio.wait_for(r, IO_TIMEOUT) == b"x"
            with pytest.raises(RuntimeError):
                await r
            # Any awaitable-accepting API takes it.
            t = asyncio.ensure_future(srv.recv_exactly(3))
            cli.send_nowait(b"abc")
            assert await asyncio.wait_for(t, IO_TIMEOUT) == b"abc"
            # Never awaited: nothing consumed.
            srv.recv()
            srv.with_data(lambda v: len(v))
            cli.send_nowait(b"kept")
            await until(lambda: srv.buffered == 4)
            assert await srv.recv() == b"kept"

    run(main)


def test_a_receive_someone_still_holds_is_never_handed_out_again():
    # A finished receive is recycled for the next recv() only when nothing
    # but the connection refers to it.
    async def main():
        async with conn_pair() as (srv, cli):
            cli.send_nowait(b"a")
            first = srv.recv()
            assert await asyncio.wait_for(first, IO_TIMEOUT) == b"a"
            second = srv.recv_exactly(2)
            assert second is not first
            with pytest.raises(RuntimeError):
                await first             # still the finished one
            cli.send_nowait(b"bc")
            assert await asyncio.wait_for(second, IO_TIMEOUT) == b"bc"
            del first, second
            # Recycled ones start clean: kind, size and parse are their own.
            seen = []
            for i in range(3):
                cli.send_nowait(b"%d-xyz" % i)
                assert await asyncio.wait_for(srv.recv_exactly(2), IO_TIMEOUT) == b"%d-" % i
                assert await asyncio.wait_for(srv.with_data(lambda v: seen.append(bytes(v)) or 1),
                                              IO_TIMEOUT) == 1
                assert await asyncio.wait_for(srv.recv(2), IO_TIMEOUT) == b"yz"
            assert seen == [b"xyz"] * 3

    run(main)


def test_driven_by_hand_next_and_send_both_finish_with_stopiteration():
    async def main():
        async with conn_pair() as (srv, cli):
            it, fut = await park(srv.recv(100))
            cli.send_nowait(b"hello")
            await asyncio.wait_for(asyncio.shield(fut), IO_TIMEOUT)
            with pytest.raises(StopIteration) as stop:
                next(it)
            assert stop.value.value == b"hello"
            it2, fut2 = await park(srv.with_data(lambda v: len(v) if len(v) >= 3 else None))
            cli.send_nowait(b"ab")
            await asyncio.wait_for(asyncio.shield(fut2), IO_TIMEOUT)
            # Not enough yet: the same awaitable waits again, on a new future
            # (the portable backend reuses its park object once woken).
            fut3 = it2.send(None)
            assert asyncio.isfuture(fut3) and not fut3.done()
            if ringline.backend() == "uring":
                assert isinstance(fut3, asyncio.Future) and fut3 is not fut2
            cli.send_nowait(b"c")
            await asyncio.wait_for(asyncio.shield(fut3), IO_TIMEOUT)
            with pytest.raises(StopIteration) as stop:
                it2.send(None)
            assert stop.value.value == 3

    run(main)


def test_woken_receive_that_never_resumes_loses_nothing():
    """The bytes a waiting recv was woken for are consumed only when it
    resumes: a Task cancelled between wake-up and resumption (here: an
    iterator simply dropped) leaves them for the next reader."""

    async def main():
        async with conn_pair() as (srv, cli):
            it, fut = await park(srv.recv(100))
            cli.send_nowait(b"0123456789")
            await asyncio.wait_for(asyncio.shield(fut), IO_TIMEOUT)
            assert srv.buffered == 10
            del it
            # A smaller read takes a prefix, the rest stays in order.
            assert await srv.recv(4) == b"0123"
            assert srv.buffered == 6
            assert await srv.recv_exactly(6) == b"456789"

            if ringline.backend() != "uring":
                return      # the portable backend resumes the Task inside data_received
            # Same through a real Task cancelled after its wake-up was
            # scheduled but before it ran: a callback that re-queues itself
            # every iteration runs ahead of the wake-up queued by the CQE.
            loop = asyncio.get_running_loop()
            t = asyncio.ensure_future(srv.recv())
            await asyncio.sleep(0)
            waiter = t._fut_waiter
            cancelled_early = []

            def poll():
                if waiter.done():
                    cancelled_early.append(t.cancel())
                else:
                    loop.call_soon(poll)

            loop.call_soon(poll)
            cli.send_nowait(b"payload")
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(t, IO_TIMEOUT)
            assert cancelled_early == [True]
            assert srv.buffered == 7
            assert await srv.recv() == b"payload"

    run(main)


def test_bytes_after_the_direct_copy_join_it_in_order():
    async def main():
        async with conn_pair() as (srv, cli):
            it, fut = await park(srv.recv(100))
            cli.send_nowait(b"abc")
            await asyncio.wait_for(asyncio.shield(fut), IO_TIMEOUT)
            cli.send_nowait(b"def")
            await until(lambda: srv.buffered == 6)
            with pytest.raises(StopIteration) as stop:
                it.send(None)
            assert stop.value.value == b"abcdef"

            # with_data sees one view of both parts.
            it, fut = await park(srv.recv(100))
            cli.send_nowait(b"ghi")
            await asyncio.wait_for(asyncio.shield(fut), IO_TIMEOUT)
            cli.send_nowait(b"jkl")
            await until(lambda: srv.buffered == 6)
            del it
            seen = []
            assert await srv.with_data(lambda v: (seen.append(bytes(v)), 4)[1]) == 4
            assert seen == [b"ghijkl"]
            assert await srv.recv() == b"kl"

    run(main)


def test_recv_exactly_direct_copy_only_when_complete():
    async def main():
        async with conn_pair() as (srv, cli):
            t = asyncio.ensure_future(srv.recv_exactly(4))
            await asyncio.sleep(0)
            cli.send_nowait(b"123456")
            assert await asyncio.wait_for(t, IO_TIMEOUT) == b"1234"
            assert await srv.recv() == b"56"
            t = asyncio.ensure_future(srv.recv_exactly(6))
            await asyncio.sleep(0)
            cli.send_nowait(b"ab")
            await until(lambda: srv.buffered == 2)
            assert not t.done()
            cli.send_nowait(b"cdefg")
            assert await asyncio.wait_for(t, IO_TIMEOUT) == b"abcdef"
            assert await srv.recv() == b"g"

    run(main)


def test_random_reads_of_random_writes_keep_every_byte_in_order():
    rng = random.Random(7)
    stream = bytes(rng.randrange(256) for _ in range(200_000))

    async def main():
        async with conn_pair() as (srv, cli):
            async def writer():
                off = 0
                while off < len(stream):
                    n = rng.choice((1, 3, 64, 1000, 17_000))
                    cli.send_nowait(stream[off:off + n])
                    off += n
                    if rng.random() < 0.3:
                        await asyncio.sleep(0)
                cli.shutdown_write()

            async def reader():
                got = bytearray()
                while True:
                    how = rng.randrange(3)
                    if how == 0:
                        chunk = await srv.recv(rng.choice((1, 5, 100, 65536)))
                        if not chunk:
                            return bytes(got)
                        got += chunk
                    elif how == 1:
                        want = min(rng.choice((1, 7, 500)), len(stream) - len(got))
                        got += await srv.recv_exactly(want)
                    else:
                        n = await srv.with_data(lambda v: min(len(v), 333))
                        if n == 0:
                            return bytes(got)
                        got += b"?" * n     # placeholder, replaced below
                        got[-n:] = stream[len(got) - n:len(got)]

            w = asyncio.ensure_future(writer())
            got = await asyncio.wait_for(reader(), 30)
            await w
            assert got == stream

    run(main)


@uring_only("the io_uring loop's own fast paths")
def test_loop_fast_paths_keep_asyncio_semantics():
    async def main():
        loop = asyncio.get_running_loop()
        assert loop.get_debug() is False
        loop.set_debug(True)
        assert loop.get_debug() is True
        loop.set_debug(False)
        fut = loop.create_future()
        assert fut.get_loop() is loop
        # Future callbacks arrive through call_soon(cb, fut, context=ctx):
        # the context and the FIFO order with plain call_soon both hold.
        var = contextvars.ContextVar("var", default="outer")
        order = []
        ctx = contextvars.copy_context()
        ctx.run(var.set, "inner")
        fut.add_done_callback(lambda f: order.append(("fut", var.get())), context=ctx)
        loop.call_soon(order.append, ("first", var.get()))
        fut.set_result(None)
        h = loop.call_soon(order.append, ("cancelled",))
        loop.call_soon(order.append, ("last",))
        h.cancel()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert order == [("first", "outer"), ("fut", "inner"), ("last",)]

    ringline.run(main())


@uring_only("the io_uring loop's own create_future")
def test_create_future_outside_the_running_loop():
    loop = ringline.new_event_loop()
    try:
        fut = loop.create_future()
        assert fut.get_loop() is loop
        other = asyncio.new_event_loop()
        try:
            async def make():
                return loop.create_future()
            assert other.run_until_complete(make()).get_loop() is loop
        finally:
            other.close()
    finally:
        loop.close()


def test_large_messages_fill_the_waiting_recv_in_place():
    """A full first buffer opens a head sized for the whole recv; later
    buffers land in it.  Whatever path, the bytes come out whole and in
    order, and a head abandoned half-filled is still read correctly."""
    big = bytes(range(256)) * 1000          # 256 000 bytes: many full buffers

    async def main():
        async with conn_pair() as (srv, cli):
            got = bytearray()
            t = asyncio.ensure_future(srv.recv(100_000))
            await asyncio.sleep(0)
            cli.send_nowait(big)
            got += await asyncio.wait_for(t, IO_TIMEOUT)
            assert 0 < len(got) <= 100_000
            while len(got) < len(big):
                got += await asyncio.wait_for(srv.recv(100_000), IO_TIMEOUT)
            assert got == big

            # recv_exactly: room for all n up front.
            t = asyncio.ensure_future(srv.recv_exactly(len(big) - 5))
            await asyncio.sleep(0)
            cli.send_nowait(big)
            assert await asyncio.wait_for(t, IO_TIMEOUT) == big[:-5]
            assert await srv.recv_exactly(5) == big[-5:]

            # Abandoned while open: readers of other shapes still see it all.
            it, fut = await park(srv.recv(len(big)))
            cli.send_nowait(big)
            await until(lambda: srv.buffered == len(big))
            del it
            assert await srv.recv(10) == big[:10]
            seen = []
            assert await srv.with_data(lambda v: (seen.append(bytes(v[:3])), 7)[1]) == 7
            assert seen == [big[10:13]]
            assert await srv.recv_exactly(len(big) - 17) == big[17:]
            assert srv.buffered == 0

    run(main)


@pytest.mark.parametrize("zc_on_loopback", [False, True])
def test_large_pinned_sends_to_a_local_peer(zc_on_loopback, config_defaults):
    """Connections to a local peer send by copy (SEND_ZC would be copied on
    delivery anyway); the flag keeps the zero-copy path reachable from tests.
    Both ways, large bytes payloads arrive whole and in order."""
    config_defaults(_zc_to_local_peers=zc_on_loopback)
    payloads = [bytes([i]) * (40_000 + i * 1000) for i in range(20)]

    async def main():
        async with conn_pair() as (srv, cli):
            for p in payloads:
                srv.send_nowait(p)
            done = srv.send(b"end")
            want = b"".join(payloads) + b"end"
            got = await asyncio.wait_for(cli.recv_exactly(len(want)), IO_TIMEOUT)
            assert got == want
            assert await asyncio.wait_for(done, IO_TIMEOUT) == 3

    run(main)


@uring_only("the io_uring loop's bound call_soon")
def test_closed_loop_drops_its_bound_call_soon():
    """On 3.11 the loop keeps a bound call_soon in its instance dict (Futures
    look it up on every completion; 3.12+ Futures call it unbound, and the
    loop keeps no dict there: tests/aio/test_loop_attrs.py); close() removes
    it, and calls still go to the loop's method."""
    loop = ringline.new_event_loop()
    assert ("call_soon" in vars(loop)) == (sys.version_info < (3, 12))
    ran = []
    loop.call_soon(ran.append, 1)
    loop.run_until_complete(asyncio.sleep(0))
    assert ran == [1]
    loop.close()
    assert "call_soon" not in vars(loop)
    with pytest.raises(RuntimeError):
        loop.call_soon(ran.append, 2)


@uring_only("counts SQEs")
def test_writes_made_before_the_loop_enters_the_kernel_leave_as_one_sqe():
    """Sends are prepared just before the loop enters the kernel: ten
    writes in a row cost one SENDMSG, not a SEND and then a SENDMSG for the
    rest once the first completes; bytes arrive whole and in order."""

    async def main():
        loop = asyncio.get_running_loop()
        async with conn_pair() as (srv, cli):
            parts = [bytes([65 + i]) * (100 + i) for i in range(10)]
            before = loop.statistics()["sqes"]
            for p in parts:
                cli.send_nowait(p)
            total = sum(map(len, parts))
            await until(lambda: srv.buffered == total)
            assert loop.statistics()["sqes"] - before == 1
            assert await srv.recv_exactly(total) == b"".join(parts)

            # The same through an asyncio transport on this loop.
            got = bytearray()
            done = loop.create_future()

            class Sink(asyncio.Protocol):
                def data_received(self, data):
                    got.extend(data)
                    if len(got) == total and not done.done():
                        done.set_result(None)

            server = await loop.create_server(Sink, "127.0.0.1", 0)
            tr, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", server.sockets[0].getsockname()[1])
            await asyncio.sleep(0.01)
            before = loop.statistics()["sqes"]
            for p in parts:
                tr.write(p)
            await asyncio.wait_for(done, IO_TIMEOUT)
            assert loop.statistics()["sqes"] - before == 1
            assert bytes(got) == b"".join(parts)
            tr.close()
            server.close()
            await server.wait_closed()

    run(main)


@uring_only("counts io_uring_enter waits")
def test_a_send_is_submitted_before_the_loop_blocks():
    """With a send among the prepared SQEs the loop submits first and only
    blocks (handing off the GIL) when nothing completed: a ping-pong between
    two connections of this loop, whose sends finish inline on loopback,
    hardly ever waits, and every byte still arrives in order."""

    async def main():
        loop = asyncio.get_running_loop()
        async with conn_pair() as (srv, cli):
            rounds = 200

            async def echo():
                for _ in range(rounds):
                    srv.send_nowait(await srv.recv_exactly(64))

            task = asyncio.ensure_future(echo())
            await asyncio.sleep(0)
            before = loop.statistics()["waits"]
            for i in range(rounds):
                msg = bytes([i % 256]) * 64
                cli.send_nowait(msg)
                assert await asyncio.wait_for(cli.recv_exactly(64), IO_TIMEOUT) == msg
            waits = loop.statistics()["waits"] - before
            await asyncio.wait_for(task, IO_TIMEOUT)
            assert waits <= rounds // 4, waits

    run(main)


def _blocking_echo_client(port: int, rounds: int) -> None:
    """Request/response over a plain socket: each reply checked before the
    next request (one exchange in flight, as a latency-bound client)."""
    with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(rounds):
            msg = bytes([i % 256]) * 64
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = s.recv(len(msg) - len(got))
                assert chunk, "server closed"
                got += chunk
            assert got == msg


@uring_only("counts the io_uring loop's passes")
@pytest.mark.parametrize("face", ["native", "protocol"])
def test_a_reply_leaves_in_the_loop_pass_that_received_its_request(face):
    """The handler woken by a request runs right after that CQE (a native
    task's step as a Protocol's data_received does), and the sends it queued
    are submitted before the pass ends, their CQEs reaped with it: one loop
    pass per request/response (it took two before).  Bytes stay exact."""
    rounds = 300

    async def handler(conn):
        while data := await conn.recv(4096):
            conn.send_nowait(data)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def main():
        loop = asyncio.get_running_loop()
        if face == "native":
            server = await ringline.serve(handler, HOST, 0)
        else:
            server = await loop.create_server(Echo, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        client = threading.Thread(target=_blocking_echo_client, args=(port, rounds))
        before = loop.statistics()["iterations"]
        client.start()
        while client.is_alive():
            await asyncio.sleep(0.05)
        passes = loop.statistics()["iterations"] - before
        client.join()
        server.close()
        await server.wait_closed()
        # Accept, close and the 50 ms polls above take a few dozen passes.
        assert passes <= rounds * 5 // 4, passes

    run(main)


@contextlib.asynccontextmanager
async def keeping_pair():
    """A client transport to a server on this loop whose Protocol keeps every
    ``data_received`` object: yields (transport, chunks, until_total), the
    last awaiting until ``n`` bytes have arrived in all."""
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    arrived = asyncio.Event()

    class Keep(asyncio.Protocol):
        def data_received(self, data):
            chunks.append(data)
            arrived.set()

    async def until_total(n):
        while sum(map(len, chunks)) < n:
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), IO_TIMEOUT)

    server = await loop.create_server(Keep, HOST, 0)
    tr, _ = await loop.create_connection(asyncio.Protocol, HOST, server.sockets[0].getsockname()[1])
    try:
        yield tr, chunks, until_total
    finally:
        tr.close()
        server.close()
        await server.wait_closed()


def _handed_out() -> int:
    return _stream.net_state_for(asyncio.get_running_loop()).statistics()["recv_buffers_handed_out"]


@uring_only("provided-buffer hand-out")
@pytest.mark.parametrize("inc_allowed", [True, False], ids=["incremental", "plain"])
def test_receives_that_fill_a_buffer_are_handed_out_whole_and_never_written_again(config_defaults, inc_allowed):
    """A receive that filled a whole provided buffer (from its start, the
    kernel done with it) is handed to the face as that buffer's bytes object,
    no copy, and the ring gets a fresh buffer.  The kernel must never write
    into a handed-out object again: every object received is kept while
    megabytes more flow through the same ring, and all still read back as
    exactly what was sent.  Small messages are copied, never handed out."""
    config_defaults(_recv_buffers_incremental=inc_allowed)
    payload = random.Random(7).randbytes(8 << 20)
    blocks = [payload[i << 16:(i + 1) << 16] for i in range(64)]
    rest = 64 << 16

    async def native():
        # Each block lands while a receive waits (parked first), so with
        # incremental 64 KiB buffers it is one whole buffer.  (With plain
        # 16 KiB buffers a recv(65536) wants more room than one holds, so
        # it copies; the Protocol path below hands those out.)
        loop = asyncio.get_running_loop()
        inc = _stream.net_state_for(loop).statistics()["recv_incremental"]
        async with conn_pair() as (srv, cli):
            kept = []
            for b in blocks:
                r = asyncio.ensure_future(srv.recv_exactly(len(b)))
                await asyncio.sleep(0)
                cli.send_nowait(b)
                kept.append(await asyncio.wait_for(r, IO_TIMEOUT))
            if inc:
                assert _handed_out() > 0
            before = _handed_out()
            for i in range(50):
                cli.send_nowait(b"%04d" % i)
                assert await asyncio.wait_for(srv.recv_exactly(4), IO_TIMEOUT) == b"%04d" % i
            assert _handed_out() == before
            got = rest
            send = asyncio.ensure_future(cli.send(payload[rest:]))
            while got < len(payload):
                data = await asyncio.wait_for(srv.recv(65536), IO_TIMEOUT)
                kept.append(data)
                got += len(data)
            await send
            assert b"".join(kept[:64]) == payload[:rest]
            assert b"".join(kept) == payload

    async def protocol():
        async with keeping_pair() as (tr, chunks, until_total):
            total = 0
            for b in blocks:
                tr.write(b)
                total += len(b)
                await until_total(total)
            assert _handed_out() > 0
            before = _handed_out()
            for i in range(50):
                tr.write(b"%04d" % i)
                total += 4
                await until_total(total)
            assert _handed_out() == before
            tr.write(payload[rest:])
            await until_total(total + len(payload) - rest)
            assert all(type(c) is bytes for c in chunks)
            data = b"".join(chunks)
            assert data[:rest] == payload[:rest]
            assert data[rest + 200:] == payload[rest:]

    run(native)
    run(protocol)


@uring_only("the large-receive ring switch")
def test_bulk_stream_moves_to_the_plain_ring_and_back_byte_exact():
    """With incremental buffers, small messages packed in between shift large
    receives across buffer boundaries, so none could be handed out whole.
    A stream whose receives keep filling half a buffer is re-armed on a
    plain ring (one receive per buffer) and hands them out; once its
    receives turn small it goes back.  Every byte arrives in order through
    both switches, on the native face and on an asyncio transport."""
    rnd = random.Random(11)
    payload = rnd.randbytes(4 << 20)

    def stats():
        return _stream.net_state_for(asyncio.get_running_loop()).statistics()

    async def main():
        if not stats()["recv_incremental"]:
            pytest.skip("incremental provided buffers need Linux 6.12+")
        async with conn_pair() as (srv, cli):
            got = bytearray()
            for i in range(30):                 # misalign the shared ring
                cli.send_nowait(b"%03d" % i)
                got += await asyncio.wait_for(srv.recv_exactly(3), IO_TIMEOUT)
            switches0, handed0 = stats()["recv_large_switches"], stats()["recv_buffers_handed_out"]
            for i in range(64):                 # bulk, one 64 KiB piece at a time
                r = asyncio.ensure_future(srv.recv_exactly(65536))
                await asyncio.sleep(0)
                cli.send_nowait(payload[i << 16:(i + 1) << 16])
                got += await asyncio.wait_for(r, IO_TIMEOUT)
            assert stats()["recv_large_switches"] == switches0 + 1
            assert stats()["recv_buffers_handed_out"] > handed0 + 32
            for i in range(30):                 # small again: back to the shared ring
                cli.send_nowait(b"%03d" % i)
                got += await asyncio.wait_for(srv.recv_exactly(3), IO_TIMEOUT)
            assert stats()["recv_large_switches"] == switches0 + 2
            assert bytes(got) == b"".join(b"%03d" % i for i in range(30)) + payload + b"".join(
                b"%03d" % i for i in range(30))

        # The same on an asyncio transport, with a stream of mixed sizes.
        async with keeping_pair() as (tr, chunks, until_total):
            sent = bytearray()
            before = stats()["recv_large_switches"]
            for i in range(200):
                piece = payload[(i * 20011) % (3 << 20):][: rnd.choice((7, 300, 65536, 65536, 40000))]
                tr.write(piece)
                sent += piece
                await until_total(len(sent))
            assert b"".join(chunks) == bytes(sent)
            assert stats()["recv_large_switches"] > before

    run(main)


def test_many_bulk_streams_share_the_bulk_ring_byte_exact():
    """32 connections stream 1 MiB each both ways at once: more bulk
    receivers than the large-receive ring has buffers (it runs dry and re-arms), and
    every stream still echoes byte-exact."""
    n, size = 32, 1 << 20

    async def echo(conn):
        while data := await conn.recv(65536):
            conn.send_nowait(data)

    async def main():
        server = await ringline.serve(echo, HOST, 0)
        try:
            async def one(i):
                c = await ringline.connect(HOST, server.port)
                data = random.Random(i).randbytes(size)
                send = asyncio.ensure_future(c.send(data))
                back = await asyncio.wait_for(c.recv_exactly(size), 30)
                await send
                c.close()
                await c.wait_closed()
                return back == data

            assert all(await asyncio.gather(*(one(i) for i in range(n))))
            if ringline.backend() != "uring":
                return {"recv_incremental": False}      # no ring to count
            return _stream.net_state_for(asyncio.get_running_loop()).statistics()
        finally:
            await server.shutdown(2.0)

    st = run(main)
    if st["recv_incremental"]:
        assert st["recv_large_switches"] > 0, st
