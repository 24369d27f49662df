"""TLS on each event loop, against OpenSSL's own programs.

The peers are ``openssl s_client`` and ``openssl s_server`` (a TLS stack that
shares nothing with Python's ``ssl`` module or the loop under test), driven
through blocking pipes in threads so that these tests depend on nothing but
TCP and TLS in the loop.  A self-signed certificate for ``localhost`` /
127.0.0.1 is made with the ``openssl`` CLI.

Covered: ``loop.create_server(ssl=)`` and ``asyncio.start_server(ssl=)``
against ``s_client`` (with and without a client certificate), a client
(``open_connection(ssl=, server_hostname=)``) against ``s_server``, the
transport's TLS extra info, STARTTLS upgrades (server side against
``s_client -starttls smtp``; both sides with ``loop.start_tls``),
``ssl_handshake_timeout`` on both sides, and 8 MiB byte-exact transfers.

Without the ``openssl`` program the tests are skipped -- or fail, under
``CI=true``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import socket
import ssl
import subprocess
import threading
import time

import pytest

from tests.support import loops, run_on
from tests.support.tls import make_certs

pytestmark = pytest.mark.timeout(90)

LOCAL = "127.0.0.1"
IO_TIMEOUT = 10.0
MIB = 1 << 20


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------




def openssl_exe():
    return loops.require_program("openssl", "openssl")


def blob(n, seed):
    return random.Random(seed).randbytes(n)


def free_port():
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


def _listening(port):
    """Whether something listens on 127.0.0.1:port (read from /proc, without
    connecting: a probe connection would use up ``s_server -naccept 1``)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return any(ln.split()[1] == want and ln.split()[3] == "0A" for ln in list(f)[1:])


@pytest.fixture(autouse=True)
def _stdin_fd_is_open():
    """A closed fd 0 (left by a refused ringline ``Ring()`` construction, see
    test_apps.py::test_refused_ring_construction_leaves_fd_0_alone) would be
    handed to the next socket or pipe; libuv (uvloop) aborts the process when
    it later closes an fd <= 2.  Put /dev/null back on fd 0 first (conftest's
    gc.collect() after each test is what runs such a Ring's __dealloc__)."""
    try:
        os.fstat(0)
    except OSError:
        fd = os.open(os.devnull, os.O_RDONLY)
        if fd != 0:
            os.dup2(fd, 0)
            os.close(fd)
    yield


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls"), key="rsa")


class OpenSSL:
    """An ``openssl`` child: stdin written and stdout collected by threads,
    so waiting on it never involves the event loop under test."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [openssl_exe(), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        self.out = bytearray()
        self.err = bytearray()
        self._cond = threading.Condition()
        self._eof = False
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.out),
                                          daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self.err),
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self, pipe, buf):
        while chunk := pipe.read1(1 << 16):
            with self._cond:
                buf += chunk
                self._cond.notify_all()
        with self._cond:
            if buf is self.out:
                self._eof = True
            self._cond.notify_all()

    def wait_output(self, n, timeout=IO_TIMEOUT):
        """Block until ``n`` bytes came out (or EOF); return them all."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.out) >= n or self._eof, timeout)
            if not ok or len(self.out) < n:
                raise AssertionError(
                    f"openssl wrote {len(self.out)} of {n} bytes; stderr: {self.stderr()}")
            return bytes(self.out)

    async def output(self, n, timeout=IO_TIMEOUT):
        return await asyncio.to_thread(self.wait_output, n, timeout)

    def stderr(self):
        with self._cond:
            return bytes(self.err[-2000:]).decode(errors="replace")

    def write(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    async def send(self, data):
        await asyncio.to_thread(self.write, data)

    def close_stdin(self):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:  # pragma: no cover
            pass

    def wait(self, timeout=IO_TIMEOUT):
        return self.proc.wait(timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait()
        self.close_stdin()
        for t in self._threads:
            t.join(5)


def s_client(certs, port, *extra):
    return OpenSSL("s_client", "-connect", f"{LOCAL}:{port}", "-servername", "localhost",
                   "-CAfile", certs.cert, "-verify_return_error", "-nocommands", *extra)


def s_server(certs, *extra):
    """``openssl s_server`` for one connection, on a port it is known to listen on."""
    for _ in range(5):
        port = free_port()
        srv = OpenSSL("s_server", "-accept", f"{LOCAL}:{port}", "-cert", certs.cert,
                      "-key", certs.key, "-naccept", "1", *extra)
        deadline = time.monotonic() + IO_TIMEOUT
        while srv.proc.poll() is None and time.monotonic() < deadline:
            if _listening(port):
                return srv, port
            time.sleep(0.01)
        srv.stop()   # lost the port to someone else: try another
    raise AssertionError(f"openssl s_server did not start: {srv.stderr()}")


def check_tls_extra(transport, ctx, *, peer_cn=None):
    """The TLS keys of get_extra_info, as asyncio's SSL transports fill them."""
    assert transport.get_extra_info("sslcontext") is ctx
    obj = transport.get_extra_info("ssl_object")
    assert isinstance(obj, ssl.SSLObject)
    assert obj.version() in ("TLSv1.2", "TLSv1.3")
    cipher = transport.get_extra_info("cipher")
    assert isinstance(cipher, tuple) and len(cipher) == 3 and cipher == obj.cipher()
    assert transport.get_extra_info("compression") == obj.compression()
    peercert = transport.get_extra_info("peercert")
    if peer_cn is None:
        assert peercert is None
    else:
        assert ((("commonName", peer_cn),),) == tuple(
            x for x in peercert["subject"] if x[0][0] == "commonName")
    sock = transport.get_extra_info("socket")
    assert sock is not None and sock.family == socket.AF_INET
    assert transport.get_extra_info("sockname")[0] == LOCAL
    assert transport.get_extra_info("peername")[0] == LOCAL


# ---------------------------------------------------------------------------
# servers on the loop, openssl s_client as the peer
# ---------------------------------------------------------------------------


class TLSEcho(asyncio.Protocol):
    instances: list[TLSEcho] = []

    def __init__(self):
        self.lost = asyncio.get_running_loop().create_future()
        self.eof = False
        self.received = 0
        TLSEcho.instances.append(self)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.received += len(data)
        self.transport.write(data)

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.mark.parametrize("client_cert", [False, True], ids=["anon-client", "client-cert"])
def test_create_server_ssl_vs_s_client(loop, certs, client_cert):
    server_ctx = certs.server_ctx(require_client_cert=client_cert)
    TLSEcho.instances = []

    async def main():
        server = await loop.create_server(TLSEcho, LOCAL, 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        extra = ["-cert", certs.cert, "-key", certs.key] if client_cert else []
        peer = s_client(certs, port, "-quiet", "-no_ign_eof", *extra)
        try:
            lines = b"hello over TLS\n" + b"".join(b"line %d\n" % i for i in range(100))
            await peer.send(lines)
            assert await peer.output(len(lines)) == lines
            [proto] = TLSEcho.instances
            check_tls_extra(proto.transport, server_ctx,
                            peer_cn="localhost" if client_cert else None)
            peer.close_stdin()            # s_client: close_notify, then exits
            assert await asyncio.to_thread(peer.wait) == 0, peer.stderr()
            await asyncio.wait_for(proto.lost, IO_TIMEOUT)
            assert proto.received == len(lines)
        finally:
            peer.stop()
            server.close()
            await server.wait_closed()

    run_on(loop, main())


def test_start_server_ssl_vs_s_client_8mib(loop, certs):
    """asyncio streams over TLS, 8 MiB of binary data echoed byte-exact
    through OpenSSL's client (encrypts to us, decrypts what we send)."""
    server_ctx = certs.server_ctx()
    data = blob(8 * MIB, 8)
    seen = {}

    async def handler(reader, writer):
        seen["writer"] = writer
        n = 0
        while chunk := await reader.read(256 * 1024):
            n += len(chunk)
            writer.write(chunk)
            await writer.drain()
        seen["n"] = n
        writer.close()

    async def main():
        server = await asyncio.start_server(handler, LOCAL, 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        peer = s_client(certs, port, "-quiet")    # -quiet: binary-safe, ignores stdin EOF
        try:
            writer = asyncio.create_task(peer.send(data))
            got = await peer.output(len(data), timeout=20)
            await writer
            assert len(got) == len(data)
            assert got == data
            check_tls_extra(seen["writer"].transport, server_ctx)
            assert seen["writer"].get_extra_info("cipher") is not None
        finally:
            peer.stop()
            server.close()
            await server.wait_closed()

    run_on(loop, main(), timeout=60)


def test_tls_runs_on_the_ring_transport(certs):
    """create_server(ssl=) and open_connection(ssl=) must put the raw TCP
    under SSLProtocol on ringline's TCPTransport (multishot recv, ordered
    sends), not on asyncio's _SelectorSocketTransport over POLL_ADD readiness
    (asyncio's selector loop builds that one directly in _make_ssl_transport,
    which ringline overrides)."""
    ringline = loops.require_ringline()
    lp = ringline.new_event_loop()
    raw_types = []

    async def handler(reader, writer):
        raw_types.append(type(writer.transport._ssl_protocol._transport).__name__)
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handler, LOCAL, 0, ssl=certs.server_ctx())
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection(
                LOCAL, port, ssl=certs.client_ctx(), server_hostname="localhost")
            raw_types.append(type(writer.transport._ssl_protocol._transport).__name__)
            writer.write(b"ping\n")
            assert await reader.readline() == b"ping\n"
            writer.close()
            await writer.wait_closed()
        await server.wait_closed()

    try:
        run_on(lp, main())
    finally:
        lp.close()
    assert raw_types == ["TCPTransport", "TCPTransport"]


# ---------------------------------------------------------------------------
# clients on the loop, openssl s_server as the peer
# ---------------------------------------------------------------------------


def test_open_connection_ssl_vs_s_server_rev(loop, certs):
    """``open_connection(ssl=, server_hostname=)`` against ``s_server -rev``
    (echoes every line reversed): 8 MiB of lines both ways."""
    client_ctx = certs.client_ctx()
    rng = random.Random(5)
    lines = [base64.b64encode(rng.randbytes(rng.randrange(1, 9000))) + b"\n"
             for _ in range(1000)]
    lines = [ln for ln in lines if not ln.startswith(b"CLOSE")]
    while sum(map(len, lines)) < 8 * MIB:
        lines += lines[: 200]
    srv, port = s_server(certs, "-rev", "-quiet")

    async def main():
        reader, writer = await asyncio.open_connection(
            LOCAL, port, ssl=client_ctx, server_hostname="localhost")
        try:
            check_tls_extra(writer.transport, client_ctx, peer_cn="localhost")
            writer.write(b"hello\n")
            assert await reader.readline() == b"olleh\n"

            async def send_all():
                for ln in lines:
                    writer.write(ln)
                    await writer.drain()

            sender = asyncio.create_task(send_all())
            for i, ln in enumerate(lines):
                got = await reader.readline()
                assert got == ln[:-1][::-1] + b"\n", f"line {i}"
            await sender
            writer.write(b"CLOSE\n")
            await writer.drain()
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ssl.SSLError, ConnectionError):  # pragma: no cover - peer may reset
                pass

    try:
        run_on(loop, main(), timeout=60)
    finally:
        srv.stop()


def test_open_connection_ssl_8mib_to_s_server(loop, certs):
    """8 MiB of binary from our TLS client, as ``s_server`` decrypts it."""
    client_ctx = certs.client_ctx()
    data = blob(8 * MIB, 9)
    srv, port = s_server(certs, "-quiet")

    async def main():
        reader, writer = await asyncio.open_connection(
            LOCAL, port, ssl=client_ctx, server_hostname="localhost")
        for off in range(0, len(data), 1 << 18):
            writer.write(data[off:off + (1 << 18)])
            await writer.drain()
        got = await srv.output(len(data), timeout=20)
        assert got[: len(data)] == data
        writer.close()
        try:
            await writer.wait_closed()
        except (ssl.SSLError, ConnectionError):  # pragma: no cover
            pass

    try:
        run_on(loop, main(), timeout=60)
    finally:
        srv.stop()


def test_client_rejects_wrong_hostname(loop, certs):
    srv, port = s_server(certs, "-quiet")

    async def main():
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(LOCAL, port, ssl=certs.client_ctx(),
                                          server_hostname="not-localhost.test")

    try:
        run_on(loop, main())
    finally:
        srv.stop()


# ---------------------------------------------------------------------------
# STARTTLS
# ---------------------------------------------------------------------------


def test_start_tls_server_side_vs_s_client_starttls_smtp(request, loop, loop_name, certs):
    """A plain-TCP SMTP-ish server upgraded with StreamWriter.start_tls(),
    against ``s_client -starttls smtp`` (which refuses to go on unless the
    dialogue before the upgrade is right)."""
    server_ctx = certs.server_ctx()
    upgraded = loop.create_future()

    async def handler(reader, writer):
        try:
            writer.write(b"220 ringline ESMTP test\r\n")
            ehlo = await reader.readline()
            assert ehlo.upper().startswith((b"EHLO", b"HELO")), ehlo
            writer.write(b"250-ringline greets you\r\n250 STARTTLS\r\n")
            assert (await reader.readline()).strip().upper() == b"STARTTLS"
            writer.write(b"220 go ahead\r\n")
            await writer.drain()
            await writer.start_tls(server_ctx)
        except Exception as exc:    # reported by the test, not the loop
            upgraded.set_exception(exc)
            writer.close()
            return
        upgraded.set_result(writer.transport)
        while line := await reader.readline():
            writer.write(b"TLS:" + line)
            await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handler, LOCAL, 0)
        port = server.sockets[0].getsockname()[1]
        peer = s_client(certs, port, "-starttls", "smtp", "-quiet")
        try:
            transport = await asyncio.wait_for(upgraded, IO_TIMEOUT)
            await peer.send(b"after upgrade\n")
            out = await peer.output(len(b"TLS:after upgrade\n"))
            assert out.endswith(b"TLS:after upgrade\n"), out
            check_tls_extra(transport, server_ctx)
        finally:
            peer.stop()
            server.close()
            await server.wait_closed()

    run_on(loop, main())


def test_loop_start_tls_both_sides(request, loop, loop_name, certs):
    """loop.start_tls on a server and a client transport (both on the loop
    under test): plaintext first, then the same connection encrypted."""
    server_ctx, client_ctx = certs.server_ctx(), certs.client_ctx()

    class Plain(asyncio.Protocol):
        def __init__(self):
            self.buf = bytearray()
            self.waiter = None

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.buf += data
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

        async def read_until(self, n):
            while len(self.buf) < n:
                self.waiter = asyncio.get_running_loop().create_future()
                await asyncio.wait_for(self.waiter, IO_TIMEOUT)
            out = bytes(self.buf[:n])
            del self.buf[:n]
            return out

    server_side = {}

    class Upgrader(Plain):
        def data_received(self, data):
            super().data_received(data)
            if bytes(self.buf) == b"STARTTLS\n":
                self.buf.clear()
                self.transport.write(b"OK\n")
                server_side["task"] = asyncio.ensure_future(self.upgrade())

        async def upgrade(self):
            tr = await loop.start_tls(self.transport, self, server_ctx, server_side=True)
            self.transport = tr
            server_side["transport"] = tr
            data = await self.read_until(4 * MIB)
            tr.write(data[::-1])

    async def main():
        server = await loop.create_server(Upgrader, LOCAL, 0)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(Plain, LOCAL, port)
        try:
            transport.write(b"STARTTLS\n")
            assert await proto.read_until(3) == b"OK\n"
            tls = await loop.start_tls(transport, proto, client_ctx,
                                       server_hostname="localhost")
            proto.transport = tls
            check_tls_extra(tls, client_ctx, peer_cn="localhost")
            data = blob(4 * MIB, 4)
            tls.write(data)
            assert await proto.read_until(len(data)) == data[::-1]
            await server_side["task"]
            check_tls_extra(server_side["transport"], server_ctx)
            tls.close()
            server_side["transport"].close()
        finally:
            task = server_side.get("task")
            if task is not None and task.done() and not task.cancelled():
                task.exception()    # retrieved: the test reports it, not the loop
            proto.transport.close()
            server.close()
            await server.wait_closed()

    run_on(loop, main())


# ---------------------------------------------------------------------------
# handshake timeouts
# ---------------------------------------------------------------------------


def test_server_ssl_handshake_timeout(loop, certs):
    """A TCP client that never says ClientHello is dropped after
    ssl_handshake_timeout."""

    async def main():
        server = await loop.create_server(asyncio.Protocol, LOCAL, 0, ssl=certs.server_ctx(),
                                          ssl_handshake_timeout=0.3)
        port = server.sockets[0].getsockname()[1]

        def silent_client():
            with socket.create_connection((LOCAL, port), timeout=IO_TIMEOUT) as s:
                t0 = time.monotonic()
                try:
                    rest = s.recv(1024)
                except ConnectionResetError:
                    rest = b""
                return rest, time.monotonic() - t0

        try:
            rest, elapsed = await asyncio.to_thread(silent_client)
            assert rest == b""
            assert 0.2 < elapsed < 5, elapsed
        finally:
            server.close()
            await server.wait_closed()

    run_on(loop, main())


def test_client_ssl_handshake_timeout(loop, certs):
    """A server that accepts and never answers the ClientHello: the client
    gives up after ssl_handshake_timeout."""
    ls = socket.create_server((LOCAL, 0))
    port = ls.getsockname()[1]

    async def main():
        t0 = time.monotonic()
        with pytest.raises((ConnectionAbortedError, TimeoutError, ConnectionError)):
            await asyncio.open_connection(LOCAL, port, ssl=certs.client_ctx(),
                                          server_hostname="localhost",
                                          ssl_handshake_timeout=0.3)
        assert time.monotonic() - t0 < 5

    try:
        run_on(loop, main())
    finally:
        ls.close()


def test_ssl_handshake_timeout_needs_ssl(loop):
    async def main():
        with pytest.raises(ValueError):
            await loop.create_server(asyncio.Protocol, LOCAL, 0, ssl_handshake_timeout=1)
        with pytest.raises(ValueError):
            await loop.create_connection(asyncio.Protocol, LOCAL, 1, ssl_handshake_timeout=1)

    run_on(loop, main())


# ---------------------------------------------------------------------------
# both ends on the loop: full-duplex bulk
# ---------------------------------------------------------------------------


def test_tls_8mib_full_duplex(loop, certs):
    """Two TLS connections, each moving 8 MiB in both directions at once."""
    server_ctx, client_ctx = certs.server_ctx(), certs.client_ctx()
    size = 8 * MIB

    async def handler(reader, writer):
        # Send our own 8 MiB while reading the client's: both directions at once.
        seed = int.from_bytes(await reader.readexactly(4), "big")
        out = blob(size, seed + 1)

        async def send():
            for off in range(0, size, 1 << 17):
                writer.write(out[off:off + (1 << 17)])
                await writer.drain()

        sender = asyncio.create_task(send())
        got = await reader.readexactly(size)
        await sender
        writer.write(b"OK" if got == blob(size, seed) else b"NO")
        await writer.drain()
        writer.close()

    async def client(port, seed):
        reader, writer = await asyncio.open_connection(
            LOCAL, port, ssl=client_ctx, server_hostname="localhost")
        data = blob(size, seed)
        writer.write(seed.to_bytes(4, "big"))

        async def send():
            for off in range(0, size, 1 << 16):
                writer.write(data[off:off + (1 << 16)])
                await writer.drain()

        sender = asyncio.create_task(send())
        got = await reader.readexactly(size)
        await sender
        verdict = await reader.readexactly(2)
        writer.close()
        try:
            await writer.wait_closed()
        except (ssl.SSLError, ConnectionError):  # pragma: no cover
            pass
        return got == blob(size, seed + 1) and verdict == b"OK"

    async def main():
        server = await asyncio.start_server(handler, LOCAL, 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        async with server:
            assert await asyncio.gather(client(port, 100), client(port, 200)) == [True, True]
        await server.wait_closed()

    run_on(loop, main(), timeout=60)

