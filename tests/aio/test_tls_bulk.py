"""Large TLS writes and reads: byte-exact, in order, asyncio's flow control.

ringline's compiled TLS transport (aio/tls.pyx) encrypts a large ``bytes``
write a piece at a time and, once the raw transport is full, leaves the rest
unencrypted in its backlog until the transport drains (the outgoing BIO stays
one piece long).  These tests hold that to asyncio's behaviour on every loop:
what the peer receives, when pause_writing/resume_writing come, what
get_write_buffer_size() says, that close() sends everything before its
close_notify, and that a mutable buffer written behind a waiting ``bytes``
is taken at write() time.
"""

import asyncio

import pytest

from tests.support import run_on
from tests.support.aio import IO, KIB, LOCAL, MIB, Accepted, Proto, blob
from tests.support.tls import make_certs

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


class Writer(Proto):
    """Records pause_writing/resume_writing as calls."""

    def __init__(self, loop):
        super().__init__(loop)
        self.pauses = 0
        self.resumes = 0
        self.resumed = loop.create_future()

    def pause_writing(self):
        self.calls.append("pause")
        self.pauses += 1

    def resume_writing(self):
        self.calls.append("resume")
        self.resumes += 1
        if not self.resumed.done():
            self.resumed.set_result(None)


async def _pair(loop, certs, client_factory):
    acc = Accepted(loop, Proto)
    server = await loop.create_server(acc, LOCAL, 0, ssl=certs.server_ctx(),
                                      ssl_handshake_timeout=IO, ssl_shutdown_timeout=IO)
    addr = server.sockets[0].getsockname()
    t, p = await loop.create_connection(client_factory, *addr, ssl=certs.client_ctx(),
                                        server_hostname="localhost",
                                        ssl_handshake_timeout=IO, ssl_shutdown_timeout=IO)
    sp = await acc.next()
    return server, t, p, sp


async def _done(server, *protos):
    for p in protos:
        await p.wait_lost()
    server.close()
    await server.wait_closed()


def test_large_write_to_a_paused_peer_counts_and_arrives(loop, loop_name, certs):
    """An 8 MiB bytes written to a peer that does not read: once the peer
    reads, every byte arrives in order and, if the protocol was paused,
    resume_writing follows once.  Where the pending bytes are counted is the
    loop's own (asyncio and uvloop hand all ciphertext to the raw transport,
    whose buffer the TLS transport does not count); ringline keeps them in
    its TLS backlog: paused once, most of the 8 MiB counted."""
    payload = blob(8 * MIB, 21)

    async def main():
        server, t, p, sp = await _pair(loop, certs, lambda: Writer(loop))
        sp.transport.pause_reading()
        t.write(payload)
        if loop_name == "ringline":
            assert p.pauses == 1, p.calls
            assert t.get_write_buffer_size() > 6 * MIB
            # The raw transport below holds only a short queue of ciphertext.
            raw = t._ssl_protocol._transport
            assert raw.get_write_buffer_limits() == (32 * KIB, 128 * KIB)
        await asyncio.sleep(0.05)
        # (The kernel's socket buffers may take megabytes meanwhile.)
        assert p.resumes <= p.pauses <= 1, p.calls
        sp.transport.resume_reading()
        assert await sp.received(len(payload)) == payload
        if p.pauses:
            await asyncio.wait_for(p.resumed, IO)
        assert p.resumes == p.pauses, p.calls
        assert t.get_write_buffer_size() == 0
        t.close()
        await _done(server, p, sp)

    run_on(loop, main())


def test_close_right_after_large_writes_sends_everything(loop, certs):
    """close() right after 3 x 3 MiB of writes: the peer gets all of it, then
    the close_notify (eof_received), then connection_lost(None)."""
    parts = [blob(3 * MIB, 22 + i) for i in range(3)]

    async def main():
        server, t, p, sp = await _pair(loop, certs, lambda: Writer(loop))
        for part in parts:
            t.write(part)
        t.close()
        assert await sp.wait_lost() is None
        assert bytes(sp.data) == b"".join(parts)
        assert sp.calls[-2:] == ["eof", "lost"], sp.calls[-3:]
        await _done(server, p)

    run_on(loop, main())


def test_mutable_buffer_behind_a_waiting_write_is_taken_at_write(loop, certs):
    """A bytearray (and a memoryview of one) written, and changed, while a
    large bytes still waits to be sent: the peer gets the contents as they
    were at write() time, as asyncio's SSL transport encrypts them at once."""
    big = blob(6 * MIB, 25)

    async def main():
        server, t, p, sp = await _pair(loop, certs, lambda: Writer(loop))
        sp.transport.pause_reading()
        t.write(big)
        ba = bytearray(b"A" * 70000)
        t.write(ba)
        mv_src = bytearray(b"B" * 1000)
        t.write(memoryview(mv_src))
        lines = [bytearray(b"C" * 500), b"D" * 500]
        t.writelines(lines)
        ba[:] = b"x" * 70000
        mv_src[:] = b"y" * 1000
        lines[0][:] = b"z" * 500
        sp.transport.resume_reading()
        want = big + b"A" * 70000 + b"B" * 1000 + b"C" * 500 + b"D" * 500
        assert await sp.received(len(want)) == want
        t.close()
        await _done(server, p, sp)

    run_on(loop, main())


def test_writes_keep_order_across_pauses(loop, certs):
    """Many writes of mixed sizes and kinds while the peer reads slowly:
    every byte in order (large bytes waiting, small writes queued behind)."""
    pieces = []
    for i in range(40):
        size = (300 * KIB + i * 977) if i % 3 == 0 else (1 + i * 131)
        pieces.append(blob(size, 100 + i))

    async def main():
        server, t, p, sp = await _pair(loop, certs, lambda: Writer(loop))
        for i, piece in enumerate(pieces):
            t.write(piece if i % 2 == 0 else bytearray(piece))
            if i % 5 == 0:
                sp.transport.pause_reading()
                await asyncio.sleep(0)
                sp.transport.resume_reading()
        want = b"".join(pieces)
        assert await sp.received(len(want)) == want
        t.close()
        await _done(server, p, sp)

    run_on(loop, main())


def test_stream_read_large_n_is_byte_exact(loop, certs):
    """StreamReader.read(n) with n of 1 MiB and 4 MiB over TLS: every byte,
    in order, each read at most n, until EOF."""
    payload = blob(12 * MIB + 12345, 27)

    async def handler(reader, writer):
        for off in range(0, len(payload), 10 * MIB):
            writer.write(payload[off:off + 10 * MIB])
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handler, LOCAL, 0, ssl=certs.server_ctx())
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            LOCAL, port, ssl=certs.client_ctx(), server_hostname="localhost")
        got = bytearray()
        n = 1 * MIB
        while True:
            chunk = await asyncio.wait_for(reader.read(n), IO)
            if not chunk:
                break
            assert len(chunk) <= n
            got += chunk
            n = 4 * MIB if n == 1 * MIB else 1 * MIB
        assert bytes(got) == payload
        writer.close()
        server.close()
        await server.wait_closed()

    run_on(loop, main())


def test_outgoing_bio_stays_small_under_a_large_write(certs):
    """ringline only: a 16 MiB write to a peer that does not read leaves the
    outgoing BIO about one piece long (the rest waits unencrypted), not
    the size of the write."""
    import ringline

    lp = ringline.new_event_loop()

    async def main():
        server, t, p, sp = await _pair(lp, certs, lambda: Writer(lp))
        sp.transport.pause_reading()
        t.write(blob(16 * MIB, 28))
        proto = t._ssl_protocol
        if type(proto).__module__ != "ringline.aio.tls":
            pytest.skip("asyncio's sslproto is in use here")
        assert proto._outgoing.pending <= 1 * MIB
        assert t.get_write_buffer_size() > 8 * MIB
        t.abort()
        sp.transport.abort()
        server.close()
        await server.wait_closed()

    try:
        run_on(lp, main())
    finally:
        lp.close()


class CountingReader(asyncio.StreamReader):
    """A StreamReader whose feed_data is its own: it must still be called."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.fed = 0

    def feed_data(self, data):
        self.fed += len(data)
        super().feed_data(data)


class CountingProtocol(asyncio.StreamReaderProtocol):
    """A StreamReaderProtocol whose data_received is its own."""

    def __init__(self, reader):
        super().__init__(reader)
        self.received = 0

    def data_received(self, data):
        self.received += len(data)
        super().data_received(data)


@pytest.mark.parametrize("kind", ["stock", "reader_subclass", "protocol_subclass"])
def test_stream_reader_overrides_are_called(loop, certs, kind):
    """2 MiB over TLS into a StreamReader: byte-exact with asyncio's own
    classes, and a subclass's feed_data / data_received sees every byte
    (ringline decrypts straight into the stock StreamReader's buffer, but
    never past an override)."""
    payload = blob(2 * MIB + 777, 29)

    async def handler(reader, writer):
        writer.write(payload)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handler, LOCAL, 0, ssl=certs.server_ctx())
        port = server.sockets[0].getsockname()[1]
        reader_cls = CountingReader if kind == "reader_subclass" else asyncio.StreamReader
        reader = reader_cls(limit=64 * KIB)
        proto_cls = CountingProtocol if kind == "protocol_subclass" else asyncio.StreamReaderProtocol
        proto = proto_cls(reader)
        transport, _ = await loop.create_connection(
            lambda: proto, LOCAL, port, ssl=certs.client_ctx(), server_hostname="localhost")
        got = bytearray()
        while chunk := await asyncio.wait_for(reader.read(256 * KIB), IO):
            got += chunk
        assert bytes(got) == payload
        if kind == "reader_subclass":
            assert reader.fed == len(payload)
        if kind == "protocol_subclass":
            assert proto.received == len(payload)
        transport.close()
        server.close()
        await server.wait_closed()

    run_on(loop, main())


def test_close_with_reading_paused_sends_everything_first(loop, certs):
    """close() while this end's reading is paused, right after a large
    write to a peer that is not reading yet: the peer still gets every
    byte before the close_notify."""
    payload = blob(6 * MIB, 30)

    async def main():
        server, t, p, sp = await _pair(loop, certs, lambda: Writer(loop))
        sp.transport.pause_reading()
        t.pause_reading()
        t.write(payload)
        t.close()
        await asyncio.sleep(0.05)
        sp.transport.resume_reading()
        assert await sp.wait_lost() is None
        assert len(sp.data) == len(payload)
        assert bytes(sp.data) == payload
        assert sp.calls[-2:] == ["eof", "lost"], sp.calls[-3:]
        await _done(server, p)

    run_on(loop, main())
