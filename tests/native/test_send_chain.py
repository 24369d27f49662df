"""Connection.send_chain: linked sends (one SQE per part, IO_LINKed), one
entry of the connection's send order, the total or the first error, parts
held (not copied) until the kernel is done with them, zero-copy parts until
their notification CQE.

Peers are real: a second ringline Connection on the same loop
(``conn_pair``), or a plain socket where the test needs control of the
peer's receive buffer or a reset.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

import ringline
from ringline import Config
from ringline.errors import ConnectionClosed
from tests.support import HOST, IO_TIMEOUT, conn_pair, pattern, rst_close, run, until
from tests.support.backends import uring_only
from tests.support.cancel_sweep import sweep

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("native_backend")]


def _parts(n: int, seed: int = 0) -> list:
    """``n`` parts of varied sizes (0 .. ~70 KiB) and kinds."""
    out: list = []
    for i in range(n):
        size = (i * 7919 + seed * 31) % (9000 if i % 10 else 70000)
        body = pattern(size, (i + seed) % 251)
        kind = i % 4
        if kind == 1:
            out.append(bytearray(body))
        elif kind == 2:
            out.append(memoryview(bytearray(b"<" + body + b">"))[1:-1])
        else:
            out.append(body)
    return out


def _joined(parts: list) -> bytes:
    return b"".join(bytes(p) for p in parts)


async def _listening_peer(rcvbuf: int | None = None):
    """(conn, peer): ``ringline.connect`` to a plain listening socket and the
    peer's accepted end (non-blocking; ``rcvbuf`` sets its receive buffer)."""
    ls = socket.socket()
    if rcvbuf is not None:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    ls.bind((HOST, 0))
    ls.listen(1)
    ls.setblocking(False)
    loop = asyncio.get_running_loop()
    conn = await ringline.connect(HOST, ls.getsockname()[1])
    peer, _ = await loop.sock_accept(ls)
    ls.close()
    return conn, peer


async def _read(peer: socket.socket, n: int) -> bytes:
    """``n`` bytes from the non-blocking ``peer`` while the loop runs."""
    loop = asyncio.get_running_loop()
    buf = bytearray()
    async with asyncio.timeout(IO_TIMEOUT):
        while len(buf) < n:
            chunk = await loop.sock_recv(peer, min(n - len(buf), 1 << 20))
            if not chunk:
                raise EOFError(f"EOF after {len(buf)} of {n} bytes")
            buf += chunk
    return bytes(buf)


# ---------------------------------------------------------------------------
# bytes on the wire
# ---------------------------------------------------------------------------


def test_chain_is_one_entry_of_the_send_order():
    """Sends queued before a chain go first, sends queued after it wait for
    it; nothing is awaited in between, so all of them are queued at once."""
    async def main():
        async with conn_pair() as (srv, cli):
            a, b = pattern(5000, 1), bytearray(pattern(20000, 2))
            parts = _parts(40)
            later = [pattern(3, 9), pattern(70000, 10)]
            srv.send_nowait(a)
            f1 = srv.send(b)
            fc = srv.send_chain(parts)
            fp = srv.send_parts(later)
            fc2 = srv.send_chain([b"tail-", bytearray(b"end")])
            srv.send_nowait(b"!")
            want = a + bytes(b) + _joined(parts) + b"".join(later) + b"tail-end!"
            got = await asyncio.wait_for(cli.recv_exactly(len(want)), IO_TIMEOUT)
            assert got == want
            assert await f1 == len(b)
            assert await fc == len(_joined(parts))
            assert await fp == sum(map(len, later))
            assert await fc2 == 8
            assert srv.queued == 0

    run(main)


@pytest.mark.parametrize("config", [None, Config(sq_entries=8)], ids=["default", "sq8"])
def test_thousand_part_chain_is_byte_exact(config):
    """1,000 parts go out in segments (at most 64 SQEs, or the SQ's size:
    8 here), each linked inside, in order across segments."""
    async def main():
        async with conn_pair() as (srv, cli):
            parts = _parts(1000, 3)
            want = _joined(parts)
            fut = srv.send_chain(parts)
            got = await asyncio.wait_for(cli.recv_exactly(len(want)), IO_TIMEOUT)
            assert got == want
            assert await fut == len(want)
            # Tiny parts too (many SQEs, few bytes).
            small = [bytes([i % 256]) for i in range(1000)]
            fut = srv.send_chain(small)
            assert await asyncio.wait_for(cli.recv_exactly(1000), IO_TIMEOUT) == b"".join(small)
            assert await fut == 1000

    run(main, config=config)


def test_empty_chain_resolves_zero_and_sends_nothing():
    async def main():
        async with conn_pair() as (srv, cli):
            assert await srv.send_chain([]) == 0
            assert await srv.send_chain([b"", bytearray(), memoryview(b"")]) == 0
            assert await srv.send_chain(iter([b"", b"x", b""])) == 1
            srv.send_nowait(b"y")
            assert await asyncio.wait_for(cli.recv_exactly(2), IO_TIMEOUT) == b"xy"
            assert srv.queued == 0

    run(main)


@pytest.mark.parametrize("how", ["close", "abort", "shutdown_write", "peer_closed"])
def test_send_chain_after_close_raises_connection_closed(how):
    async def main():
        async with conn_pair() as (srv, cli):
            if how == "close":
                srv.close()
                await srv.wait_closed()
            elif how == "abort":
                srv.abort()
                await srv.wait_closed()
            elif how == "peer_closed":
                cli.close()
                await cli.wait_closed()
                assert await asyncio.wait_for(srv.recv(), IO_TIMEOUT) == b""
                srv.close()
                await srv.wait_closed()
            else:
                srv.shutdown_write()
            with pytest.raises(ConnectionClosed):
                srv.send_chain([b"late", b"r"])
            with pytest.raises(ConnectionClosed):
                srv.send_chain([])

    run(main)


def test_wrong_part_types_raise_at_the_call_with_nothing_queued():
    async def main():
        async with conn_pair() as (srv, cli):
            for bad in (["text"], [b"ok", 5], [b"ok", None]):
                with pytest.raises(TypeError):
                    srv.send_chain(bad)
            with pytest.raises(TypeError):
                srv.send_chain(None)
            assert srv.queued == 0
            assert await srv.send_chain([b"fine"]) == 4
            assert await asyncio.wait_for(cli.recv_exactly(4), IO_TIMEOUT) == b"fine"

    run(main)


@uring_only("the portable backend copies parts (a non-contiguous view is copied too)")
def test_non_contiguous_part_is_a_buffer_error_and_exports_are_released():
    async def main():
        async with conn_pair() as (srv, cli):
            held = bytearray(b"abcdef")
            strided = memoryview(bytearray(b"0123456789"))[::2]
            with pytest.raises(BufferError):
                srv.send_chain([held, strided])
            held.extend(b"g")       # the first part's export was given back
            assert srv.queued == 0

    run(main)


# ---------------------------------------------------------------------------
# errors mid-chain
# ---------------------------------------------------------------------------


def test_peer_reset_mid_chain_fails_the_chain_and_what_follows():
    """The peer reads a little, then resets: the chain's future fails with
    the send error, a send queued behind it fails too, the connection is
    closing and refuses new sends with ConnectionClosed."""
    async def main():
        conn, peer = await _listening_peer(rcvbuf=4096)
        try:
            parts = [pattern(65536, i) for i in range(64)]     # 4 MiB
            fut = conn.send_chain(parts)
            after = conn.send(b"after")
            first = await _read(peer, 1000)
            assert first == parts[0][:1000]
            rst_close(peer)
            with pytest.raises(OSError) as info:
                await asyncio.wait_for(fut, IO_TIMEOUT)
            assert not isinstance(info.value, ConnectionClosed)
            assert isinstance(info.value, (ConnectionResetError, BrokenPipeError)), info.value
            with pytest.raises(OSError):
                await asyncio.wait_for(after, IO_TIMEOUT)
            with pytest.raises(ConnectionClosed):
                conn.send_chain([b"x"])
            with pytest.raises(ConnectionClosed):
                conn.send_nowait(b"x")
            assert conn.closing
        finally:
            conn.abort()
            await asyncio.wait_for(conn.wait_closed(), IO_TIMEOUT)
        assert conn.closed

    run(main)


def test_abort_with_a_chain_blocked_in_the_kernel():
    """The peer reads nothing, so the chain's parts wait in the kernel;
    abort() cancels them: the future fails with ConnectionAbortedError, a
    chain queued behind it too, and every part is released (a bytearray
    can be resized again, its reference count is back)."""
    async def main():
        conn, peer = await _listening_peer(rcvbuf=4096)
        try:
            big = bytearray(pattern(1 << 20, 4))
            queued_part = bytearray(b"q" * 100)
            base = (sys.getrefcount(big), sys.getrefcount(queued_part))
            fut = conn.send_chain([b"head", big, b"tail"] * 8)
            fut2 = conn.send_chain([queued_part])
            await asyncio.sleep(0.05)
            assert not fut.done()
            conn.abort()
            with pytest.raises(ConnectionAbortedError):
                await asyncio.wait_for(fut, IO_TIMEOUT)
            with pytest.raises(ConnectionAbortedError):
                await asyncio.wait_for(fut2, IO_TIMEOUT)
            await asyncio.wait_for(conn.wait_closed(), IO_TIMEOUT)
            del fut, fut2
            big.extend(b"!")
            queued_part.extend(b"!")
            assert (sys.getrefcount(big), sys.getrefcount(queued_part)) == base
        finally:
            peer.close()
            conn.abort()

    run(main)


# ---------------------------------------------------------------------------
# io_uring: short sends, zero-copy hold, cancellation
# ---------------------------------------------------------------------------


@uring_only("the short-send resume path of the ring's linked chain")
def test_short_parts_resume_in_order():
    """With every SQE capped (the chain module's test knob), each part ends
    short and is resumed where it stopped, before anything after it."""
    from ringline._net import chain

    async def main():
        async with conn_pair() as (srv, cli):
            old = chain._set_split(1500)
            try:
                parts = _parts(60, 7)
                srv.send_nowait(b"<")
                fut = srv.send_chain(parts)
                srv.send_nowait(b">")
                want = b"<" + _joined(parts) + b">"
                got = await asyncio.wait_for(cli.recv_exactly(len(want)), IO_TIMEOUT)
                assert got == want
                assert await fut == len(want) - 2
            finally:
                chain._set_split(old)

    run(main)


@uring_only("SEND_ZC and its notification CQE")
def test_zero_copy_part_is_held_until_its_notification():
    """A part of at least send_zc_threshold bytes goes out with SEND_ZC.
    The peer's receive window is closed, so its op CQE comes (the bytes are
    in the socket's send queue: ``queued`` falls to 0) while the kernel
    still reads the caller's pages: the bytearray stays exported
    (BufferError on resize) and the future pending until the notification,
    which comes once the peer reads.  Afterwards nothing holds it."""
    async def main():
        conn, peer = await _listening_peer(rcvbuf=4096)
        try:
            buf = bytearray(pattern(8192, 5))
            base = sys.getrefcount(buf)
            fut = conn.send_chain([b"hdr", buf])
            await until(lambda: conn.queued == 0, IO_TIMEOUT, "the chain's op CQEs")
            await asyncio.sleep(0.05)
            assert not fut.done(), "resolved before the zero-copy notification"
            with pytest.raises(BufferError):
                buf.extend(b"x")
            got = await _read(peer, 3 + 8192)
            assert got == b"hdr" + bytes(buf)
            assert await asyncio.wait_for(fut, IO_TIMEOUT) == 3 + 8192
            buf.extend(b"x")
            del fut
            assert sys.getrefcount(buf) == base
        finally:
            peer.close()
            conn.abort()
            await conn.wait_closed()

    run(main, config=Config(_zc_to_local_peers=True))


@uring_only("the cancellation sweep counts the ring's slots and buffers")
@pytest.mark.parametrize("zc", [False, True], ids=["copy", "zerocopy"])
def test_cancelled_chain_leaks_nothing_and_still_arrives(zc):
    """An awaited chain cancelled after 0, 1, 2, ... loop iterations is not
    withdrawn (its bytes still arrive, whole and in order) and leaves no
    slot, buffer, descriptor or export behind."""
    async def main():
        conn, peer = await _listening_peer()
        peer.setblocking(False)
        held = bytearray(pattern(20000, 6))
        base_ref = sys.getrefcount(held)
        parts = [b"a" * 10, held, pattern(5000, 8), b"z"]
        want = _joined(parts)

        called = [0]

        async def op():
            fut = conn.send_chain(parts)
            called[0] += 1
            return await fut

        async def after(outcome, result):
            if called[0]:       # (a task cancelled before its first step never called it)
                called[0] -= 1
                assert await _read(peer, len(want)) == want
            if outcome != "cancelled":
                assert result == len(want)

        try:
            res = await sweep("send_chain", op, after=after)
            assert res.cancelled > 0
            held.extend(b"!")
            assert sys.getrefcount(held) == base_ref + 1   # ``parts`` holds it
        finally:
            peer.close()
            conn.abort()
            await conn.wait_closed()

    run(main, config=Config(_zc_to_local_peers=zc))


def test_chain_on_a_closing_connection_drains_before_fin():
    """close() right after send_chain: the chain is sent whole, then FIN."""
    async def main():
        loop = asyncio.get_running_loop()
        conn, peer = await _listening_peer()
        parts = _parts(200, 11)
        want = _joined(parts)
        fut = conn.send_chain(parts)
        conn.close()
        got = await _read(peer, len(want))
        assert got == want
        assert await asyncio.wait_for(loop.sock_recv(peer, 10), IO_TIMEOUT) == b""
        assert await fut == len(want)
        await asyncio.wait_for(conn.wait_closed(), IO_TIMEOUT)
        peer.close()

    run(main)


def test_many_connections_chains_with_some_aborted_mid_chain():
    """16 connections each send chains to an echo server and check the
    echo byte for byte while 8 more are aborted with chains in flight: the
    healthy ones lose or reorder nothing, the aborted ones fail their
    chains with ConnectionAbortedError."""
    async def echo(conn) -> None:
        try:
            while data := await conn.recv(1 << 20):
                conn.send_nowait(data)
                await conn.drain()
        except ConnectionError:
            pass        # an aborted client's reset

    async def main():
        server = await ringline.serve(echo, HOST, 0)
        try:
            async def healthy(i: int) -> None:
                conn = await ringline.connect(HOST, server.port)
                try:
                    for r in range(3):
                        parts = _parts(100, i * 10 + r)
                        want = _joined(parts)
                        fut = conn.send_chain(parts)
                        got = await asyncio.wait_for(conn.recv_exactly(len(want)), IO_TIMEOUT)
                        assert got == want, f"connection {i} round {r}"
                        assert await fut == len(want)
                finally:
                    conn.close()
                    await conn.wait_closed()

            async def aborted(i: int) -> None:
                conn = await ringline.connect(HOST, server.port)
                futs = [conn.send_chain(_parts(200, 100 + i)) for _ in range(3)]
                await asyncio.sleep(0.001 * (i % 4))
                conn.abort()
                outcomes = await asyncio.gather(*futs, return_exceptions=True)
                assert any(isinstance(o, ConnectionAbortedError) for o in outcomes) or \
                    all(isinstance(o, int) for o in outcomes), outcomes
                await conn.wait_closed()

            await asyncio.wait_for(asyncio.gather(*[healthy(i) for i in range(16)],
                                                  *[aborted(i) for i in range(8)]), 60)
        finally:
            await server.shutdown(2.0)

    run(main)


@uring_only("counts the ring backend's chain objects")
@pytest.mark.parametrize("how", ["complete", "abort"])
def test_chains_and_their_connections_freed_without_gc(how):
    """With the cycle collector off, finished chains, their SQE ops and the
    connections they ran on are freed by reference counting alone."""
    import gc

    from ringline._net.chain import ChainSend
    from ringline.native.connection import Connection

    def live(kind: type) -> int:
        return sum(1 for o in gc.get_objects() if type(o) is kind)

    async def main():
        async def sink(conn):
            try:
                while await conn.recv(1 << 20):
                    pass
            except ConnectionError:
                pass

        server = await ringline.serve(sink, HOST, 0)
        try:
            base_chains, base_conns = live(ChainSend), live(Connection)
            for _ in range(20):
                conn = await ringline.connect(HOST, server.port)
                futs = [conn.send_chain(_parts(50, k)) for k in range(3)]
                assert live(ChainSend) == base_chains + 3     # (the count sees them)
                if how == "abort":
                    conn.abort()
                    await asyncio.gather(*futs, return_exceptions=True)
                else:
                    await asyncio.gather(*futs)
                    conn.close()
                await asyncio.wait_for(conn.wait_closed(), IO_TIMEOUT)
                del conn, futs
            await until(lambda: not server._conns, IO_TIMEOUT, "server side closed")
            await asyncio.sleep(0.05)
            assert live(ChainSend) == base_chains
            assert live(Connection) == base_conns
        finally:
            await server.shutdown(2.0)

    gc.collect()
    gc.disable()
    try:
        run(main)
    finally:
        gc.enable()
