"""ringline's TLS transport without Python calls on its data path (aio/tls.pyx).

The MemoryBIO reads, writes and pending counts are made on the BIO pointers
under CPython's objects, SSL_write on the SSL under the SSLObject, asyncio's
own StreamReader is fed in place at any record size.  Each test runs with
those direct calls on and off (``_set_bio_direct``), and with the ring
BIOs in the MemoryBIOs on and off (``_set_ring_bio``): the bytes, the
order and the errors must be the same every way.
"""

import asyncio
import os
import ssl
import subprocess
import sys

import pytest

from tests.support import loops, run_on
from tests.support.aio import IO, KIB, LOCAL, blob
from tests.support.paths import SRC
from tests.support.tls import make_certs

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(params=["ring", "direct", "ssl-module"])
def direct(request):
    """ring: direct calls and ring BIOs (the default); direct: direct calls
    on the MemoryBIOs' mem BIOs; ssl-module: the ssl module's calls."""
    loops.require_ringline()
    from ringline.aio import tls as rl_tls

    rl_tls._set_ring_bio(request.param == "ring")
    on = rl_tls._set_bio_direct(request.param != "ssl-module")
    yield on
    rl_tls._set_bio_direct(True)
    rl_tls._set_ring_bio(True)


@pytest.fixture
def lp():
    ringline = loops.require_ringline()
    loop = ringline.new_event_loop()
    yield loop
    loop.close()


def test_direct_calls_in_use_on_cpython(lp, certs):
    """On CPython (3.8-3.14, _ssl a shared module) the direct calls pass
    their import-time checks and a TLS connection uses them both."""
    from ringline.aio import tls as rl_tls

    if sys.implementation.name != "cpython":
        pytest.skip("the checks keep the ssl module's calls on other Pythons")
    assert rl_tls._set_bio_direct(True) is True
    assert rl_tls._set_ring_bio(True) is True

    async def main():
        server = await asyncio.start_server(lambda r, w: None, LOCAL, 0, ssl=certs.server_ctx())
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(LOCAL, port, ssl=certs.client_ctx(),
                                                  server_hostname="localhost")
        assert writer.transport._ssl_protocol._direct_calls() == (True, True)
        # ... and the ring BIOs inside its MemoryBIOs (aio/tls.pyx).
        assert writer.transport._ssl_protocol._ring_bios() == (True, True)
        writer.close()
        server.close()
        await server.wait_closed()

    run_on(lp, main())


class OwnWakeup(asyncio.StreamReader):
    """A StreamReader whose _wakeup_waiter is its own: still called."""

    wakeups = 0

    def _wakeup_waiter(self):
        OwnWakeup.wakeups += 1
        super()._wakeup_waiter()


class OwnFeed(asyncio.StreamReader):
    """A StreamReader whose feed_data is its own: fed through data_received."""

    fed = 0

    def feed_data(self, data):
        OwnFeed.fed += len(data)
        super().feed_data(data)


@pytest.mark.parametrize("reader_cls", [asyncio.StreamReader, OwnWakeup, OwnFeed])
def test_streams_request_response_every_size(lp, certs, direct, reader_cls):
    """Request/response over asyncio streams, records of 1 byte to 300 KiB,
    written as bytes, bytearray, memoryview and writelines: every reply is
    the request, on either path and for reader subclasses."""
    sizes = [1, 64, 1000, 16 * KIB, 16 * KIB + 1, 100 * KIB, 300 * KIB, 7]
    OwnWakeup.wakeups = OwnFeed.fed = 0

    async def handler(reader, writer):
        while True:
            head = await reader.readexactly(4)
            n = int.from_bytes(head, "big")
            if n == 0:
                break
            body = await reader.readexactly(n)
            kind = n % 4
            if kind == 0:
                writer.write(head + body)
            elif kind == 1:
                writer.write(bytearray(head + body))
            elif kind == 2:
                writer.write(memoryview(head + body))
            else:
                writer.writelines([head, body])
            await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handler, LOCAL, 0, ssl=certs.server_ctx())
        port = server.sockets[0].getsockname()[1]
        reader = reader_cls(limit=2 ** 16, loop=lp)
        proto = asyncio.StreamReaderProtocol(reader, loop=lp)
        transport, _ = await lp.create_connection(
            lambda: proto, LOCAL, port, ssl=certs.client_ctx(), server_hostname="localhost")
        writer = asyncio.StreamWriter(transport, proto, reader, lp)
        for i, n in enumerate(sizes):
            body = blob(n, i)
            writer.write(n.to_bytes(4, "big") + body)
            head = await asyncio.wait_for(reader.readexactly(4), IO)
            assert int.from_bytes(head, "big") == n
            assert await asyncio.wait_for(reader.readexactly(n), IO) == body
        writer.write(b"\0\0\0\0")
        assert await asyncio.wait_for(reader.read(), IO) == b""
        writer.close()
        server.close()
        await server.wait_closed()

    run_on(lp, main())
    if reader_cls is OwnWakeup:
        assert OwnWakeup.wakeups > 0
    if reader_cls is OwnFeed:
        assert OwnFeed.fed == sum(sizes) + 4 * len(sizes)


class Collect(asyncio.Protocol):
    def __init__(self, loop):
        self.data = bytearray()
        self.more = asyncio.Event()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        assert type(data) is bytes
        self.data += data
        self.more.set()

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_protocol_small_and_large_records(lp, certs, direct):
    """A plain Protocol gets bytes objects with every record, small ones
    one by one and a burst of them gathered, in order."""
    parts = [blob(n, n) for n in (1, 50, 3000, 16 * KIB, 70 * KIB)] + [b"z" * 10] * 50

    async def handler(reader, writer):
        for p in parts:
            writer.write(p)
        await writer.drain()
        await reader.read()
        writer.close()

    async def main():
        server = await asyncio.start_server(handler, LOCAL, 0, ssl=certs.server_ctx())
        port = server.sockets[0].getsockname()[1]
        t, p = await lp.create_connection(lambda: Collect(lp), LOCAL, port,
                                          ssl=certs.client_ctx(), server_hostname="localhost")
        want = b"".join(parts)
        while len(p.data) < len(want):
            p.more.clear()
            await asyncio.wait_for(p.more.wait(), IO)
        assert bytes(p.data) == want
        t.close()
        await asyncio.wait_for(p.lost, IO)
        server.close()
        await server.wait_closed()

    run_on(lp, main())


class RawTransport:
    """The raw transport under an SSLProtocol driven by hand: records what
    the SSL layer writes and how it closes (no socket: the ciphertext goes
    to an ssl.SSLObject peer in memory)."""

    def __init__(self):
        self.out = bytearray()
        self.closed_with = []

    def write(self, data):
        self.out += data

    def get_extra_info(self, name, default=None):
        return default

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def is_closing(self):
        return bool(self.closed_with)

    def abort(self):
        self.closed_with.append(None)

    def close(self):
        self.closed_with.append(None)

    def _force_close(self, exc):
        self.closed_with.append(exc)


class Buffered(asyncio.BufferedProtocol):
    def __init__(self):
        self.buf = bytearray(100)
        self.got = bytearray()
        self.eof = 0

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.got += self.buf[:nbytes]

    def eof_received(self):
        self.eof += 1


def _app(kind, loop):
    if kind == "protocol":
        return asyncio.Protocol()
    if kind == "buffered":
        return Buffered()
    reader = asyncio.StreamReader(loop=loop)
    proto = asyncio.StreamReaderProtocol(reader, loop=loop)
    proto.test_reader = reader      # the protocol holds it weakly
    return proto


def _connected(lp, certs, server_side, app):
    """An SSLProtocol driven by hand, its handshake done with an
    ssl.SSLObject peer in memory: (proto, raw, peer, peer_in, peer_out)."""
    from ringline.aio import tls as rl_tls

    waiter = lp.create_future()
    ctx = certs.server_ctx() if server_side else certs.client_ctx()
    proto = rl_tls.SSLProtocol(lp, app, ctx, waiter, server_side=server_side,
                               server_hostname=None if server_side else "localhost")
    raw = RawTransport()
    proto.connection_made(raw)
    pin, pout = ssl.MemoryBIO(), ssl.MemoryBIO()
    if server_side:
        peer = certs.client_ctx().wrap_bio(pin, pout, server_hostname="localhost")
    else:
        peer = certs.server_ctx().wrap_bio(pin, pout, server_side=True)
    for _ in range(10):
        pin.write(bytes(raw.out))
        raw.out.clear()
        try:
            peer.do_handshake()
        except ssl.SSLWantReadError:
            pass
        if pout.pending:
            proto.data_received(pout.read())
        if waiter.done() and not raw.out:
            break
    assert waiter.done() and waiter.exception() is None
    return proto, raw, peer, pin, pout


def _errors(raw):
    return [(type(e), str(e), getattr(e, "reason", None)) for e in raw.closed_with]


def _write_after_fatal_error(lp, certs, kind):
    """A server SSLProtocol whose peer sent a corrupted record (a fatal
    error, the raw transport force-closed but connection_lost not yet
    called), then written to: the errors the raw transport is closed with."""
    proto, raw, peer, pin, pout = _connected(lp, certs, True, _app(kind, lp))
    peer.write(b"hello")
    record = bytearray(pout.read())
    record[-3] ^= 1
    proto.data_received(bytes(record))
    assert len(raw.closed_with) == 1 and isinstance(raw.closed_with[0], ssl.SSLError)
    proto._get_app_transport().write(b"after")
    direct_used = proto._direct_calls()
    proto.connection_lost(None)
    return direct_used, _errors(raw)


def _fatal_alert_received(lp, certs, kind):
    """A client SSLProtocol whose record the server found corrupted: the
    server's fatal alert arrives, then a write: the errors."""
    proto, raw, peer, pin, pout = _connected(lp, certs, False, _app(kind, lp))
    proto._get_app_transport().write(b"x")
    record = bytearray(raw.out)
    raw.out.clear()
    record[-3] ^= 1
    pin.write(bytes(record))
    with pytest.raises(ssl.SSLError):
        peer.read(100)
    proto.data_received(pout.read())          # the alert
    proto._get_app_transport().write(b"after")
    direct_used = proto._direct_calls()
    proto.connection_lost(None)
    return direct_used, _errors(raw)


def _close_notify_received(lp, certs, kind):
    """Data then the peer's close_notify in one piece: what the application
    got, and that the SSL layer answered with its own close_notify."""
    app = _app(kind, lp)
    proto, raw, peer, pin, pout = _connected(lp, certs, True, app)
    peer.write(b"last words")
    try:
        peer.unwrap()
    except ssl.SSLWantReadError:
        pass
    proto.data_received(pout.read())
    if kind == "protocol":
        got = None
    elif kind == "buffered":
        got = (bytes(app.got), app.eof)
    else:
        got = (bytes(app.test_reader._buffer), app.test_reader._eof)
    answered = len(raw.out) > 0
    direct_used = proto._direct_calls()
    proto.connection_lost(None)
    return direct_used, (got, answered, _errors(raw))


@pytest.mark.parametrize("kind", ["protocol", "buffered", "stream"])
@pytest.mark.parametrize("case", [_write_after_fatal_error, _fatal_alert_received,
                                  _close_notify_received])
def test_direct_calls_fail_as_the_ssl_module(lp, certs, case, kind):
    """SSL_read/SSL_write called directly fail on a record that does not
    decrypt, on a fatal alert, at a close_notify: the ssl module's calls,
    made after them, return or raise as they would have alone: the raw
    transport is closed with the same exceptions, same messages, the
    application gets the same bytes and EOF, as without direct calls."""
    from ringline.aio import tls as rl_tls

    try:
        rl_tls._set_bio_direct(True)
        direct_used, with_direct = case(lp, certs, kind)
        rl_tls._set_bio_direct(False)
        plain_used, without = case(lp, certs, kind)
    finally:
        rl_tls._set_bio_direct(True)
    assert plain_used == (False, False)
    if sys.implementation.name == "cpython":
        assert direct_used == (True, True)
    assert with_direct == without
    if case is _close_notify_received:
        got, answered, errors = with_direct
        assert answered and not errors
        if kind != "protocol":
            assert got == ((b"last words", 1) if kind == "buffered" else (b"last words", True))
    else:
        assert len(with_direct) == 2
        assert all(issubclass(t, ssl.SSLError) for t, _, _ in with_direct)


def test_env_turns_direct_calls_off(certs):
    """RINGLINE_TLS_DIRECT=0 (read at import) keeps the ssl module's calls:
    a connection made then uses none, and still carries its bytes."""
    loops.require_ringline()
    code = f"""
import asyncio, ssl, ringline
from ringline.aio import tls
server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server_ctx.load_cert_chain({str(certs.cert)!r}, {str(certs.key)!r})
client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
client_ctx.load_verify_locations({str(certs.cert)!r})

async def handle(reader, writer):
    writer.write(await reader.readexactly(5))

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
    writer.write(b"hello")
    got = await reader.readexactly(5)
    print(writer.transport._ssl_protocol._direct_calls(), got, tls._set_bio_direct(True))
    writer.close()
    server.close()

ringline.run(main())
"""
    env = dict(os.environ, RINGLINE_TLS_DIRECT="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "(False, False) b'hello' False"
