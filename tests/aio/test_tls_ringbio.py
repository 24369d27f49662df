"""The asyncio face's ring BIOs (aio/tls.pyx): OpenSSL reads ciphertext
straight from the ring's receive buffers and writes it straight into the
bytes objects the raw transport sends; ciphertext waits in a queue of its
own while the raw transport is paused.  Bulk transfers under flow control
on both sides, with the ring BIOs on and off: the same bytes in the same
order, the write buffer counted and drained, close_notify after the data.
"""

import asyncio
import hashlib

import pytest

from tests.support import loops, run_on
from tests.support.aio import IO, KIB, LOCAL, blob
from tests.support.tls import make_certs

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(params=[True, False], ids=["ring", "membio"])
def ring(request):
    loops.require_ringline()
    from ringline.aio import tls as rl_tls

    on = rl_tls._set_ring_bio(request.param)
    yield on
    rl_tls._set_ring_bio(True)


@pytest.fixture
def lp():
    ringline = loops.require_ringline()
    loop = ringline.new_event_loop()
    yield loop
    loop.close()


# Write sizes around record (16 KiB) and CHUNK (256 KiB) boundaries.
SIZES = [1, 700, 16 * KIB - 1, 16 * KIB, 16 * KIB + 1, 64 * KIB, 100 * KIB,
         256 * KIB, 256 * KIB + 5, 600 * KIB, 3]


class Pusher(asyncio.Protocol):
    """Writes ``total`` bytes of varied sizes and kinds as fast as flow
    control lets it (no drain: pause_writing/resume_writing), noting what
    the write buffer held each time it was paused."""

    def __init__(self, loop, total):
        self.loop = loop
        self.total = total
        self.sent = 0
        self.i = 0
        self.digest = hashlib.sha256()
        self.paused = False
        self.pauses = 0
        self.sizes_when_paused = []
        self.done = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.loop.call_soon(self.push)

    def push(self):
        while not self.paused and self.sent < self.total:
            n = min(SIZES[self.i % len(SIZES)], self.total - self.sent)
            data = blob(n, self.i)
            kind = self.i % 3
            self.i += 1
            self.digest.update(data)
            self.sent += n
            if kind == 0:
                self.transport.write(data)
            elif kind == 1:
                buf = bytearray(data)
                self.transport.write(buf)
                buf[:] = b"\xff" * len(buf)     # taken at write(): no effect
            else:
                self.transport.write(memoryview(data))
        if self.sent >= self.total and not self.done.done():
            self.done.set_result(None)

    def pause_writing(self):
        self.paused = True
        self.pauses += 1
        self.sizes_when_paused.append(self.transport.get_write_buffer_size())

    def resume_writing(self):
        self.paused = False
        self.loop.call_soon(self.push)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


def test_bulk_under_flow_control_both_ways(lp, certs, ring):
    """8 MB pushed without drain while the server reads slowly in small
    pieces (its reading pauses, ciphertext waits undecrypted): every byte
    arrives in order, the writer was paused with a full write buffer, and
    the buffer is empty once everything left."""
    total = 8 * 1000 * 1000
    got = {}

    async def handler(reader, writer):
        h = hashlib.sha256()
        n = 0
        while True:
            data = await reader.read(7000)
            if not data:
                break
            h.update(data)
            n += len(data)
            if n % 10 == 0:
                await asyncio.sleep(0.001)
        got["n"] = n
        got["digest"] = h.hexdigest()
        writer.close()
        got["done"].set_result(None)

    async def main():
        got["done"] = lp.create_future()
        server = await asyncio.start_server(handler, LOCAL, 0, ssl=certs.server_ctx())
        port = server.sockets[0].getsockname()[1]
        t, p = await lp.create_connection(lambda: Pusher(lp, total), LOCAL, port,
                                          ssl=certs.client_ctx(), server_hostname="localhost")
        assert t._ssl_protocol._ring_bios() == (ring, ring)
        await asyncio.wait_for(p.done, 30)
        while t.get_write_buffer_size():
            await asyncio.sleep(0.005)
        t.close()
        await asyncio.wait_for(p.lost, IO)
        await asyncio.wait_for(got["done"], IO)
        server.close()
        await server.wait_closed()
        return p

    p = run_on(lp, main())
    assert got["n"] == total
    assert got["digest"] == p.digest.hexdigest()
    assert p.pauses > 0
    # Paused at asyncio's SSL high-water mark (512 KiB): the ciphertext
    # waiting in the ring BIO's queue counts as the outgoing BIO's would.
    assert all(s >= 512 * KIB for s in p.sizes_when_paused)


def test_close_sends_queued_ciphertext_then_close_notify(lp, certs, ring):
    """Writes far past the high-water mark then close() at once: all of it
    reaches the peer, then end of stream (close_notify after the data)."""
    parts = [blob(64 * KIB + i, i) for i in range(60)]

    async def handler(reader, writer):
        data = await reader.read()
        writer.close()
        return data

    results = []

    async def main():
        done = lp.create_future()

        async def h(reader, writer):
            try:
                results.append(await handler(reader, writer))
            finally:
                done.set_result(None)

        server = await asyncio.start_server(h, LOCAL, 0, ssl=certs.server_ctx())
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(LOCAL, port, ssl=certs.client_ctx(),
                                                  server_hostname="localhost")
        for part in parts:
            writer.write(part)
        assert writer.transport.get_write_buffer_size() > 0
        writer.close()
        await asyncio.wait_for(done, 30)
        server.close()
        await server.wait_closed()

    run_on(lp, main())
    assert results == [b"".join(parts)]
