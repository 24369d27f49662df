"""TLS on the native face: ``serve(ssl=)``, ``connect(ssl=)``, ``tls_info()``.

Real peers throughout: ringline's own client and server, the stdlib's
blocking ``ssl`` sockets in a thread, and the ``openssl s_client`` program.
Certificates are made by ``openssl`` per test (tests/support/tls.py).  Each
test runs on the io_uring backend and on the portable one (native_backend);
the ones that read the ring's counters or resources are io_uring only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import ssl
import subprocess
import threading
import time

import pytest

import ringline
from ringline import Config
from ringline.errors import (
    ConfigError,
    ConnectionClosed,
    TLSCertificateError,
    TLSHandshakeError,
    TLSHandshakeTimeout,
)
from tests.support import HOST, IO_TIMEOUT, pattern, run, until
from tests.support.backends import uring_only
from tests.support.loops import require_program
from tests.support.tls import make_certs

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("native_backend")]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls"))


def _counts(loop) -> tuple[int, int] | None:
    """(handshakes, failures) of the ring's NetState; None on portable."""
    if ringline.backend(loop) != "uring":
        return None
    ns = loop._net_state
    return ns.tls_handshakes, ns.tls_handshake_failures


async def echo(conn: ringline.Connection) -> None:
    while data := await conn.recv(1 << 20):
        conn.send_nowait(data)
        await conn.drain()


def _client_ctx(certs, alpn=None) -> ssl.SSLContext:
    ctx = certs.client_ctx()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------

def test_echo_small_and_large_messages(certs):
    """Plaintext both ways through recv/recv_exactly/with_data/send*:
    sizes around a record (16 KiB) and the 256 KiB encrypt chunk, in
    order, with send futures resolving with the plaintext byte count."""
    sizes = [1, 64, 1000, 16383, 16384, 16385, 100_000, 262_144, 262_145, 3_000_000]

    async def main():
        srv = await ringline.serve(echo, HOST, 0, ssl=certs.server_ctx())
        c = await ringline.connect(HOST, srv.port, ssl=_client_ctx(certs),
                                   server_hostname="localhost")
        try:
            for i, n in enumerate(sizes):
                msg = pattern(n, seed=i)
                fut = c.send(msg) if i % 2 else c.send(bytearray(msg))
                got = await asyncio.wait_for(c.recv_exactly(n), IO_TIMEOUT)
                assert got == msg, n
                assert await fut == n
            # Many small writes queued back to back, read through with_data.
            parts = [pattern(37, seed=k) for k in range(200)]
            for p in parts:
                c.send_nowait(p)
            want = b"".join(parts)
            seen = bytearray()

            def parse(view):
                seen.extend(view)
                return len(view)

            while len(seen) < len(want):
                await asyncio.wait_for(c.with_data(parse), IO_TIMEOUT)
            assert bytes(seen) == want
            total = await c.send_parts([b"abc", memoryview(b"defg"), bytearray(b"h")])
            assert total == 8
            assert await c.recv_exactly(8) == b"abcdefgh"
            # send_chain on TLS: encrypted in order, plaintext total.
            total = await c.send_chain([b"ij", bytearray(b"klm"), memoryview(b"n")])
            assert total == 6
            assert await c.recv_exactly(6) == b"ijklmn"
        finally:
            c.close()
            await asyncio.wait_for(c.wait_closed(), IO_TIMEOUT)
            await srv.shutdown(2.0)
        counts = _counts(asyncio.get_running_loop())
        if counts is not None:
            assert counts == (2, 0)

    run(main)


def test_concurrent_clients_bulk_with_backpressure(certs):
    """Eight clients at once, each streaming 2 MiB in 64 KiB writes with
    drain() while reading the echo: no byte lost or reordered."""
    async def client(port, seed):
        c = await ringline.connect(HOST, port, ssl=_client_ctx(certs),
                                   server_hostname="localhost")
        data = pattern(2 << 20, seed=seed)
        got = bytearray()

        async def reader():
            while len(got) < len(data):
                got.extend(await c.recv(1 << 20))

        rt = asyncio.ensure_future(reader())
        for off in range(0, len(data), 65536):
            c.send_nowait(data[off:off + 65536])
            await c.drain()
        await asyncio.wait_for(rt, 30)
        assert bytes(got) == data
        c.close()
        await c.wait_closed()

    async def main():
        srv = await ringline.serve(echo, HOST, 0, ssl=certs.server_ctx())
        try:
            await asyncio.gather(*(client(srv.port, s) for s in range(8)))
        finally:
            await srv.shutdown(2.0)

    run(main)


def test_tls_info_alpn_sni_both_sides(certs):
    seen = {}

    async def handler(conn):
        seen.setdefault("server", conn.tls_info())
        await conn.recv()

    async def main():
        sctx = certs.server_ctx()
        sctx.set_alpn_protocols(["h2", "http/1.1"])
        srv = await ringline.serve(handler, HOST, 0, ssl=sctx)
        c = await ringline.connect(HOST, srv.port, ssl=_client_ctx(certs, ["http/1.1"]),
                                   server_hostname="localhost")
        info = c.tls_info()
        await until(lambda: "server" in seen)
        c.close()
        await c.wait_closed()
        await srv.shutdown(2.0)
        plain_srv = await ringline.serve(handler, HOST, 0)
        p = await ringline.connect(HOST, plain_srv.port)
        assert p.tls_info() is None
        p.close()
        await plain_srv.shutdown(2.0)
        return info

    info = run(main)
    s = seen["server"]
    for i in (info, s):
        assert i.version in ("TLSv1.3", "TLSv1.2")
        assert i.cipher
        assert i.alpn == "http/1.1"
        assert i.sni == "localhost"
    assert not info.server_side and s.server_side
    assert info.peer_cert["subject"] == ((("commonName", "localhost"),),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.version = "x"      # type: ignore[misc]


def test_stdlib_peer_sees_close_notify(certs):
    """A blocking stdlib TLS client (suppress_ragged_eofs off: a FIN without
    close_notify would raise SSLEOFError) gets the reply and then a clean
    end of stream when the handler returns."""
    async def handler(conn):
        line = await conn.recv()
        conn.send_nowait(b"re:" + line)

    def client(port):
        ctx = _client_ctx(certs)
        with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost",
                                suppress_ragged_eofs=False) as s:
            s.sendall(b"hello")
            got = b""
            while True:
                chunk = s.recv(100)     # SSLEOFError without close_notify
                if not chunk:
                    break
                got += chunk
            return got

    async def main():
        srv = await ringline.serve(handler, HOST, 0, ssl=certs.server_ctx())
        try:
            return await asyncio.to_thread(client, srv.port)
        finally:
            await srv.shutdown(2.0)

    assert run(main) == b"re:hello"


def test_openssl_s_client_against_the_server(certs):
    """``openssl s_client`` as a real peer: it verifies our certificate,
    negotiates ALPN, gets its line echoed, and exits 0 at our close_notify."""
    exe = require_program("openssl", "openssl")
    seen = {}

    async def handler(conn):
        seen["info"] = conn.tls_info()
        line = await conn.recv()
        conn.send_nowait(b"echo:" + line)

    def client(port):
        p = subprocess.Popen(
            [exe, "s_client", "-connect", f"{HOST}:{port}", "-servername", "localhost",
             "-CAfile", certs.cert, "-verify_return_error", "-alpn", "h2", "-quiet"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            p.stdin.write(b"ping\n")
            p.stdin.flush()
            out, err = p.communicate(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        return p.returncode, out, err

    async def main():
        srv = await ringline.serve(handler, HOST, 0, ssl=certs.server_ctx())
        try:
            return await asyncio.to_thread(client, srv.port)
        finally:
            await srv.shutdown(2.0)

    rc, out, err = run(main)
    assert out == b"echo:ping\n", (out, err)
    assert rc == 0, err
    assert seen["info"].sni == "localhost"


def test_client_against_openssl_s_server(certs, tmp_path):
    """ringline.connect(ssl=) against ``openssl s_server`` (a real server):
    the handshake verifies, and bytes go both ways."""
    exe = require_program("openssl", "openssl")
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    srv = subprocess.Popen(
        [exe, "s_server", "-accept", f"{HOST}:{port}", "-cert", certs.cert, "-key", certs.key,
         "-naccept", "1", "-quiet", "-alpn", "h2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        async def main():
            deadline = time.monotonic() + 10
            while True:
                try:
                    c = await ringline.connect(HOST, port, ssl=_client_ctx(certs, ["h2"]),
                                               server_hostname="localhost")
                    break
                except ConnectionRefusedError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
            info = c.tls_info()
            await c.send(b"from-ringline\n")
            # s_server -quiet echoes nothing back by itself; it prints what
            # it got and sends what its stdin gives.
            srv.stdin.write(b"from-openssl\n")
            srv.stdin.flush()
            got = b""
            while not got.endswith(b"\n"):
                got += await asyncio.wait_for(c.recv(), IO_TIMEOUT)
            c.close()
            await c.wait_closed()
            return info, got

        info, got = run(main)
        assert got == b"from-openssl\n"
        assert info.alpn == "h2"
        out, _ = srv.communicate(timeout=10)
        assert b"from-ringline" in out
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


# ---------------------------------------------------------------------------
# failures
# ---------------------------------------------------------------------------

def test_untrusted_certificate_and_wrong_hostname(certs):
    """The client gets TLSCertificateError (an ssl.SSLCertVerificationError
    and an ssl.SSLError); the server counts the failure and keeps serving."""
    async def main():
        loop = asyncio.get_running_loop()
        srv = await ringline.serve(echo, HOST, 0, ssl=certs.server_ctx())
        try:
            with pytest.raises(TLSCertificateError) as ei:
                await ringline.connect(HOST, srv.port, ssl=ssl.create_default_context(),
                                       server_hostname="localhost")
            assert isinstance(ei.value, ssl.SSLError)
            assert isinstance(ei.value, ssl.SSLCertVerificationError)
            assert "certificate" in str(ei.value).lower()
            with pytest.raises(TLSCertificateError) as ei:
                await ringline.connect(HOST, srv.port, ssl=_client_ctx(certs),
                                       server_hostname="wrong.example")
            assert "wrong.example" in str(ei.value) or "mismatch" in str(ei.value).lower()
            # ssl=True: the default (system CAs) context refuses it too.
            with pytest.raises(TLSCertificateError):
                await ringline.connect(HOST, srv.port, ssl=True, server_hostname="localhost")
            if _counts(loop) is not None:
                await until(lambda: _counts(loop)[1] == 6, what="6 failures (3 per side)")
            c = await ringline.connect(HOST, srv.port, ssl=_client_ctx(certs),
                                       server_hostname="localhost")
            await c.send(b"still serving")
            assert await c.recv_exactly(13) == b"still serving"
            c.close()
            await c.wait_closed()
            await until(lambda: srv.active == 0)
        finally:
            await srv.shutdown(2.0)

    run(main)


def test_plaintext_to_tls_port_is_a_counted_logged_close(certs, caplog):
    """A plaintext client: closed without the handler running, counted and
    logged (io_uring backend) at INFO on ringline.tls; the server goes on."""
    ran = []

    async def handler(conn):
        ran.append(conn)
        await echo(conn)

    def plaintext(port):
        with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            got = b""
            while chunk := s.recv(4096):
                got += chunk
            return got

    async def main():
        loop = asyncio.get_running_loop()
        srv = await ringline.serve(handler, HOST, 0, ssl=certs.server_ctx())
        try:
            got = await asyncio.to_thread(plaintext, srv.port)
            # Nothing echoed: at most a TLS alert record (content type 21).
            assert not got or got[0] == 21
            await until(lambda: srv.active == 0)
            assert ran == []
            if _counts(loop) is not None:
                assert _counts(loop) == (0, 1)
            c = await ringline.connect(HOST, srv.port, ssl=_client_ctx(certs),
                                       server_hostname="localhost")
            await c.send(b"ok")
            assert await c.recv_exactly(2) == b"ok"
            c.close()
            await c.wait_closed()
        finally:
            await srv.shutdown(2.0)
        return ringline.backend(loop)

    with caplog.at_level(logging.INFO, logger="ringline.tls"):
        backend = run(main)
    if backend == "uring":
        assert any("TLS handshake" in r.getMessage() and "failed" in r.getMessage()
                   for r in caplog.records if r.name == "ringline.tls")


@pytest.mark.parametrize("how", ["silent", "half-hello", "reset"])
def test_peer_vanishes_mid_handshake(certs, how):
    """A peer that connects and goes away (or never speaks) during the
    handshake: the server closes it (timeout for the silent one), counts
    it, runs no handler and holds nothing afterwards."""
    ran = []

    async def handler(conn):
        ran.append(conn)

    def peer(port):
        s = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        try:
            if how == "half-hello":
                s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                time.sleep(0.05)
            elif how == "reset":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return b""
            else:
                # Silent: the server's handshake timeout ends it (EOF here).
                return s.recv(100)
        finally:
            s.close()
        return b""

    async def main():
        loop = asyncio.get_running_loop()
        srv = await ringline.serve(handler, HOST, 0, ssl=certs.server_ctx())
        before = (loop._net_state.statistics()["streams"]
                  if ringline.backend(loop) == "uring" else None)
        t0 = time.monotonic()
        try:
            got = await asyncio.to_thread(peer, srv.port)
            assert got == b""
            # (The portable backend's server sees a connection only once its
            # handshake completed: accepted stays 0 there.)
            await until(lambda: srv.accepted == (before is not None) and srv.active == 0,
                        timeout=IO_TIMEOUT)
            if how == "silent":
                assert 0.2 < time.monotonic() - t0 < 5
            assert ran == []
            if before is not None:
                assert loop._net_state.statistics()["streams"] == before
                assert _counts(loop) == (0, 1)
        finally:
            await srv.shutdown(2.0)

    run(main, config=Config(tls_handshake_timeout=0.3))


def test_client_handshake_timeout_against_a_silent_server():
    """A TCP server that never answers the ClientHello: TLSHandshakeTimeout
    (a TimeoutError and an ssl.SSLError) after Config.tls_handshake_timeout."""
    ls = socket.socket()
    ls.bind((HOST, 0))
    ls.listen(8)
    held = []

    def accept():
        try:
            held.append(ls.accept()[0])
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()

    async def main():
        t0 = time.monotonic()
        with pytest.raises(TLSHandshakeTimeout) as ei:
            await ringline.connect(HOST, ls.getsockname()[1], ssl=ssl.create_default_context(),
                                   server_hostname="localhost")
        assert isinstance(ei.value, TimeoutError) and isinstance(ei.value, ssl.SSLError)
        assert 0.2 < time.monotonic() - t0 < 5

    try:
        run(main, config=Config(tls_handshake_timeout=0.3))
    finally:
        ls.close()
        for s in held:
            s.close()


def test_client_against_plaintext_server_is_handshake_error():
    """The server speaks plaintext: a TLSHandshakeError, not a hang."""
    async def plain(conn):
        conn.send_nowait(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    async def main():
        srv = await ringline.serve(plain, HOST, 0)
        try:
            with pytest.raises(TLSHandshakeError) as ei:
                await ringline.connect(HOST, srv.port, ssl=ssl.create_default_context(),
                                       server_hostname="localhost")
            assert isinstance(ei.value, ssl.SSLError)
            assert not isinstance(ei.value, TLSHandshakeTimeout)
        finally:
            await srv.shutdown(2.0)

    run(main)


def test_send_after_close_and_after_peer_close(certs):
    async def main():
        done = asyncio.Event()

        async def handler(conn):
            await conn.recv()
            done.set()

        srv = await ringline.serve(handler, HOST, 0, ssl=certs.server_ctx())
        c = await ringline.connect(HOST, srv.port, ssl=_client_ctx(certs),
                                   server_hostname="localhost")
        c.send_nowait(b"x")
        await asyncio.wait_for(done.wait(), IO_TIMEOUT)
        # The handler returned: its close_notify is end of stream here.
        assert await asyncio.wait_for(c.recv(), IO_TIMEOUT) == b""
        c.close()
        with pytest.raises(ConnectionClosed):
            c.send_nowait(b"late")
        with pytest.raises(ConnectionClosed):
            c.send(b"late")
        with pytest.raises(ConnectionClosed):
            c.send_parts([b"la", b"te"])
        await asyncio.wait_for(c.wait_closed(), IO_TIMEOUT)
        await srv.shutdown(2.0)

    run(main)


def test_arguments_and_config():
    assert Config().tls_handshake_timeout == 10.0
    assert Config().tls_shutdown_timeout == 5.0
    for bad in (0, -1.0, "1"):
        with pytest.raises(ConfigError):
            Config(tls_handshake_timeout=bad)

    async def main():
        with pytest.raises(TypeError):
            await ringline.connect(HOST, 1, ssl="yes")
        with pytest.raises(ValueError):
            await ringline.connect(HOST, 1, server_hostname="x")
        with pytest.raises(ValueError):
            # A client context (checks hostnames) cannot serve.
            await ringline.serve(echo, HOST, 0, ssl=ssl.create_default_context())

    run(main)


# ---------------------------------------------------------------------------
# io_uring internals: cancellation and resources
# ---------------------------------------------------------------------------

@uring_only("sweeps the ring's slots, fds and streams")
def test_connect_cancelled_mid_handshake_leaks_nothing(certs):
    from tests.support.cancel_sweep import sweep

    async def main():
        loop = asyncio.get_running_loop()

        async def getaddrinfo(*args, **kw):
            return socket.getaddrinfo(*args, **kw)
        loop.getaddrinfo = getaddrinfo      # no executor thread: k counts our steps

        srv = await ringline.serve(echo, HOST, 0, ssl=certs.server_ctx())
        ctx = _client_ctx(certs)

        async def after(outcome, conn):
            if conn is not None:
                assert conn.tls_info() is not None
                conn.close()
                await asyncio.wait_for(conn.wait_closed(), IO_TIMEOUT)
            # The server's side of it closes too (EOF, reset or close_notify).
            await until(lambda: srv.active == 0, timeout=IO_TIMEOUT)

        try:
            r = await sweep("connect ssl=", lambda: ringline.connect(
                HOST, srv.port, ssl=ctx, server_hostname="localhost"), after=after)
        finally:
            await srv.shutdown(2.0)
        assert r.cancelled >= 3 and r.done_at >= 3

    run(main)


@uring_only("reads the ring's NetState")
def test_close_is_bounded_when_the_peer_stops_reading(certs):
    """close() with megabytes queued to a peer that never reads: the stream
    is aborted after Config.tls_shutdown_timeout instead of hanging."""
    async def main():
        loop = asyncio.get_running_loop()
        accepted = loop.create_future()

        async def hold(conn):
            accepted.set_result(conn)
            await asyncio.sleep(30)

        srv = await ringline.serve(hold, HOST, 0, ssl=certs.server_ctx())
        # A raw TLS client (stdlib, in a thread) that handshakes, then sleeps.
        stop = threading.Event()

        def lazy():
            ctx = _client_ctx(certs)
            with socket.create_connection((HOST, srv.port)) as raw:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                with ctx.wrap_socket(raw, server_hostname="localhost"):
                    stop.wait(20)

        th = threading.Thread(target=lazy, daemon=True)
        th.start()
        conn = await asyncio.wait_for(accepted, IO_TIMEOUT)
        for _ in range(64):
            conn.send_nowait(b"z" * 65536)
        t0 = time.monotonic()
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 5)
        assert 0.3 < time.monotonic() - t0 < 4
        stop.set()
        th.join(10)
        await srv.shutdown(0.5)

    run(main, config=Config(tls_shutdown_timeout=0.5))


def test_recv_exactly_beyond_data_and_peer_eof(certs):
    """recv_exactly across many records, then IncompleteReadError at the
    peer's close_notify with the partial bytes."""
    async def handler(conn):
        conn.send_nowait(b"a" * 40000)
        conn.send_nowait(b"b" * 10)

    async def main():
        srv = await ringline.serve(handler, HOST, 0, ssl=certs.server_ctx())
        c = await ringline.connect(HOST, srv.port, ssl=_client_ctx(certs),
                                   server_hostname="localhost")
        assert await c.recv_exactly(40000) == b"a" * 40000
        with pytest.raises(asyncio.IncompleteReadError) as ei:
            await asyncio.wait_for(c.recv_exactly(20), IO_TIMEOUT)
        assert ei.value.partial == b"b" * 10
        c.close()
        await c.wait_closed()
        await srv.shutdown(2.0)

    run(main)


@uring_only("asyncio's SSL transports have no half-close (write_eof is refused)")
def test_shutdown_write_sends_close_notify_and_reading_goes_on(certs):
    """TLS 1.3 half-close: the client's shutdown_write() is end of stream
    for the server (close_notify, then FIN), which still answers; the client
    reads the answer after its own close_notify."""
    async def handler(conn):
        got = b""
        while data := await conn.recv():
            got += data
        conn.send_nowait(b"len=%d" % len(got))

    async def main():
        srv = await ringline.serve(handler, HOST, 0, ssl=certs.server_ctx())
        c = await ringline.connect(HOST, srv.port, ssl=_client_ctx(certs),
                                   server_hostname="localhost")
        c.send_nowait(b"x" * 5000)
        c.shutdown_write()
        with pytest.raises(ConnectionClosed):
            c.send_nowait(b"more")
        reply = b""
        while data := await asyncio.wait_for(c.recv(), IO_TIMEOUT):
            reply += data
        c.close()
        await c.wait_closed()
        await srv.shutdown(2.0)
        return reply

    assert run(main) == b"len=5000"
