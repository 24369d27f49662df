"""Cancellation sweep of the asyncio face on a ringline loop
(tests/support/cancel_sweep.py): ``sock_*``, ``create_connection``,
``create_server``/``serve_forever`` and streams, each cancelled after 0, 1,
2, ... loop iterations, leave no descriptor, poll, stream or buffer behind.

Run with ``-s`` to see one ``SWEEP`` line per sweep.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

import ringline
from tests.support import run
from tests.support.cancel_sweep import sweep
from tests.support.net import HOST, IO_TIMEOUT, pattern

BIG = 8 << 20        # more than a loopback connection's socket buffers hold


def _listener(rcvbuf: int | None = None) -> socket.socket:
    ls = socket.socket()
    if rcvbuf is not None:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    ls.bind((HOST, 0))
    ls.listen(4096)
    ls.setblocking(False)
    return ls


def _accept_and_close(ls: socket.socket) -> None:
    try:
        while True:
            ls.accept()[0].close()
    except BlockingIOError:
        pass


def _read_some(s: socket.socket, into: bytearray) -> None:
    try:
        while chunk := s.recv(1 << 16):
            into.extend(chunk)
    except BlockingIOError:
        pass


async def _read_quiet(s: socket.socket, into: bytearray, quiet: float = 0.05) -> None:
    """Read until nothing has come for ``quiet`` seconds."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    while loop.time() - last < quiet:
        n = len(into)
        _read_some(s, into)
        if len(into) != n:
            last = loop.time()
        await asyncio.sleep(0.002)


async def _pair(ls: socket.socket) -> tuple[socket.socket, socket.socket]:
    """(ours, peer): two non-blocking connected TCP sockets."""
    ours = socket.socket()
    ours.setblocking(False)
    await asyncio.get_running_loop().sock_connect(ours, ls.getsockname())
    while True:
        try:
            peer = ls.accept()[0]
            break
        except BlockingIOError:
            await asyncio.sleep(0.001)
    peer.setblocking(False)
    return ours, peer


class _Proto(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


def test_recv_buffers_out_counts_a_buffer_held_by_a_dispatch(config_defaults):
    """The sweep's receive-buffer check can fail: inside ``data_received``
    (run within the CQE's dispatch, before the buffer goes back) the
    kernel's ring is one buffer short, and whole again afterwards."""
    config_defaults(_recv_buffers_incremental=False)   # one buffer per receive

    async def main():
        loop = asyncio.get_running_loop()
        seen = []

        class P(_Proto):
            def data_received(self, data: bytes) -> None:
                seen.append(loop._net_state.recv_buffers_out())

        ls = _listener()
        tr, _ = await loop.create_connection(P, *ls.getsockname())
        peer = ls.accept()[0]
        peer.sendall(b"hello")
        while not seen:
            await asyncio.sleep(0.001)
        after = loop._net_state.recv_buffers_out()
        tr.close()
        peer.close()
        ls.close()
        return seen[0], after

    during, after = run(main)
    if during == -1:
        pytest.skip("the kernel cannot say (IORING_REGISTER_PBUF_STATUS needs Linux 6.8)")
    assert (during, after) == (1, 0)


# ---------------------------------------------------------------------------
# loop.sock_*
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["sock_recv", "sock_recv_into"])
def test_sock_recv_sweep(what):
    async def main():
        loop = asyncio.get_running_loop()
        ls = _listener()
        ours, peer = await _pair(ls)

        def tick(i):
            if i == 2:
                peer.send(b"0123456789")

        async def op():
            if what == "sock_recv":
                return await loop.sock_recv(ours, 100)
            buf = bytearray(100)
            return bytes(buf[:await loop.sock_recv_into(ours, buf)])

        async def after(outcome, data):
            rest = bytearray()
            _read_some(ours, rest)          # what the cancelled receive left
            if data is not None:
                assert data + rest == b"0123456789"[:len(data) + len(rest)]

        try:
            return await sweep(what, op, after=after, tick=tick)
        finally:
            ours.close()
            peer.close()
            ls.close()

    run(main)


def test_sock_sendall_sweep():
    """8 MiB to a peer that reads from iteration 4 on: a cancelled sendall
    stops writing, and its writer poll is withdrawn."""
    async def main():
        loop = asyncio.get_running_loop()
        ls = _listener(rcvbuf=65536)
        ours, peer = await _pair(ls)
        payload = pattern(BIG)
        got = bytearray()

        def tick(i):
            if i >= 4:
                _read_some(peer, got)

        async def after(outcome, result):
            await _read_quiet(peer, got)
            if outcome != "cancelled":
                assert bytes(got) == payload
            got.clear()

        try:
            return await sweep("sock_sendall", lambda: loop.sock_sendall(ours, payload),
                               after=after, tick=tick)
        finally:
            ours.close()
            peer.close()
            ls.close()

    run(main)


def test_sock_connect_sweep():
    async def main():
        loop = asyncio.get_running_loop()
        ls = _listener()
        socks = []

        def make():
            s = socket.socket()
            s.setblocking(False)
            socks.append(s)
            return loop.sock_connect(s, ls.getsockname())

        def after(outcome, result):
            for s in socks:
                s.close()
            socks.clear()

        try:
            return await sweep("sock_connect", make, after=after,
                               poll=lambda: _accept_and_close(ls))
        finally:
            ls.close()

    run(main)


def test_sock_accept_sweep():
    """A client connects at iteration 2; an accept cancelled before it ran
    leaves the connection in the backlog, nothing else."""
    async def main():
        loop = asyncio.get_running_loop()
        ls = _listener()
        clients = []

        def tick(i):
            if i == 2:
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(ls.getsockname())
                clients.append(c)

        def after(outcome, result):
            if result is not None:
                result[0].close()
            _accept_and_close(ls)
            for c in clients:
                c.close()
            clients.clear()

        try:
            return await sweep("sock_accept", lambda: loop.sock_accept(ls), after=after,
                               tick=tick)
        finally:
            ls.close()

    run(main)


# ---------------------------------------------------------------------------
# transports and servers
# ---------------------------------------------------------------------------


def test_create_connection_sweep():
    async def main():
        loop = asyncio.get_running_loop()
        ls = _listener()

        async def after(outcome, result):
            if result is not None:
                tr, proto = result
                tr.close()
                await asyncio.wait_for(proto.lost, IO_TIMEOUT)

        try:
            return await sweep("create_connection",
                               lambda: loop.create_connection(_Proto, *ls.getsockname()),
                               after=after, poll=lambda: _accept_and_close(ls))
        finally:
            ls.close()

    run(main)


def test_create_server_serve_forever_sweep():
    """create_server + serve_forever, cancelled anywhere: asyncio closes the
    server, and the ring's multishot accept goes with it."""
    async def main():
        loop = asyncio.get_running_loop()

        async def op():
            server = await loop.create_server(_Proto, HOST, 0)
            await server.serve_forever()

        return await sweep("create_server+serve_forever", op, never_done=True, max_rounds=8)

    run(main)


def test_start_server_serve_forever_sweep():
    async def main():
        async def handle(reader, writer):
            writer.close()

        async def op():
            server = await asyncio.start_server(handle, HOST, 0)
            async with server:
                await server.serve_forever()

        return await sweep("start_server+serve_forever", op, never_done=True, max_rounds=8)

    run(main)


# ---------------------------------------------------------------------------
# streams
# ---------------------------------------------------------------------------


def test_open_connection_sweep():
    async def main():
        ls = _listener()

        async def after(outcome, result):
            if result is not None:
                result[1].close()
                await asyncio.wait_for(result[1].wait_closed(), IO_TIMEOUT)

        try:
            return await sweep("open_connection",
                               lambda: asyncio.open_connection(*ls.getsockname()),
                               after=after, poll=lambda: _accept_and_close(ls))
        finally:
            ls.close()

    run(main)


@pytest.mark.parametrize("what", ["read", "readexactly", "readuntil", "readline"])
def test_stream_read_sweep(what):
    """The peer sends ``b"01234\\n"`` in two halves (iterations 2 and 4); a
    read cancelled anywhere leaves the bytes in the reader for the next."""
    async def main():
        ls = _listener()
        reader, writer = await asyncio.open_connection(*ls.getsockname())
        peer = ls.accept()[0]
        peer.setblocking(False)
        sent = bytearray()

        def tick(i):
            if i == 2:
                peer.send(b"012")
                sent.extend(b"012")
            elif i == 4:
                peer.send(b"34\n")
                sent.extend(b"34\n")

        async def op():
            if what == "read":
                return await reader.read(100)
            if what == "readexactly":
                return await reader.readexactly(6)
            if what == "readuntil":
                return await reader.readuntil(b"\n")
            return await reader.readline()

        def make():
            sent.clear()
            return op()

        async def after(outcome, data):
            got = bytes(data or b"")
            # The rest of what was sent is still buffered: nothing lost.
            while len(got) < len(sent):
                got += await asyncio.wait_for(reader.read(100), IO_TIMEOUT)
            assert got == bytes(sent)

        try:
            return await sweep(f"StreamReader.{what}", make, after=after, tick=tick)
        finally:
            writer.close()
            await writer.wait_closed()
            peer.close()
            ls.close()

    run(main)


def test_stream_write_drain_sweep():
    """write(8 MiB) + drain() with a peer that reads from iteration 4 on:
    cancelled anywhere, every byte written still arrives, in order."""
    async def main():
        ls = _listener(rcvbuf=65536)
        reader, writer = await asyncio.open_connection(*ls.getsockname())
        peer = ls.accept()[0]
        peer.setblocking(False)
        payload = pattern(BIG)
        got = bytearray()
        started = [False]

        def tick(i):
            if i >= 4:
                _read_some(peer, got)

        async def op():
            started[0] = True
            writer.write(payload)
            await writer.drain()

        def make():
            started[0] = False
            got.clear()
            return op()

        async def after(outcome, result):
            if started[0]:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + IO_TIMEOUT
                while len(got) < len(payload):
                    assert loop.time() < deadline, f"{len(got)} of {len(payload)} bytes"
                    _read_some(peer, got)
                    await asyncio.sleep(0.001)
                assert bytes(got) == payload

        try:
            return await sweep("StreamWriter.write+drain", make, after=after, tick=tick)
        finally:
            writer.close()
            await writer.wait_closed()
            peer.close()
            ls.close()

    run(main)


def test_stream_close_wait_closed_sweep():
    async def main():
        ls = _listener()

        async def op():
            reader, writer = await asyncio.open_connection(*ls.getsockname())
            writer.write(bytes(256 * 1024))
            writer.close()
            await writer.wait_closed()

        try:
            return await sweep("open_connection+close+wait_closed", op,
                               poll=lambda: _accept_and_close(ls))
        finally:
            ls.close()

    run(main)


def test_loop_is_ringline():
    async def main():
        return type(asyncio.get_running_loop()).__module__

    assert run(main) == ringline.aio.eventloop.__name__
