"""Cancellation sweep of the native API (tests/support/cancel_sweep.py):
every awaitable cancelled after 0, 1, 2, ... loop iterations leaves no
descriptor, fixed-table slot, in-flight op, send-pool slot or receive
buffer behind, and a cancelled receive or send loses no byte.

Run with ``-s`` to see one ``SWEEP`` line per sweep (iterations swept,
cancels, finish point).
"""

from __future__ import annotations

import asyncio
import socket

import pytest

import ringline
from ringline._net import stream as _stream
from tests.support import run
from tests.support.cancel_sweep import diff, resources, settle, sweep
from tests.support.net import HOST, IO_TIMEOUT, pattern

TASKS = ["asyncio", "ringline"]


def _listener(rcvbuf: int | None = None) -> socket.socket:
    ls = socket.socket()
    if rcvbuf is not None:
        # Inherited by accepted sockets: a peer that takes little at a time.
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    ls.bind((HOST, 0))
    ls.listen(4096)
    ls.setblocking(False)
    return ls


def _accept_and_close(ls: socket.socket) -> None:
    """Close every connection waiting in the listener's backlog."""
    try:
        while True:
            ls.accept()[0].close()
    except BlockingIOError:
        pass


def _resolve_inline(loop: asyncio.AbstractEventLoop) -> None:
    """getaddrinfo without the executor thread, so that the sweep's k counts
    the connect's own steps (thread timing would blur them)."""
    async def getaddrinfo(*args, **kw):
        return socket.getaddrinfo(*args, **kw)
    loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign]


async def _peer_read(s: socket.socket, n: int) -> bytes:
    """``n`` bytes from non-blocking ``s`` while the loop keeps running."""
    buf = bytearray()
    deadline = asyncio.get_running_loop().time() + IO_TIMEOUT
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except BlockingIOError:
            assert asyncio.get_running_loop().time() < deadline, f"{len(buf)} of {n} bytes"
            await asyncio.sleep(0.001)
            continue
        assert chunk, f"EOF after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)


async def _connected(ls: socket.socket) -> tuple[ringline.Connection, socket.socket]:
    """A ringline connection and its plain (non-blocking) peer socket."""
    conn = await ringline.connect(HOST, ls.getsockname()[1])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + IO_TIMEOUT
    while True:
        try:
            peer = ls.accept()[0]
            break
        except BlockingIOError:
            assert loop.time() < deadline, "the connection never reached the listener"
            await asyncio.sleep(0.001)
    peer.setblocking(False)
    return conn, peer


async def _close(conn: ringline.Connection) -> None:
    conn.close()
    await asyncio.wait_for(conn.wait_closed(), IO_TIMEOUT)


# ---------------------------------------------------------------------------
# connect
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("timeout", [None, 5.0], ids=["no-timeout", "timeout"])
@pytest.mark.parametrize("fixed", [True, False], ids=["fixed", "plain-fd"])
def test_connect_sweep(config_defaults, fixed, timeout, task):
    config_defaults(_fixed_files=fixed)

    async def main():
        loop = asyncio.get_running_loop()
        _resolve_inline(loop)
        ls = _listener()
        port = ls.getsockname()[1]
        assert _stream.net_state_for(loop).use_fixed_files() == fixed

        async def after(outcome, conn):
            if conn is not None:
                assert outcome != "cancelled"
                await _close(conn)

        try:
            r = await sweep(f"connect fixed={fixed} timeout={timeout} task={task}",
                            lambda: ringline.connect(HOST, port, timeout=timeout),
                            after=after, poll=lambda: _accept_and_close(ls), task=task)
        finally:
            ls.close()
        assert r.cancelled >= 2 and r.done_at >= 2
        return r

    run(main)


@pytest.mark.parametrize("resolver", ["inline", "executor"])
def test_connect_cancelled_2000_times_leaks_no_slot(resolver):
    """The reported leak: a connect cancelled after its socket was made but
    before the awaiting task resumed lost the socket's fixed slot.  2,000
    connects cancelled, then the slot, fd and op counts are back where they
    started.  With the inline resolver the cancel comes after k = i mod 7
    loop iterations, which walks every step of the connect; with asyncio's
    resolver (a thread) after (i mod 25) x 10 us, so where it lands
    varies, as in the report."""
    async def main():
        loop = asyncio.get_running_loop()
        if resolver == "inline":
            _resolve_inline(loop)
        ls = _listener()
        port = ls.getsockname()[1]
        ns = _stream.net_state_for(loop)
        assert ns.use_fixed_files(), ns.fixed_reason
        base = await settle(loop, resources(loop), 0.0)
        outcomes = {"cancelled": 0, "done": 0}
        # The executor's resolution takes a thread hop whose time depends on
        # the machine's load: the wait adapts so that about half the connects
        # complete, whatever that is (the assertion below wants both
        # outcomes often).
        delay = 10e-6
        try:
            for i in range(2000):
                t = loop.create_task(ringline.connect(HOST, port))
                if resolver == "inline":
                    for _ in range(i % 7):
                        await asyncio.sleep(0)
                else:
                    await asyncio.sleep((i % 25) * delay)
                if not t.done():
                    t.cancel()
                try:
                    conn = await t
                except asyncio.CancelledError:
                    outcomes["cancelled"] += 1
                    delay = min(delay * 1.1, 1e-3)
                else:
                    outcomes["done"] += 1
                    delay = max(delay / 1.1, 1e-6)
                    conn.abort()
                if i % 64 == 63:
                    _accept_and_close(ls)
                    assert ns.fixed_live <= 64, f"after {i + 1} connects: {ns.fixed_live} slots"
            now = await settle(loop, base, poll=lambda: _accept_and_close(ls))
        finally:
            ls.close()
        assert now == base, f"{outcomes}: left behind (before, after) {diff(base, now)}"
        assert min(outcomes.values()) > 200, outcomes
        print(f"SWEEP connect x2000 resolver={resolver}: {outcomes}")

    run(main)


# ---------------------------------------------------------------------------
# receiving
# ---------------------------------------------------------------------------


def _parse10(view: memoryview) -> int:
    return 10 if len(view) >= 10 else 0


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("send_at", [0, 2])
@pytest.mark.parametrize("kind", ["recv", "recv_exactly", "with_data"])
def test_receive_sweep(kind, send_at, task):
    """The peer sends 10 bytes in two halves (iterations ``send_at`` and
    ``send_at + 2``); a receive cancelled at any point leaves every byte
    that arrived buffered for the next receive."""
    async def main():
        ls = _listener()
        conn, peer = await _connected(ls)
        payload = pattern(10)
        sent = [0]

        def tick(i):
            if i == send_at:
                peer.send(payload[:5])
                sent[0] = 5
            elif i == send_at + 2:
                peer.send(payload[5:])
                sent[0] = 10

        async def op():
            if kind == "recv":
                return await conn.recv(10)
            if kind == "recv_exactly":
                return await conn.recv_exactly(10)
            return await conn.with_data(_parse10)

        def make():
            sent[0] = 0
            return op()

        async def after(outcome, result):
            got = b""
            if outcome != "cancelled":
                got = payload[:10] if kind == "with_data" else result
                assert (result == 10) if kind == "with_data" else payload.startswith(result)
            # Whatever was sent and not returned is still buffered: no loss.
            rest = payload[len(got):sent[0]]
            if rest:
                assert await asyncio.wait_for(conn.recv_exactly(len(rest)), IO_TIMEOUT) == rest
            assert conn.buffered == 0

        try:
            r = await sweep(f"{kind} send_at={send_at} task={task}", make, after=after,
                            tick=tick, task=task)
        finally:
            await _close(conn)
            peer.close()
            ls.close()
        assert r.cancelled >= send_at + 1
        return r

    run(main)


# ---------------------------------------------------------------------------
# sending
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("peer_reads_at", [None, 4], ids=["fast-peer", "slow-peer"])
@pytest.mark.parametrize("what", ["send-bytes", "send-bytearray", "send_parts"])
def test_send_sweep(what, peer_reads_at, task):
    """An awaited send cancelled at any point still delivers its bytes, in
    order, and gives back its send-pool slots.  With a slow peer (a 64 KiB
    receive buffer, read from iteration 4 on) the send stays in flight for
    many iterations."""
    async def main():
        ls = _listener(rcvbuf=None if peer_reads_at is None else 65536)
        conn, peer = await _connected(ls)
        # Slow peer: more than the socket buffers hold, so the send waits.
        payload = pattern(70_000 if peer_reads_at is None else 8 << 20)
        started = [False]
        got = bytearray()

        def tick(i):
            if peer_reads_at is not None and i >= peer_reads_at:
                try:
                    while chunk := peer.recv(1 << 16):
                        got.extend(chunk)
                except BlockingIOError:
                    pass

        async def op():
            started[0] = True
            if what == "send-bytes":
                return await conn.send(payload)
            if what == "send-bytearray":
                return await conn.send(bytearray(payload))
            return await conn.send_parts([payload[:1000], bytearray(payload[1000:40000]),
                                          memoryview(payload)[40000:]])

        def make():
            started[0] = False
            got.clear()
            return op()

        async def after(outcome, result):
            if outcome != "cancelled":
                assert result == len(payload)
            if started[0]:
                got.extend(await _peer_read(peer, len(payload) - len(got)))
                assert bytes(got) == payload

        try:
            r = await sweep(f"{what} peer_reads_at={peer_reads_at} task={task}", make,
                            after=after, tick=tick, task=task)
        finally:
            await _close(conn)
            peer.close()
            ls.close()
        return r

    run(main)


@pytest.mark.parametrize("task", TASKS)
def test_drain_sweep(task):
    """``drain()`` cancelled while the queue is over the limit: the queued
    bytes still go out (the peer reads from iteration 3 on), and the shared
    drain future is not cancelled for the connection."""
    async def main():
        ls = _listener(rcvbuf=65536)
        conn, peer = await _connected(ls)
        payload = pattern(8 << 20)     # more than the socket buffers hold
        got = bytearray()
        started = [False]

        def tick(i):
            if i >= 3:
                try:
                    while chunk := peer.recv(1 << 16):
                        got.extend(chunk)
                except BlockingIOError:
                    pass

        async def op():
            started[0] = True
            conn.send_nowait(payload)
            await conn.drain()

        def make():
            started[0] = False
            got.clear()
            return op()

        async def after(outcome, result):
            if started[0]:
                got.extend(await _peer_read(peer, len(payload) - len(got)))
                assert bytes(got) == payload

        try:
            r = await sweep(f"drain task={task}", make, after=after, tick=tick, task=task)
        finally:
            await _close(conn)
            peer.close()
            ls.close()
        assert r.cancelled >= 3
        return r

    run(main, config=ringline.Config(send_queue_limit=64 * 1024))


# ---------------------------------------------------------------------------
# closing, serving
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_close_and_wait_closed_sweep(task):
    """connect, queue 256 KiB, close() and await wait_closed(): a cancel at
    any point leaves the connection to close on its own, fully."""
    async def main():
        loop = asyncio.get_running_loop()
        _resolve_inline(loop)
        ls = _listener()
        port = ls.getsockname()[1]

        async def op():
            conn = await ringline.connect(HOST, port)
            conn.send_nowait(bytearray(256 * 1024))
            conn.shutdown_write()
            conn.close()
            await conn.wait_closed()

        try:
            r = await sweep(f"close/wait_closed task={task}", op,
                            poll=lambda: _accept_and_close(ls), task=task)
        finally:
            ls.close()
        return r

    run(main)


def test_server_shutdown_sweep():
    """serve(), two clients whose handlers are parked on a receive, then
    ``server.shutdown()``: cancelled anywhere, the server and its
    connections still go away completely."""
    async def main():
        clients: list[socket.socket] = []

        async def handler(conn):
            await conn.recv()

        async def op():
            async with await ringline.serve(handler, HOST, 0) as server:
                for _ in range(2):
                    c = socket.socket()
                    c.setblocking(False)
                    c.connect_ex((HOST, server.port))
                    clients.append(c)
                while len(server._conns) < 2:
                    await asyncio.sleep(0)
                await server.shutdown(1.0)

        def close_clients():
            for c in clients:
                c.close()
            clients.clear()

        def after(outcome, result):
            close_clients()

        r = await sweep("serve+shutdown", op, after=after)
        return r

    run(main)


def test_serve_forever_cancelled_closes_the_server():
    """Cancelling ``serve_forever()`` closes the server, as asyncio's does:
    the listening socket and its accept leave with it."""
    async def main():
        async def handler(conn):
            await conn.recv()

        async def op():
            server = await ringline.serve(handler, HOST, 0)
            await server.serve_forever()

        return await sweep("serve_forever", op, never_done=True, max_rounds=8)

    run(main)
