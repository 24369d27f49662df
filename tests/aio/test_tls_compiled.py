"""ringline's compiled TLS transport (aio/tls.pyx) against asyncio's semantics.

Every behaviour test runs once per loop (asyncio's SelectorEventLoop as the
reference, uvloop, ringline) on real loopback TLS, so ringline's compiled
SSLProtocol is held to what asyncio's pure-Python one does: BufferedProtocol
reads, pause/resume of the application's reading, write flow control,
write_eof refused, close_notify both ways, abort.  The remaining tests cover
ringline's switches: Config.tls / RINGLINE_TLS and the kernel-TLS status.
"""

import asyncio
import sys
from asyncio import sslproto

import pytest

from tests.support import loops, run_on
from tests.support.aio import IO, KIB, LOCAL, Accepted, Echo, Proto, blob, settle
from tests.support.tls import make_certs

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


async def _pair(loop, certs, client_factory, server_cls=Proto):
    """A TLS server and one client connected to it: (server, t, p, sp)."""
    acc = Accepted(loop, server_cls)
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


class SmallBuffers(asyncio.BufferedProtocol):
    """A BufferedProtocol whose get_buffer() gives at most 1000 bytes."""

    def __init__(self, loop):
        self.buf = bytearray(1000)
        self.data = bytearray()
        self.sizes_asked = []
        self.lost = loop.create_future()
        self.more = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.sizes_asked.append(sizehint)
        # A memoryview: asyncio's sslproto slices the buffer it is given,
        # and a bytearray's slice is a copy (its reads would be lost).
        return memoryview(self.buf)

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.buf)
        self.data += self.buf[:nbytes]
        self.more.set()

    def eof_received(self):
        return None

    def connection_lost(self, exc):
        self.lost.set_result(exc)

    async def wait_lost(self):
        return await asyncio.wait_for(self.lost, IO)


def test_tls_buffered_protocol_small_buffers(loop, certs):
    """A BufferedProtocol gets every byte of 1 MiB through 1000-byte buffers,
    in order (the compiled path reads plaintext straight into them)."""
    payload = blob(1024 * KIB, 11)

    async def main():
        server, t, p, sp = await _pair(loop, certs, lambda: SmallBuffers(loop))
        sp.transport.write(payload)
        while len(p.data) < len(payload):
            p.more.clear()
            await asyncio.wait_for(p.more.wait(), IO)
        assert bytes(p.data) == payload
        assert all(isinstance(n, int) for n in p.sizes_asked)
        t.close()
        await _done(server, p, sp)

    run_on(loop, main())


def test_tls_pause_and_resume_reading(loop, certs):
    """While the application's reading is paused no data_received comes;
    resume_reading delivers what arrived meanwhile, complete and in order."""
    payload = blob(200 * KIB, 12)

    async def main():
        server, t, p, sp = await _pair(loop, certs, lambda: Proto(loop))
        assert t.is_reading()
        t.pause_reading()
        assert not t.is_reading()
        sp.transport.write(payload)
        await settle(loop, 0.2)
        assert "data" not in p.calls
        t.resume_reading()
        assert t.is_reading()
        assert await p.received(len(payload)) == payload
        t.close()
        await _done(server, p, sp)

    run_on(loop, main())


class Writer(Proto):
    def __init__(self, loop):
        super().__init__(loop)
        self.pauses = 0
        self.resumed = loop.create_future()

    def pause_writing(self):
        self.calls.append("pause")
        self.pauses += 1

    def resume_writing(self):
        self.calls.append("resume")
        if not self.resumed.done():
            self.resumed.set_result(None)


def test_tls_write_flow_control(loop, certs):
    """Over a peer that does not read, write() pauses the protocol at the
    high-water mark; once the peer reads, resume_writing comes and every
    byte arrives."""
    chunk = blob(64 * KIB, 13)

    async def main():
        server, t, p, sp = await _pair(loop, certs, lambda: Writer(loop))
        sp.transport.pause_reading()
        t.set_write_buffer_limits(high=64 * KIB)
        assert t.get_write_buffer_limits() == (16 * KIB, 64 * KIB)
        sent = 0
        for _ in range(400):               # at most 25 MiB: the socket buffers fill long before
            t.write(chunk)
            sent += len(chunk)
            if p.pauses:
                break
            await asyncio.sleep(0)
        assert p.pauses == 1, p.calls
        assert t.get_write_buffer_size() > 0
        sp.transport.resume_reading()
        await asyncio.wait_for(p.resumed, IO)
        assert t.get_write_buffer_size() <= 16 * KIB
        assert await sp.received(sent) == chunk * (sent // len(chunk))
        t.close()
        await _done(server, p, sp)

    run_on(loop, main())


def test_tls_write_kinds_and_no_write_eof(loop, certs):
    """bytes, bytearray, memoryview and writelines all go out; write_eof is
    refused (TLS has no half-close), can_write_eof() says so; a str is a
    TypeError."""

    async def main():
        server, t, p, sp = await _pair(loop, certs, lambda: Proto(loop), Echo)
        assert t.can_write_eof() is False
        with pytest.raises(NotImplementedError):
            t.write_eof()
        with pytest.raises(TypeError):
            t.write("text")
        t.write(b"a1")
        t.write(bytearray(b"b2"))
        t.write(memoryview(b"xc3x")[1:3])
        t.writelines([b"d4", bytearray(b"e5"), memoryview(b"f6")])
        t.write(b"")
        assert await p.received(12) == b"a1b2c3d4e5f6"
        t.close()
        await _done(server, p, sp)

    run_on(loop, main())


def test_tls_close_sends_close_notify(loop, certs):
    """close() on one end: the peer's protocol gets eof_received (the
    close_notify) and then connection_lost(None); so does the closer's."""

    async def main():
        server, t, p, sp = await _pair(loop, certs, lambda: Proto(loop), Echo)
        t.write(b"last words")
        assert await p.received(10) == b"last words"
        t.close()
        assert t.is_closing()
        assert await p.wait_lost() is None
        assert await sp.wait_lost() is None
        assert sp.calls[-2:] == ["eof", "lost"], sp.calls
        assert bytes(sp.data) == b"last words"
        server.close()
        await server.wait_closed()

    run_on(loop, main())


def test_tls_abort(loop, certs):
    """abort(): connection_lost(None) on this end without a close_notify
    exchange, and the peer's connection ends too; writes after it are
    dropped silently."""

    async def main():
        server, t, p, sp = await _pair(loop, certs, lambda: Proto(loop))
        t.abort()
        assert t.is_closing()
        t.write(b"dropped")
        assert await p.wait_lost() is None
        await sp.wait_lost()
        assert "data" not in sp.calls
        server.close()
        await server.wait_closed()

    run_on(loop, main())


@pytest.mark.parametrize(("config_tls", "env", "expect"), [
    ("auto", None, "ringline"),
    ("ringline", None, "ringline"),
    ("asyncio", None, "asyncio"),
    ("auto", "asyncio", "asyncio"),
    ("ringline", "asyncio", "ringline"),
])
def test_tls_implementation_switch(monkeypatch, certs, config_tls, env, expect):
    """Config.tls picks the SSLProtocol; "auto" follows $RINGLINE_TLS (read
    when the transport is made); both carry the same bytes."""
    ringline = loops.require_ringline()
    from ringline.aio import tls as rl_tls

    if env is None:
        monkeypatch.delenv("RINGLINE_TLS", raising=False)
    else:
        monkeypatch.setenv("RINGLINE_TLS", env)
    lp = ringline.new_event_loop(ringline.Config(tls=config_tls))
    want = rl_tls.SSLProtocol if expect == "ringline" else sslproto.SSLProtocol

    async def main():
        server, t, p, sp = await _pair(lp, certs, lambda: Proto(lp), Echo)
        assert type(t._ssl_protocol) is want
        assert type(sp.transport._ssl_protocol) is want
        payload = blob(100 * KIB, 14)
        t.write(payload)
        assert await p.received(len(payload)) == payload
        t.close()
        await _done(server, p, sp)

    try:
        run_on(lp, main())
    finally:
        lp.close()


def test_ktls_status_explains():
    """ktls_status() answers (usable, reason); where the kernel lacks the
    'tls' upper-layer protocol the reason says so."""
    loops.require_ringline()
    from ringline.aio import tls as rl_tls

    ok, reason = rl_tls.ktls_status()
    assert ok is False            # the MemoryBIO transport cannot hand keys to the kernel
    assert isinstance(reason, str) and reason
    try:
        with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
            ulps = f.read().split()
    except OSError:
        return
    if "tls" not in ulps:
        assert "'tls'" in reason
    elif sys.version_info < (3, 12):
        assert "OP_ENABLE_KTLS" in reason


def test_start_tls_both_ends_streams(loop, loop_name, certs):
    """StreamWriter.start_tls (loop.start_tls) on both ends of a plain
    connection, then bytes both ways; on ringline the upgraded transports
    run the compiled SSLProtocol over the ring transport."""
    payload = blob(300 * KIB, 15)
    protocols = []

    async def handler(reader, writer):
        assert await reader.readexactly(9) == b"STARTTLS\n"
        writer.write(b"GO\n")
        await writer.drain()
        await writer.start_tls(certs.server_ctx())
        protocols.append(type(getattr(writer.transport, "_ssl_protocol", None)))
        writer.write(await reader.readexactly(len(payload)))
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handler, LOCAL, 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(LOCAL, port)
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"GO\n"
        await writer.start_tls(certs.client_ctx(), server_hostname="localhost")
        protocols.append(type(getattr(writer.transport, "_ssl_protocol", None)))
        assert writer.get_extra_info("peercert") is not None
        writer.write(payload)
        assert await reader.readexactly(len(payload)) == payload
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run_on(loop, main())
    assert len(protocols) == 2
    if loop_name == "ringline":
        from ringline.aio import tls as rl_tls
        assert protocols == [rl_tls.SSLProtocol, rl_tls.SSLProtocol]


def test_ktls_true_warns_once_and_tls_still_works(monkeypatch, certs):
    """Config.ktls=True where kernel TLS cannot be used: one RuntimeWarning
    naming the cause, and the connection runs on the compiled transport."""
    ringline = loops.require_ringline()
    from ringline.aio import tls as rl_tls
    from ringline.aio import transports as rl_transports

    if rl_tls.ktls_status()[0]:
        pytest.skip("kernel TLS is usable here")
    monkeypatch.setattr(rl_transports, "_ktls_warned", False)
    lp = ringline.new_event_loop(ringline.Config(ktls=True))

    async def main():
        with pytest.warns(RuntimeWarning, match="kernel TLS") as rec:
            server, t, p, sp = await _pair(lp, certs, lambda: Proto(lp), Echo)
        assert len([w for w in rec if "kernel TLS" in str(w.message)]) == 1
        assert type(t._ssl_protocol) is rl_tls.SSLProtocol
        t.write(b"ping")
        assert await p.received(4) == b"ping"
        t.close()
        await _done(server, p, sp)

    try:
        run_on(lp, main())
    finally:
        lp.close()


def test_tls_slow_stream_reader_gets_every_byte(loop, certs):
    """A StreamReader with a small limit read in small pieces: its pauses
    make the TLS layer pause the raw transport (ciphertext piles up in the
    BIO, on ringline straight from the ring's buffers); every byte of 4 MiB
    still arrives in order."""
    payload = blob(4096 * KIB, 16)

    async def handler(reader, writer):
        writer.write(payload)
        await writer.drain()
        await reader.read()             # until the client closes
        writer.close()

    async def main():
        server = await asyncio.start_server(handler, LOCAL, 0, ssl=certs.server_ctx())
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            LOCAL, port, ssl=certs.client_ctx(), server_hostname="localhost", limit=4096)
        got = bytearray()
        while len(got) < len(payload):
            chunk = await asyncio.wait_for(reader.read(1000), IO)
            assert chunk
            got += chunk
            if len(got) % 7 == 0:
                await asyncio.sleep(0)
        assert bytes(got) == payload
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run_on(loop, main())
