"""The asyncio stream-transport contract on each loop: write / writelines /
write_eof, eof_received, reading pause/resume, write-buffer limits and
pause_writing/resume_writing, extra info, abort, peer reset, writes after
close.

Everything here runs on real loopback sockets, once per loop (asyncio's
SelectorEventLoop as the reference, uvloop, ringline), and fails on any
unexpected exception-handler call.  Where ringline deliberately differs
(docs/asyncio-differences.md), the test checks ringline's documented
behaviour.  No assertion depends on timing: a sleep only ever gives
something the chance to happen that must not.
"""


import asyncio
import logging
import socket

import pytest

from tests.support import run_on
from tests.support.aio import (
    IO,
    KIB,
    MIB,
    Proto,
    blob,
    client_side,
    make_side,
    recv_until_eof,
    settle,
)
from tests.support.net import rst_close

pytestmark = pytest.mark.timeout(30)


# ---------------------------------------------------------------------------
# 3. The transport contract
# ---------------------------------------------------------------------------


def test_write_writelines_close_delivers_everything_then_fin(loop, side):
    data = blob(3 * MIB + 17, 1)

    async def main():
        t, p, peer, server = await make_side(loop, side)
        with peer:
            t.write(data[:100])
            t.writelines([data[100:1000], bytearray(data[1000:5000]),
                          memoryview(data)[5000:MIB]])
            t.write(data[MIB:])
            assert not t.is_closing()
            t.close()
            assert t.is_closing()
            assert not t.is_reading()
            t.close()                   # twice is harmless
            got = await recv_until_eof(loop, peer)
            assert len(got) == len(data) and got == data
            assert await p.wait_lost() is None
            assert p.calls == ["made", "lost"]
        if server is not None:
            server.close()

    run_on(loop, main())


def test_write_rejects_non_bytes(loop, loop_name):
    async def main():
        t, p, peer = await client_side(loop)
        with peer:
            with pytest.raises(TypeError):
                t.write("text")
            if loop_name != "uvloop":   # uvloop keeps part of it and never sends
                with pytest.raises(TypeError):
                    t.writelines([b"not sent", 42])
            t.write(b"")                # empty writes are no-ops
            t.write(b"ok")
            t.close()
            # A bad item makes writelines() write nothing at all.
            assert await recv_until_eof(loop, peer) == b"ok"
            await p.wait_lost()

    run_on(loop, main())


def test_write_copies_bytearray_and_memoryview(loop):
    async def main():
        t, p, peer = await client_side(loop)
        with peer:
            ba = bytearray(b"A" * (200 * KIB))
            src = bytearray(b"B" * 5000)
            t.write(ba)
            t.write(memoryview(src)[1000:3000])
            t.write(ba)
            # The caller may reuse its buffers as soon as write() returns.
            ba[:] = b"X" * len(ba)
            src[:] = b"Y" * len(src)
            t.close()
            got = await recv_until_eof(loop, peer)
            assert got == b"A" * (200 * KIB) + b"B" * 2000 + b"A" * (200 * KIB)
            await p.wait_lost()

    run_on(loop, main())


def test_write_eof_half_close(loop, side):
    async def main():
        t, p, peer, server = await make_side(loop, side)
        with peer:
            assert t.can_write_eof()
            t.write(b"request")
            t.write_eof()
            t.write_eof()               # twice is harmless
            with pytest.raises(RuntimeError):
                t.write(b"after eof")
            # The peer sees the data, then EOF...
            assert await recv_until_eof(loop, peer) == b"request"
            assert not t.is_closing()
            # ...and can still answer: the transport still reads.
            await loop.sock_sendall(peer, b"response")
            assert await p.received(8) == b"response"
            peer.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(asyncio.shield(p.eof), IO)
            assert await p.wait_lost() is None
            assert p.calls[0] == "made" and p.calls[-2:] == ["eof", "lost"]
        if server is not None:
            server.close()

    run_on(loop, main())


def test_eof_received_true_keeps_the_transport_open(loop, side):
    async def main():
        t, p, peer, server = await make_side(loop, side, eof_result=True)
        with peer:
            await loop.sock_sendall(peer, b"last words")
            peer.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(asyncio.shield(p.eof), IO)
            assert p.data == b"last words"
            await settle(loop)
            assert not t.is_closing()
            assert p.calls == ["made", "data", "eof"]
            t.write(b"answer after eof")
            t.close()
            assert await recv_until_eof(loop, peer) == b"answer after eof"
            assert await p.wait_lost() is None
        if server is not None:
            server.close()

    run_on(loop, main())


@pytest.mark.parametrize("result", [None, False])
def test_eof_received_false_closes_the_transport(loop, side, result):
    async def main():
        t, p, peer, server = await make_side(loop, side, eof_result=result)
        with peer:
            peer.shutdown(socket.SHUT_WR)
            assert await p.wait_lost() is None
            assert t.is_closing()
            assert p.calls == ["made", "eof", "lost"]
            assert await recv_until_eof(loop, peer) == b""
        if server is not None:
            server.close()

    run_on(loop, main())


def test_pause_reading_holds_data_until_resume(loop, side):
    chunks = [blob(1000 + 7919 * i, i) for i in range(12)]

    async def main():
        t, p, peer, server = await make_side(loop, side)
        with peer:
            assert t.is_reading()
            t.pause_reading()
            t.pause_reading()           # twice is harmless
            assert not t.is_reading()
            for c in chunks:
                await loop.sock_sendall(peer, c)
            peer.shutdown(socket.SHUT_WR)
            await settle(loop)
            assert p.calls == ["made"], "data_received/eof_received while paused"
            t.resume_reading()
            assert t.is_reading()
            t.resume_reading()          # twice is harmless
            assert await p.wait_lost() is None      # eof_received -> None -> close
            assert bytes(p.data) == b"".join(chunks)
            assert p.calls[-2:] == ["eof", "lost"]
        if server is not None:
            server.close()

    run_on(loop, main())


def test_pause_again_before_delivery_delivers_nothing(loop):
    async def main():
        t, p, peer = await client_side(loop)
        with peer:
            t.pause_reading()
            await loop.sock_sendall(peer, b"held")
            await settle(loop)
            # Resumed and paused again in the same iteration: nothing may be
            # delivered in between.
            t.resume_reading()
            t.pause_reading()
            await settle(loop)
            assert p.calls == ["made"]
            t.resume_reading()
            assert await p.received(4) == b"held"
            await loop.sock_sendall(peer, b" and more")
            assert await p.received(13) == b"held and more"
            t.close()
            await p.wait_lost()

    run_on(loop, main())


def test_no_data_received_after_close(loop):
    async def main():
        t, p, peer = await client_side(loop)
        with peer:
            # The bytes are in the transport's socket before close(), but
            # close() comes first from the protocol's point of view.
            peer.send(b"too late")
            t.close()
            assert await p.wait_lost() is None
            assert p.calls == ["made", "lost"]

    run_on(loop, main())


def test_write_buffer_limits(loop, loop_name):
    async def main():
        t, p, peer = await client_side(loop)
        with peer:
            low, high = t.get_write_buffer_limits()
            if loop_name == "ringline":
                # Documented: Config.send_queue_low_water / send_queue_limit.
                cfg = loop.config
                assert (low, high) == (cfg.effective_send_queue_low_water, cfg.send_queue_limit)
            else:
                assert high >= low >= 0
            t.set_write_buffer_limits(high=1000)
            assert t.get_write_buffer_limits() == (250, 1000)
            t.set_write_buffer_limits(low=100)
            assert t.get_write_buffer_limits() == (100, 400)
            t.set_write_buffer_limits(high=2000, low=500)
            assert t.get_write_buffer_limits() == (500, 2000)
            t.set_write_buffer_limits()
            assert t.get_write_buffer_limits() == (16 * KIB, 64 * KIB)
            with pytest.raises(ValueError):
                t.set_write_buffer_limits(high=100, low=200)
            with pytest.raises(ValueError):
                t.set_write_buffer_limits(high=-1)
            assert t.get_write_buffer_limits() == (16 * KIB, 64 * KIB)
            t.close()
            await p.wait_lost()

    run_on(loop, main())


def test_write_buffer_size_counts_unsent_bytes(loop, loop_name):
    async def main():
        t, p, peer = await client_side(loop)
        with peer:
            assert t.get_write_buffer_size() == 0
            t.write(b"abc")
            if loop_name == "ringline":
                # Documented: write() under the high-water mark does not
                # send synchronously.
                assert t.get_write_buffer_size() == 3
            assert await recv_until_eof(loop, peer, 3) == b"abc"
            await settle(loop, 0)
            assert t.get_write_buffer_size() == 0
            t.close()
            await p.wait_lost()

    run_on(loop, main())


class FlowProto(Proto):
    """Records pause_writing/resume_writing with the buffer size at the time."""

    def __init__(self, loop, **kw):
        super().__init__(loop, **kw)
        self.flow: list[tuple[str, int]] = []
        self.resumed = loop.create_future()

    def pause_writing(self):
        assert not self.flow or self.flow[-1][0] == "resume", self.flow
        self.flow.append(("pause", self.transport.get_write_buffer_size()))

    def resume_writing(self):
        assert self.flow and self.flow[-1][0] == "pause", self.flow
        self.flow.append(("resume", self.transport.get_write_buffer_size()))
        if not self.resumed.done():
            self.resumed.set_result(None)


def test_pause_writing_resume_writing(loop, side):
    high, low = 64 * KIB, 16 * KIB
    chunk = 32 * KIB

    async def main():
        t, p, peer, server = await make_side(loop, side, FlowProto)
        with peer:
            # Small kernel buffers so that asyncio's synchronous send fills up
            # quickly; the peer does not read.
            t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * KIB)
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * KIB)
            t.set_write_buffer_limits(high=high, low=low)
            sent = bytearray()
            i = 0
            while not p.flow:
                assert len(sent) < 64 * MIB, "pause_writing never called"
                data = blob(chunk, i)
                i += 1
                t.write(data)
                sent += data
                size = t.get_write_buffer_size()
                # pause_writing comes from inside write(), exactly when the
                # buffer goes over the high-water mark.
                assert bool(p.flow) == (size > high), (p.flow, size)
                await asyncio.sleep(0)
            assert p.flow[0][0] == "pause" and p.flow[0][1] > high
            # Writing on while paused is allowed.
            t.write(b"tail")
            sent += b"tail"
            # Now the peer reads: resume_writing once the buffer is <= low.
            got = await recv_until_eof(loop, peer, len(sent))
            await asyncio.wait_for(asyncio.shield(p.resumed), IO)
            assert got == bytes(sent)
            # Alternating (FlowProto checks), each at its mark; the kernel may
            # take enough meanwhile for more than one round on some loops.
            assert p.flow[-1][0] == "resume"
            assert all(size > high for what, size in p.flow if what == "pause"), p.flow
            assert all(size <= low for what, size in p.flow if what == "resume"), p.flow
            t.close()
            assert await recv_until_eof(loop, peer) == b""
            await p.wait_lost()
        if server is not None:
            server.close()

    run_on(loop, main())


def test_lowering_the_limits_pauses_the_protocol(loop):
    async def main():
        t, p, peer = await client_side(loop, lambda: FlowProto(loop), rcvbuf=32 * KIB)
        with peer:
            t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * KIB)
            t.set_write_buffer_limits(high=1 << 30)
            # Far more than the two 32 KiB socket buffers hold: some stays
            # in the transport on every loop, even after ringline hands the
            # kernel what it takes at the threshold.
            sent = blob(4 * MIB, 1)
            t.write(sent)
            assert not p.flow
            t.set_write_buffer_limits(high=0)
            assert [f[0] for f in p.flow] == ["pause"]
            got = await recv_until_eof(loop, peer, len(sent))
            await asyncio.wait_for(asyncio.shield(p.resumed), IO)
            assert got == bytes(sent)
            t.close()
            await p.wait_lost()

    run_on(loop, main())


def test_extra_info(loop, side):
    async def main():
        t, p, peer, server = await make_side(loop, side)
        with peer:
            sock = t.get_extra_info("socket")
            assert sock.family == socket.AF_INET
            assert sock.type == socket.SOCK_STREAM
            assert sock.getsockname() == peer.getpeername()
            assert t.get_extra_info("sockname") == peer.getpeername()
            assert t.get_extra_info("peername") == peer.getsockname()
            assert t.get_extra_info("no such thing") is None
            assert t.get_extra_info("no such thing", "dflt") == "dflt"
            assert t.get_protocol() is p
            # TCP_NODELAY is set on stream transports, as asyncio does.
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            t.close()
            await p.wait_lost()
        if server is not None:
            server.close()

    run_on(loop, main())


def test_abort(loop, side):
    async def main():
        t, p, peer, server = await make_side(loop, side)
        with peer:
            t.write(blob(256 * KIB, 3))
            t.abort()
            assert t.is_closing()
            assert not t.is_reading()
            t.abort()                   # twice, and close() after, are harmless
            t.close()
            t.write(b"ignored")
            assert await p.wait_lost() is None
            assert t.get_write_buffer_size() == 0     # the queued data is dropped
            # The peer sees the end of the stream (FIN or RST); what was queued
            # may or may not have gone out, but nothing after the abort.
            got = await recv_until_eof(loop, peer)
            assert b"ignored" not in got
        if server is not None:
            server.close()

    run_on(loop, main())


def test_connection_lost_with_the_error_on_peer_reset(loop, side):
    async def main():
        t, p, peer, server = await make_side(loop, side)
        await loop.sock_sendall(peer, b"x")
        assert await p.received(1) == b"x"
        rst_close(peer)
        exc = await p.wait_lost()
        assert isinstance(exc, ConnectionResetError), repr(exc)
        assert t.is_closing()
        assert "eof" not in p.calls
        if server is not None:
            server.close()

    run_on(loop, main())


def test_write_after_close_is_ignored_then_logged(loop, loop_name, caplog):
    if loop_name == "uvloop":
        pytest.skip("uvloop raises RuntimeError on write() after close")

    async def main():
        t, p, peer = await client_side(loop)
        with peer:
            t.close()
            assert await p.wait_lost() is None
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(4):
                    t.write(b"dropped")
                assert not caplog.records
                for _ in range(3):
                    t.write(b"dropped")
            # asyncio counts the close as the first lost write and warns
            # from the 5th write on.
            assert len(caplog.records) == 3, [r.getMessage() for r in caplog.records]
            assert await recv_until_eof(loop, peer) == b""
            assert p.lost_count == 1

    run_on(loop, main())
