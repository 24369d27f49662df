"""asyncio streams fed in place (issue 18, item 4): on ringline a transport
whose protocol is asyncio's own StreamReaderProtocol copies each receive
from the ring's buffer straight onto the StreamReader's buffer (no bytes
object per receive).  Reads of every size across buffer boundaries stay
byte-exact on every loop; a reader that cannot be fed so (feed_data
overridden on its class or its instance) still gets bytes through
data_received; backpressure and EOF after buffered data are unchanged."""

from __future__ import annotations

import asyncio

import pytest

from ringline._net import stream as _stream
from tests.support.aio import IO, KIB, LOCAL, MIB, blob
from tests.support.running import run, run_on

# Read sizes cycled through by the reader: single bytes, odd sizes, sizes
# just around the 64 KiB and 256 KiB receive buffers, and several MiB.
SIZES = (1, 7, 100_000, 3 * MIB, 256 * KIB + 1, 64 * KIB - 1, 5 * MIB, 4096, 256 * KIB)


def _stats(loop):
    return _stream.net_state_for(loop).statistics()


async def _pair(limit=None):
    """A connected (server reader, server writer, client reader, client
    writer) and the server; the server side made by start_server."""
    got = asyncio.get_running_loop().create_future()

    async def handle(reader, writer):
        got.set_result((reader, writer))

    kw = {} if limit is None else {"limit": limit}
    server = await asyncio.start_server(handle, LOCAL, 0, **kw)
    cr, cw = await asyncio.open_connection(LOCAL, server.sockets[0].getsockname()[1])
    sr, sw = await asyncio.wait_for(got, IO)
    return server, sr, sw, cr, cw


async def _read_mixed(reader, total):
    """Read ``total`` bytes with read(n) and readexactly(n) alternating over
    SIZES; every read(n) returns at most n bytes."""
    out = bytearray()
    i = 0
    while len(out) < total:
        n = min(SIZES[i % len(SIZES)], total - len(out))
        if i % 2:
            data = await asyncio.wait_for(reader.readexactly(n), IO)
            assert len(data) == n
        else:
            data = await asyncio.wait_for(reader.read(n), IO)
            assert 0 < len(data) <= n
        assert type(data) is bytes
        out += data
        i += 1
    return out


def test_reads_of_every_size_are_byte_exact(loop):
    """10 MB ``bytes`` writes mixed with small ones, read back with read(n)
    and readexactly(n) of sizes from 1 byte to 5 MiB: every byte in order,
    then EOF."""
    big = blob(10 * MIB, 11)
    parts = [b"x", big, b"yz" * 1000, big[::-1], bytes(range(256)) * 300, big[5:]]
    expect = b"".join(parts)

    async def main():
        server, sr, sw, cr, cw = await _pair()
        try:
            for p in parts:
                cw.write(p)
            drain = asyncio.ensure_future(cw.drain())
            got = await _read_mixed(sr, len(expect))
            await asyncio.wait_for(drain, IO)
            cw.close()
            assert await asyncio.wait_for(sr.read(1 * MIB), IO) == b""
            assert got == expect
            sw.close()
            await cw.wait_closed()
        finally:
            server.close()
            await server.wait_closed()

    run_on(loop, main())


def test_reader_fed_in_place_hands_out_no_buffers():
    """ringline: with a limit high enough that the reader never pauses the
    transport, a 24 MiB transfer moves the stream onto the large-receive
    rings and every receive is copied onto the reader's buffer: not one
    receive buffer is handed out as a bytes object.  Byte-exact."""
    payload = blob(24 * MIB, 12)

    async def main():
        loop = asyncio.get_running_loop()
        server, sr, sw, cr, cw = await _pair(limit=64 * MIB)
        try:
            st0 = _stats(loop)
            cw.write(payload)
            drain = asyncio.ensure_future(cw.drain())
            got = bytearray()
            while len(got) < len(payload):
                got += await asyncio.wait_for(sr.read(8 * MIB), IO)
            await asyncio.wait_for(drain, IO)
            st1 = _stats(loop)
            assert got == payload
            assert st1["recv_large_switches"] > st0["recv_large_switches"]
            assert st1["recv_buffers_handed_out"] == st0["recv_buffers_handed_out"]
            cw.close()
            sw.close()
            await cw.wait_closed()
        finally:
            server.close()
            await server.wait_closed()

    run(main)


class CountingReader(asyncio.StreamReader):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []

    def feed_data(self, data):
        self.calls.append(type(data))
        super().feed_data(data)


@pytest.mark.parametrize("how", ["subclass", "instance"])
def test_reader_with_its_own_feed_data_gets_bytes(loop, how):
    """A StreamReader whose feed_data is overridden (on a subclass, or on
    the instance) is called for every receive, with ``bytes``, and reads
    back byte-exact: the in-place path is only for asyncio's own."""
    payload = blob(6 * MIB, 13)

    async def main():
        if how == "subclass":
            reader = CountingReader(limit=64 * KIB, loop=loop)
            calls = reader.calls
        else:
            reader = asyncio.StreamReader(limit=64 * KIB, loop=loop)
            calls = []
            stock = reader.feed_data

            def feed_data(data):
                calls.append(type(data))
                stock(data)

            reader.feed_data = feed_data
        accepted = loop.create_future()

        def factory():
            proto = asyncio.StreamReaderProtocol(reader, loop=loop)
            if not accepted.done():
                accepted.set_result(proto)
            return proto

        server = await loop.create_server(factory, LOCAL, 0)
        try:
            cr, cw = await asyncio.open_connection(LOCAL, server.sockets[0].getsockname()[1])
            await asyncio.wait_for(accepted, IO)
            cw.write(payload)
            drain = asyncio.ensure_future(cw.drain())
            got = await _read_mixed(reader, len(payload))
            await asyncio.wait_for(drain, IO)
            assert got == payload
            assert calls and set(calls) == {bytes}
            cw.close()
            await cw.wait_closed()
        finally:
            # Our factory's protocol owns the server side; since 3.12
            # Server.wait_closed waits for it to close.
            if accepted.done() and accepted.result()._transport is not None:
                accepted.result()._transport.close()
            server.close()
            await server.wait_closed()

    run_on(loop, main())


def test_paused_reader_keeps_backpressure_and_eof_comes_last(loop):
    """A reader that does not read pauses the transport: what it buffers
    stays bounded (its limit twice, plus what was already received) while
    the writer's buffer keeps the rest; once the reader reads, every byte
    arrives, then the EOF the writer sent after them."""
    payload = blob(16 * MIB, 14)
    limit = 64 * KIB

    async def main():
        server, sr, sw, cr, cw = await _pair(limit=limit)
        try:
            cw.transport.set_write_buffer_limits(high=64 * MIB)
            cw.write(payload)
            cw.write_eof()
            await asyncio.sleep(0.3)
            # Not read: bounded on the reading side, the rest still queued
            # on the writing side (the kernel's socket buffers hold the middle).
            assert len(sr._buffer) <= 2 * limit + 1 * MIB, len(sr._buffer)
            assert cw.transport.get_write_buffer_size() > 0
            got = await _read_mixed(sr, len(payload))
            assert got == payload
            assert await asyncio.wait_for(sr.read(100), IO) == b""
            assert sr.at_eof()
            sw.close()
            cw.close()
        finally:
            server.close()
            await server.wait_closed()

    run_on(loop, main())
