"""TLS options of create_server / create_connection on each loop: both ends
and the TLS extra info, server_hostname, handshake and shutdown timeouts
(the peers here are Python's ssl; tests/aio/test_tls.py uses OpenSSL's
programs).

Everything here runs on real loopback sockets, once per loop (asyncio's
SelectorEventLoop as the reference, uvloop, ringline), and fails on any
unexpected exception-handler call.  Where ringline deliberately differs
(docs/asyncio-differences.md), the test checks ringline's documented
behaviour.  No assertion depends on timing: a sleep only ever gives
something the chance to happen that must not.
"""


import asyncio
import socket
import ssl
import threading

import pytest

from tests.support import run_on
from tests.support.aio import (
    IO,
    KIB,
    LOCAL,
    Accepted,
    Echo,
    Proto,
    blob,
    listener,
    recv_until_eof,
)
from tests.support.tls import make_certs

pytestmark = pytest.mark.timeout(30)


# ---------------------------------------------------------------------------
# 4. TLS
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def test_tls_both_ends_and_extra_info(loop, certs):
    async def main():
        acc = Accepted(loop, Echo)
        sctx, cctx = certs.server_ctx(), certs.client_ctx()
        server = await loop.create_server(acc, LOCAL, 0, ssl=sctx, ssl_handshake_timeout=IO,
                                          ssl_shutdown_timeout=IO)
        addr = server.sockets[0].getsockname()
        t, p = await loop.create_connection(
            lambda: Proto(loop), *addr, ssl=cctx, server_hostname="localhost",
            ssl_handshake_timeout=IO, ssl_shutdown_timeout=IO)
        sp = await acc.next()
        payload = blob(300 * KIB, 6)
        t.write(payload)
        assert await p.received(len(payload)) == payload
        assert t.get_extra_info("sslcontext") is cctx
        obj = t.get_extra_info("ssl_object")
        assert isinstance(obj, (ssl.SSLObject, ssl.SSLSocket))
        assert obj.server_hostname == "localhost"
        cert = t.get_extra_info("peercert")
        assert ((("commonName", "localhost"),) in cert["subject"]), cert
        cipher = t.get_extra_info("cipher")
        assert isinstance(cipher, tuple) and len(cipher) == 3 and cipher[0] == obj.cipher()[0]
        assert t.get_extra_info("compression") is None
        assert t.get_extra_info("peername") == addr
        assert t.get_extra_info("socket").family == socket.AF_INET
        st = sp.transport
        assert st.get_extra_info("sslcontext") is sctx
        assert st.get_extra_info("peercert") is None        # no client certificate
        assert st.get_extra_info("sockname") == addr
        t.close()
        assert await p.wait_lost() is None
        await sp.wait_lost()
        server.close()
        await server.wait_closed()

    run_on(loop, main())


def test_tls_server_hostname(loop, certs):
    async def main():
        acc = Accepted(loop, Echo)
        server = await loop.create_server(acc, LOCAL, 0, ssl=certs.server_ctx())
        addr = server.sockets[0].getsockname()
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.wait_for(loop.create_connection(
                    lambda: Proto(loop), *addr, ssl=certs.client_ctx(),
                    server_hostname="not-localhost.invalid"), IO)
            with pytest.raises(ValueError):
                await loop.create_connection(lambda: Proto(loop), *addr,
                                             server_hostname="localhost")  # without ssl=
            t, p = await loop.create_connection(
                lambda: Proto(loop), "localhost", addr[1], ssl=certs.client_ctx())
            assert t.get_extra_info("ssl_object").server_hostname == "localhost"
            t.write(b"tls")
            assert await p.received(3) == b"tls"
            t.close()
            await p.wait_lost()
        finally:
            server.close()
            await server.wait_closed()

    run_on(loop, main())


def test_ssl_timeouts_need_ssl(loop):
    async def main():
        with pytest.raises(ValueError):
            await loop.create_server(Accepted(loop), LOCAL, 0, ssl_handshake_timeout=1)
        with pytest.raises(ValueError):
            await loop.create_server(Accepted(loop), LOCAL, 0, ssl_shutdown_timeout=1)
        with listener() as srv:
            with pytest.raises(ValueError):
                await loop.create_connection(lambda: Proto(loop), *srv.getsockname(),
                                             ssl_handshake_timeout=1)

    run_on(loop, main())


def test_ssl_handshake_timeout_server(loop, certs):
    async def main():
        acc = Accepted(loop)
        server = await loop.create_server(acc, LOCAL, 0, ssl=certs.server_ctx(),
                                          ssl_handshake_timeout=0.2)
        try:
            with socket.socket() as peer:
                peer.setblocking(False)
                await loop.sock_connect(peer, server.sockets[0].getsockname())
                # Say nothing: well before the 60 s default, the server gives up.
                assert await recv_until_eof(loop, peer) == b""
            assert all(p.calls == [] for p in acc.made)     # never connection_made
        finally:
            server.close()
            await server.wait_closed()

    run_on(loop, main())


def test_ssl_handshake_timeout_client(loop, certs):
    async def main():
        with listener() as srv:
            acc = asyncio.ensure_future(loop.sock_accept(srv))
            made = []
            with pytest.raises((ConnectionAbortedError, TimeoutError)):
                await asyncio.wait_for(loop.create_connection(
                    lambda: made.append(1) or Proto(loop), *srv.getsockname(),
                    ssl=certs.client_ctx(), server_hostname="localhost",
                    ssl_handshake_timeout=0.2), IO)
            peer, _ = await acc
            peer.setblocking(False)
            with peer:
                # The ClientHello arrived, then the client hung up.
                got = await recv_until_eof(loop, peer)
                assert got[:1] == b"\x16"       # TLS handshake record

    run_on(loop, main())


class SilentTLSPeer(threading.Thread):
    """Completes a TLS handshake in a thread, then neither reads nor answers
    close_notify until told to stop."""

    def __init__(self, sock, ctx, server_side, hostname=None):
        super().__init__(daemon=True)
        self.sock, self.ctx, self.server_side, self.hostname = sock, ctx, server_side, hostname
        self.handshaken = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(IO)
            with self.ctx.wrap_socket(self.sock, server_side=self.server_side,
                                      server_hostname=self.hostname) as tls:
                self.handshaken.set()
                self.stop.wait(IO * 2)
                tls.settimeout(0.1)
                try:
                    tls.unwrap()
                except (OSError, ValueError):
                    pass
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.handshaken.set()


def test_ssl_shutdown_timeout_client(loop, certs):
    async def main():
        with listener() as srv:
            acc = asyncio.ensure_future(loop.sock_accept(srv))
            conn_task = asyncio.ensure_future(loop.create_connection(
                lambda: Proto(loop), *srv.getsockname(), ssl=certs.client_ctx(),
                server_hostname="localhost", ssl_shutdown_timeout=0.2))
            peer, _ = await asyncio.wait_for(acc, IO)
        th = SilentTLSPeer(peer, certs.server_ctx(), server_side=True)
        th.start()
        try:
            t, p = await asyncio.wait_for(conn_task, IO)
            t.close()
            # The peer never answers close_notify: well before the 30 s
            # default, the transport gives up and is lost.
            await asyncio.wait_for(asyncio.shield(p.lost), IO)
            assert p.lost_count == 1
        finally:
            th.stop.set()
            await loop.run_in_executor(None, th.join, IO)
        assert th.error is None, th.error

    run_on(loop, main())


def test_ssl_shutdown_timeout_server(loop, certs):
    async def main():
        acc = Accepted(loop)
        server = await loop.create_server(acc, LOCAL, 0, ssl=certs.server_ctx(),
                                          ssl_shutdown_timeout=0.2)
        raw = socket.socket()
        raw.connect(server.sockets[0].getsockname())
        th = SilentTLSPeer(raw, certs.client_ctx(), server_side=False, hostname="localhost")
        th.start()
        try:
            sp = await acc.next()
            sp.transport.close()
            await asyncio.wait_for(asyncio.shield(sp.lost), IO)
            assert sp.lost_count == 1
        finally:
            th.stop.set()
            await loop.run_in_executor(None, th.join, IO)
            server.close()
            await server.wait_closed()
        assert th.error is None, th.error

    run_on(loop, main())
