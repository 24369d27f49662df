"""asyncio's readiness-based I/O API on each loop: sock_*, UDP, Unix sockets,
connect_accepted_socket, signals, subprocesses, TCP and streams.

Real sockets, pipes and processes on loopback; every test runs on asyncio,
uvloop and ringline, and fails on any unexpected exception-handler call.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from tests.support import loops, run_on

pytestmark = pytest.mark.timeout(60)

LOCAL = "127.0.0.1"



def payload(n, seed):
    return random.Random(seed).randbytes(n)


async def tcp_pair(loop):
    """A connected pair of non-blocking TCP sockets made with sock_accept/sock_connect."""
    srv = socket.socket()
    srv.bind((LOCAL, 0))
    srv.listen(8)
    srv.setblocking(False)
    cli = socket.socket()
    cli.setblocking(False)
    try:
        acc = asyncio.ensure_future(loop.sock_accept(srv))
        await loop.sock_connect(cli, srv.getsockname())
        conn, addr = await acc
        assert addr == cli.getsockname()
        conn.setblocking(False)
    finally:
        srv.close()
    return cli, conn


def uvloop_lacks(loop_name, what):
    if loop_name == "uvloop":
        pytest.skip(f"uvloop does not implement {what}")


@pytest.fixture
def tmpdir_short():
    # AF_UNIX paths are limited to ~107 bytes: keep them short.
    with tempfile.TemporaryDirectory(prefix="rl") as d:
        yield d


# ---------------------------------------------------------------------------
# sock_* methods
# ---------------------------------------------------------------------------


def test_sock_connect_accept_recv_sendall(loop):
    async def main():
        cli, conn = await tcp_pair(loop)
        with cli, conn:
            await loop.sock_sendall(cli, b"hello")
            assert await loop.sock_recv(conn, 100) == b"hello"
            await loop.sock_sendall(conn, b"world")
            buf = bytearray(16)
            n = await loop.sock_recv_into(cli, buf)
            assert bytes(buf[:n]) == b"world"
            cli.shutdown(socket.SHUT_WR)
            assert await loop.sock_recv(conn, 100) == b""

    run_on(loop, main())


def test_sock_recv_waits_for_data(loop):
    async def main():
        cli, conn = await tcp_pair(loop)
        with cli, conn:
            fut = asyncio.ensure_future(loop.sock_recv(conn, 100))
            await asyncio.sleep(0.02)
            assert not fut.done()
            await loop.sock_sendall(cli, b"late")
            assert await fut == b"late"

    run_on(loop, main())


def test_sock_sendall_large_against_slow_reader(loop):
    data = payload(8 << 20, 1)

    async def reader(sock):
        chunks = []
        n = 0
        while n < len(data):
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk
            chunks.append(chunk)
            n += len(chunk)
            if len(chunks) % 16 == 0:
                await asyncio.sleep(0.001)
        return b"".join(chunks)

    async def main():
        cli, conn = await tcp_pair(loop)
        with cli, conn:
            got, _ = await asyncio.gather(reader(conn), loop.sock_sendall(cli, data))
            assert got == data

    run_on(loop, main())


def test_sock_recv_cancelled_then_reused(loop):
    async def main():
        cli, conn = await tcp_pair(loop)
        with cli, conn:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(loop.sock_recv(conn, 10), 0.02)
            await loop.sock_sendall(cli, b"after")
            assert await loop.sock_recv(conn, 10) == b"after"

    run_on(loop, main())


def test_sock_accept_cancelled_then_reused(loop):
    async def main():
        srv = socket.socket()
        srv.bind((LOCAL, 0))
        srv.listen(8)
        srv.setblocking(False)
        with srv:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(loop.sock_accept(srv), 0.02)
            cli = socket.socket()
            cli.setblocking(False)
            with cli:
                acc = asyncio.ensure_future(loop.sock_accept(srv))
                await loop.sock_connect(cli, srv.getsockname())
                conn, _ = await acc
                conn.close()

    run_on(loop, main())


def test_sock_connect_refused(loop):
    async def main():
        probe = socket.socket()
        probe.bind((LOCAL, 0))
        addr = probe.getsockname()
        probe.close()                       # nothing listens there now
        s = socket.socket()
        s.setblocking(False)
        with s, pytest.raises(ConnectionRefusedError):
            await loop.sock_connect(s, addr)

    run_on(loop, main())


def test_sock_udp_sendto_recvfrom(loop, loop_name):
    uvloop_lacks(loop_name, "sock_recvfrom/sock_sendto")

    async def main():
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with a, b:
            for s in (a, b):
                s.bind((LOCAL, 0))
                s.setblocking(False)
            fut = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
            await asyncio.sleep(0.01)
            assert not fut.done()
            await loop.sock_sendto(a, b"d1", b.getsockname())
            data, addr = await fut
            assert (data, addr) == (b"d1", a.getsockname())
            await loop.sock_sendto(b, b"d2", a.getsockname())
            buf = bytearray(10)
            n, addr = await loop.sock_recvfrom_into(a, buf)
            assert (bytes(buf[:n]), addr) == (b"d2", b.getsockname())

    run_on(loop, main())


def test_sock_sendfile(loop, loop_name):
    uvloop_lacks(loop_name, "sock_sendfile")
    data = payload(3 << 20, 2)

    async def main():
        cli, conn = await tcp_pair(loop)
        with cli, conn, tempfile.TemporaryFile() as f:
            f.write(data)
            f.flush()
            f.seek(0)

            async def receive():
                chunks, n = [], 0
                while n < len(data):
                    chunk = await loop.sock_recv(conn, 1 << 20)
                    assert chunk
                    chunks.append(chunk)
                    n += len(chunk)
                return b"".join(chunks)

            got, sent = await asyncio.gather(receive(), loop.sock_sendfile(cli, f))
            assert sent == len(data)
            assert got == data

    run_on(loop, main())


def test_loop_sendfile_on_a_transport(loop, loop_name):
    """loop.sendfile() on a stream transport: the kernel's sendfile (no
    fallback allowed), ordered after bytes already written, and the transport
    still usable afterwards."""
    uvloop_lacks(loop_name, "loop.sendfile")
    data = payload(2 << 20, 3)

    async def main():
        got = bytearray()
        done = loop.create_future()

        async def handler(reader, writer):
            while True:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    break
                got.extend(chunk)
            writer.close()
            done.set_result(None)

        server = await asyncio.start_server(handler, LOCAL, 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection(LOCAL, port)
            with tempfile.TemporaryFile() as f:
                f.write(data)
                f.flush()
                writer.write(b"head")
                sent = await loop.sendfile(writer.transport, f, fallback=False)
                assert sent == len(data)
                writer.write(b"tail")
                writer.write_eof()
                await done
            writer.close()
            await writer.wait_closed()
        assert bytes(got) == b"head" + data + b"tail"

    run_on(loop, main())


def test_sock_connect_and_accept_unix(loop, tmpdir_short):
    path = os.path.join(tmpdir_short, "s")

    async def main():
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path)
        srv.listen(4)
        srv.setblocking(False)
        cli = socket.socket(socket.AF_UNIX)
        cli.setblocking(False)
        with srv, cli:
            acc = asyncio.ensure_future(loop.sock_accept(srv))
            await loop.sock_connect(cli, path)
            conn, _ = await acc
            with conn:
                await loop.sock_sendall(cli, b"unix")
                assert await loop.sock_recv(conn, 10) == b"unix"

    run_on(loop, main())


# ---------------------------------------------------------------------------
# UDP: create_datagram_endpoint
# ---------------------------------------------------------------------------


class EchoDatagram(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(b"echo:" + data, addr)

    def error_received(self, exc):  # pragma: no cover
        raise exc


class CollectDatagram(asyncio.DatagramProtocol):
    def __init__(self, expect):
        self.expect = expect
        self.got = []
        self.done = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        self.got.append((data, addr))
        if len(self.got) == self.expect and not self.done.done():
            self.done.set_result(None)

    def error_received(self, exc):  # pragma: no cover
        raise exc


def test_udp_echo_local_and_remote_addr(loop):
    async def main():
        st, _ = await loop.create_datagram_endpoint(EchoDatagram, local_addr=(LOCAL, 0))
        server_addr = st.get_extra_info("sockname")
        ct, cp = await loop.create_datagram_endpoint(
            lambda: CollectDatagram(50), remote_addr=server_addr)
        try:
            assert ct.get_extra_info("peername") == server_addr
            for i in range(50):
                ct.sendto(b"%d" % i)
            await asyncio.wait_for(cp.done, 5)
            assert sorted(d for d, _ in cp.got) == sorted(b"echo:%d" % i for i in range(50))
            assert all(a == server_addr for _, a in cp.got)
        finally:
            ct.close()
            st.close()
        await asyncio.sleep(0)

    run_on(loop, main())


def test_udp_unconnected_sendto_with_address(loop):
    async def main():
        st, _ = await loop.create_datagram_endpoint(EchoDatagram, local_addr=(LOCAL, 0))
        ct, cp = await loop.create_datagram_endpoint(
            lambda: CollectDatagram(3), local_addr=(LOCAL, 0))
        try:
            for i in range(3):
                ct.sendto(b"x%d" % i, st.get_extra_info("sockname"))
            await asyncio.wait_for(cp.done, 5)
            assert sorted(d for d, _ in cp.got) == [b"echo:x0", b"echo:x1", b"echo:x2"]
        finally:
            ct.close()
            st.close()
        await asyncio.sleep(0)

    run_on(loop, main())


def test_udp_reuse_port_and_allow_broadcast(loop):
    async def main():
        t1, _ = await loop.create_datagram_endpoint(
            EchoDatagram, local_addr=(LOCAL, 0), reuse_port=True)
        port = t1.get_extra_info("sockname")[1]
        t2, _ = await loop.create_datagram_endpoint(
            EchoDatagram, local_addr=(LOCAL, port), reuse_port=True)
        t3, p3 = await loop.create_datagram_endpoint(
            lambda: CollectDatagram(1), local_addr=(LOCAL, 0), allow_broadcast=True)
        try:
            for t in (t1, t2):
                assert t.get_extra_info("socket").getsockopt(
                    socket.SOL_SOCKET, socket.SO_REUSEPORT)
            assert t3.get_extra_info("socket").getsockopt(
                socket.SOL_SOCKET, socket.SO_BROADCAST)
            t3.sendto(b"hi", (LOCAL, port))     # one of the two answers
            await asyncio.wait_for(p3.done, 5)
            assert p3.got[0][0] == b"echo:hi"
        finally:
            for t in (t1, t2, t3):
                t.close()
        await asyncio.sleep(0)

    run_on(loop, main())


# ---------------------------------------------------------------------------
# TCP and Unix stream servers through protocols and streams
# ---------------------------------------------------------------------------


class EchoServer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        self.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, expect):
        self.expect = expect
        self.buf = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        if len(self.buf) >= self.expect:
            self.transport.close()

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(bytes(self.buf))


async def echo_clients(loop, connect, n, size):
    async def one(i):
        data = payload(size, 1000 + i)
        t, p = await connect(lambda: Client(len(data)))
        for off in range(0, len(data), 7919):
            t.write(data[off:off + 7919])
            if off % 5 == 0:
                await asyncio.sleep(0)
        got = await p.done
        assert got == data, f"client {i}: {len(got)} of {len(data)} bytes, or corrupted"

    await asyncio.gather(*(one(i) for i in range(n)))


def test_tcp_echo_100_concurrent_clients(loop):
    async def main():
        server = await loop.create_server(EchoServer, LOCAL, 0)
        addr = server.sockets[0].getsockname()
        async with server:
            await echo_clients(
                loop, lambda f: loop.create_connection(f, *addr), 100, 48 * 1024)
        await server.wait_closed()

    run_on(loop, main(), timeout=40)


def test_tcp_echo_on_selector_transports(loop_name):
    # ringline's TCP normally runs on its native transports
    # (RingTransportsMixin); asyncio's selector transports on the readiness
    # path (used for TLS and as the fallback) must keep working too.
    if loop_name != "ringline":
        pytest.skip("ringline-specific")
    ringline = loops.require_ringline()
    from asyncio import selector_events

    class SelectorTransportsLoop(ringline.EventLoop):
        _make_socket_transport = selector_events.BaseSelectorEventLoop._make_socket_transport
        _start_serving = selector_events.BaseSelectorEventLoop._start_serving
        _stop_serving = selector_events.BaseSelectorEventLoop._stop_serving

    lp = SelectorTransportsLoop()
    recorder = loops.LoopExceptionRecorder()
    lp.set_exception_handler(recorder)

    async def main():
        server = await lp.create_server(EchoServer, LOCAL, 0)
        addr = server.sockets[0].getsockname()
        async with server:
            await echo_clients(
                lp, lambda f: lp.create_connection(f, *addr), 100, 48 * 1024)
            t, _ = await lp.create_connection(asyncio.Protocol, *addr)
            assert type(t).__name__ == "_SelectorSocketTransport"
            t.close()
        await server.wait_closed()

    try:
        run_on(lp, main(), timeout=40)
    finally:
        lp.close()
    recorder.assert_none()


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory):
    if shutil.which("openssl") is None:  # pragma: no cover
        pytest.skip("needs the openssl command to make a certificate")
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


def test_tls_echo(loop, tls_contexts):
    server_ctx, client_ctx = tls_contexts

    async def handler(reader, writer):
        n = int.from_bytes(await reader.readexactly(4), "big")
        data = await reader.readexactly(n)
        writer.write(data[::-1])
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handler, LOCAL, 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        async with server:
            async def client(i):
                r, w = await asyncio.open_connection(
                    LOCAL, port, ssl=client_ctx, server_hostname="localhost")
                data = payload(100_000 + i, 50 + i)
                w.write(len(data).to_bytes(4, "big") + data)
                await w.drain()
                got = await r.readexactly(len(data))
                w.close()
                try:
                    await w.wait_closed()
                except (ssl.SSLError, ConnectionError):  # pragma: no cover
                    pass
                return got == data[::-1]

            assert all(await asyncio.gather(*(client(i) for i in range(10))))
        await server.wait_closed()

    run_on(loop, main(), timeout=40)


def test_tcp_create_connection_refused(loop):
    async def main():
        probe = socket.socket()
        probe.bind((LOCAL, 0))
        port = probe.getsockname()[1]
        probe.close()
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, LOCAL, port)

    run_on(loop, main())


def test_unix_server_and_connection(loop, tmpdir_short):
    path = os.path.join(tmpdir_short, "echo.sock")

    async def main():
        server = await loop.create_unix_server(EchoServer, path)
        async with server:
            await echo_clients(
                loop, lambda f: loop.create_unix_connection(f, path), 20, 32 * 1024)
        await server.wait_closed()

    run_on(loop, main())


def test_connect_accepted_socket(loop):
    async def main():
        srv = socket.socket()
        srv.bind((LOCAL, 0))
        srv.listen(4)
        srv.setblocking(False)
        with srv:
            reader, writer = None, None
            acc = asyncio.ensure_future(loop.sock_accept(srv))
            conn_task = asyncio.ensure_future(
                asyncio.open_connection(*srv.getsockname()))
            conn, _ = await acc
            reader, writer = await conn_task
            t, _ = await loop.connect_accepted_socket(EchoServer, conn)
            data = payload(200_000, 7)
            writer.write(data)
            await writer.drain()
            assert await reader.readexactly(len(data)) == data
            writer.write_eof()
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()

    run_on(loop, main())


async def _stream_echo(reader, writer):
    try:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    finally:
        writer.close()


def test_streams_tcp_100_clients(loop):
    async def main():
        server = await asyncio.start_server(_stream_echo, LOCAL, 0)
        addr = server.sockets[0].getsockname()

        async def client(i):
            r, w = await asyncio.open_connection(*addr)
            lines = [b"%d-%d-%s\n" % (i, k, b"z" * (k * 37 % 500)) for k in range(40)]
            for ln in lines:
                w.write(ln)
            await w.drain()
            for ln in lines:
                assert await r.readline() == ln
            w.close()
            await w.wait_closed()

        async with server:
            await asyncio.gather(*(client(i) for i in range(100)))
        await server.wait_closed()

    run_on(loop, main(), timeout=40)


def test_streams_unix(loop, tmpdir_short):
    path = os.path.join(tmpdir_short, "st.sock")

    async def main():
        server = await asyncio.start_unix_server(_stream_echo, path)
        async with server:
            r, w = await asyncio.open_unix_connection(path)
            w.write(b"line one\nline two\n")
            assert await r.readline() == b"line one\n"
            assert await r.readline() == b"line two\n"
            w.close()
            await w.wait_closed()
        await server.wait_closed()

    run_on(loop, main())


# ---------------------------------------------------------------------------
# signals
# ---------------------------------------------------------------------------


@pytest.fixture
def main_thread_only():
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        pytest.skip("signal handlers need the main thread")


def test_signal_while_busy(loop, main_thread_only):
    # The loop never waits: a callback re-schedules itself; the signal must
    # still reach its handler while the chain runs.
    got = []
    ticks = 0

    async def main():
        done = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, lambda: got.append(ticks))

        def tick():
            nonlocal ticks
            ticks += 1
            if ticks == 50:
                os.kill(os.getpid(), signal.SIGUSR1)
            if got or ticks > 100_000:
                done.set_result(None)
            else:
                loop.call_soon(tick)

        loop.call_soon(tick)
        await done
        assert loop.remove_signal_handler(signal.SIGUSR1)

    run_on(loop, main())
    assert got and got[0] < 100_000


def test_signal_while_blocked_from_thread(loop, main_thread_only):
    async def main():
        fut = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, fut.set_result, "usr1")
        t = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
        t.start()
        try:
            assert await asyncio.wait_for(fut, 5) == "usr1"
        finally:
            t.join()
            loop.remove_signal_handler(signal.SIGUSR1)

    run_on(loop, main())


def test_signal_interrupts_the_wait_itself(loop, main_thread_only):
    # SIGALRM from setitimer hits the main thread while it sleeps in the
    # loop's wait (io_uring_enter / epoll_wait): EINTR, then the handler.
    async def main():
        fut = loop.create_future()
        loop.add_signal_handler(signal.SIGALRM, fut.set_result, "alarm")
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        try:
            t0 = time.monotonic()
            assert await asyncio.wait_for(fut, 5) == "alarm"
            assert time.monotonic() - t0 < 2
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            loop.remove_signal_handler(signal.SIGALRM)

    run_on(loop, main())


def test_signal_handler_repeated_and_args(loop, main_thread_only):
    got = []

    async def main():
        loop.add_signal_handler(signal.SIGUSR2, got.append, "u2")
        for i in range(5):
            os.kill(os.getpid(), signal.SIGUSR2)
            deadline = time.monotonic() + 5
            while len(got) < i + 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.001)
        loop.remove_signal_handler(signal.SIGUSR2)

    run_on(loop, main())
    assert got == ["u2"] * 5


def test_signal_handlers_removed_by_close(loop_factory, loop_name, main_thread_only):
    uvloop_lacks(loop_name, "signal handler removal in close()")
    lp = loop_factory()
    try:
        lp.add_signal_handler(signal.SIGUSR1, lambda: None)
        assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN)
        lp.run_until_complete(asyncio.sleep(0))
    finally:
        lp.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    prev = signal.set_wakeup_fd(-1)
    assert prev == -1


def test_add_signal_handler_rejects_bad_input(loop):
    with pytest.raises(TypeError):
        loop.add_signal_handler(signal.SIGUSR1, asyncio.sleep)
    with pytest.raises((ValueError, RuntimeError)):
        loop.add_signal_handler(signal.SIGKILL, lambda: None)
    assert not loop.remove_signal_handler(signal.SIGUSR2)


# ---------------------------------------------------------------------------
# subprocesses
# ---------------------------------------------------------------------------

PIPE = asyncio.subprocess.PIPE


def test_subprocess_communicate_large(loop):
    data = payload(2 << 20, 3)

    async def main():
        p = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
        out, err = await p.communicate(data)
        assert out == data and err is None
        assert p.returncode == 0

    run_on(loop, main())


def test_subprocess_pipeline_echo_into_cat(loop):
    async def main():
        r, w = os.pipe()
        try:
            p1 = await asyncio.create_subprocess_exec("echo", "through", "the", "pipe", stdout=w)
            p2 = await asyncio.create_subprocess_exec("cat", stdin=r, stdout=PIPE)
        finally:
            os.close(r)
            os.close(w)
        out = await p2.stdout.read()
        assert out == b"through the pipe\n"
        assert await p1.wait() == 0
        assert await p2.wait() == 0

    run_on(loop, main())


def test_subprocess_shell_returncode_and_stderr(loop):
    async def main():
        p = await asyncio.create_subprocess_shell(
            "echo $((6*7)); echo oops >&2; exit 3", stdout=PIPE, stderr=PIPE)
        out, err = await p.communicate()
        assert (out, err, p.returncode) == (b"42\n", b"oops\n", 3)

    run_on(loop, main())


def test_subprocess_kill_and_many_concurrent(loop):
    async def main():
        sleeper = await asyncio.create_subprocess_exec("sleep", "30")
        procs = [await asyncio.create_subprocess_exec("sh", "-c", f"exit {i}")
                 for i in range(20)]
        codes = await asyncio.gather(*(p.wait() for p in procs))
        assert codes == list(range(20))
        sleeper.kill()
        assert await sleeper.wait() == -signal.SIGKILL

    run_on(loop, main())


def test_subprocess_exec_protocol(loop):
    class Proto(asyncio.SubprocessProtocol):
        def __init__(self):
            self.out = bytearray()
            self.exited = asyncio.get_running_loop().create_future()
            self.lost = asyncio.get_running_loop().create_future()

        def pipe_data_received(self, fd, data):
            self.out += data

        def process_exited(self):
            self.exited.set_result(None)

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        t, p = await loop.subprocess_exec(
            Proto, sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper())",
            stdin=PIPE, stdout=PIPE, stderr=None)
        t.get_pipe_transport(0).write(b"shout\n")
        t.get_pipe_transport(0).close()
        await p.exited
        assert await p.lost is None
        assert bytes(p.out) == b"SHOUT\n"
        assert t.get_returncode() == 0
        t.close()

    run_on(loop, main())


def test_subprocess_exit_seen_without_a_watcher_thread(loop, loop_name):
    if loop_name != "ringline":
        pytest.skip("ringline-specific: the child's pidfd is polled on the ring")

    async def main():
        before = {t.name for t in threading.enumerate()}
        p = await asyncio.create_subprocess_exec("true")
        assert await p.wait() == 0
        new = {t.name for t in threading.enumerate()} - before
        assert not new, f"threads started for the child: {new}"
        assert not loop._child_pidfds

    run_on(loop, main())


def test_loop_close_releases_everything(loop_factory, loop_name, main_thread_only):
    # A loop closed with a signal handler, a reader, a server and a running
    # child: handlers restored; ringline reaps every poll it armed.
    lp = loop_factory()
    a, b = socket.socketpair()
    try:
        async def main():
            lp.add_signal_handler(signal.SIGUSR1, lambda: None)
            lp.add_reader(a, lambda: None)
            server = await lp.create_server(EchoServer, LOCAL, 0)
            p = await asyncio.create_subprocess_exec("sleep", "0.1")
            await asyncio.sleep(0.01)
            return server, p

        server, p = lp.run_until_complete(main())
        server.close()
        lp.run_until_complete(server.wait_closed())
        lp.run_until_complete(p.wait())
        lp.remove_reader(a)
        lp.close()
        if loop_name == "uvloop":   # uvloop's close() leaves its handlers installed
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
        if loop_name == "ringline":
            assert lp.statistics()["slots_live"] == 0
            assert lp._ssock is None
    finally:
        a.close()
        b.close()
