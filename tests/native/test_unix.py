"""Unix-domain stream sockets on the native API: ``serve_unix`` and
``connect_unix`` give the same Connection as serve/connect.  Real sockets
in a temporary directory; peers are ringline itself or the stdlib
``socket`` module."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
import threading

import pytest

import ringline
from ringline._core import loop as _core_loop
from tests.support import IO_TIMEOUT, echo, pattern, recv_exactly, run
from tests.support.backends import uring_only
from tests.support.cancel_sweep import sweep

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("native_backend")]


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "app.sock")


@pytest.mark.parametrize("fixed", [True, False], ids=["fixed", "plain-fd"])
def test_echo_byte_exact_and_addresses(config_defaults, sock_path, fixed):
    config_defaults(_fixed_files=fixed)

    async def main():
        seen = []

        async def handler(conn):
            seen.append((conn.peer_addr, conn.local_addr))
            await echo(conn)

        server = await ringline.serve_unix(handler, sock_path)
        assert server.path == sock_path
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
        try:
            conn = await ringline.connect_unix(sock_path)
            assert isinstance(conn, ringline.Connection)
            if not fixed or ringline.backend() != "uring":
                assert not conn.fixed and conn.fileno >= 0
            assert conn.peer_addr == sock_path
            assert conn.local_addr == ""            # an unnamed client end
            for size in (1, 4095, 65536, 1 << 20):
                data = pattern(size, size % 251)
                conn.send_nowait(data)
                got = await asyncio.wait_for(conn.recv_exactly(size), IO_TIMEOUT)
                assert got == data
            conn.close()
            await asyncio.wait_for(conn.wait_closed(), IO_TIMEOUT)
            assert seen == [("", sock_path)]
        finally:
            await server.shutdown(2.0)
        assert not os.path.exists(sock_path), "the server removes its socket file"

    run(main)


def test_send_chain_over_unix_is_byte_exact(sock_path):
    """Parts above send_zc_threshold: SEND_ZC has no AF_UNIX support
    (EOPNOTSUPP, link broken), and the chain resumes by copy in order."""
    async def main():
        got = asyncio.get_running_loop().create_future()

        async def collect(conn):
            got.set_result(await conn.recv_exactly(n))

        parts = [b"head", pattern(300000, 1), bytearray(pattern(5000, 2)), b"x" * 70000, b"end"]
        n = sum(len(p) for p in parts)
        server = await ringline.serve_unix(collect, sock_path)
        try:
            conn = await ringline.connect_unix(sock_path)
            before = _core_loop.debug_counters()["sqes_prepared"]
            assert await asyncio.wait_for(conn.send_chain(parts), IO_TIMEOUT) == n
            used = _core_loop.debug_counters()["sqes_prepared"] - before
            assert await asyncio.wait_for(got, IO_TIMEOUT) == b"".join(bytes(p) for p in parts)
            if ringline.backend() == "uring":
                # 5 linked SQEs, the zero-copy one refused: the rest resent.
                assert used >= 5 + 3, used
            conn.close()
            await conn.wait_closed()
        finally:
            await server.shutdown(2.0)

    run(main)


def test_stale_socket_file_is_replaced_anything_else_refused(sock_path, tmp_path):
    async def main():
        # A stale socket: bound, never listening (as a crashed server leaves it).
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(sock_path)
        stale.close()
        assert os.path.exists(sock_path)
        server = await ringline.serve_unix(echo, sock_path)
        try:
            # A server listens there now: a second one is refused.
            with pytest.raises(OSError) as info:
                await ringline.serve_unix(echo, sock_path)
            assert info.value.errno == errno.EADDRINUSE
            conn = await ringline.connect_unix(sock_path)
            conn.send_nowait(b"ping")
            assert await asyncio.wait_for(conn.recv_exactly(4), IO_TIMEOUT) == b"ping"
            conn.close()
            await conn.wait_closed()
        finally:
            await server.shutdown(2.0)
        # A regular file is never removed.
        plain = tmp_path / "plain"
        plain.write_bytes(b"keep me")
        with pytest.raises(OSError) as info:
            await ringline.serve_unix(echo, str(plain))
        assert info.value.errno == errno.EADDRINUSE
        assert plain.read_bytes() == b"keep me"

    run(main)


def test_connect_errors_are_typed(sock_path):
    async def main():
        with pytest.raises(FileNotFoundError):
            await ringline.connect_unix(sock_path)
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(sock_path)
        try:
            with pytest.raises(ConnectionRefusedError):
                await ringline.connect_unix(sock_path)
        finally:
            stale.close()
        with pytest.raises(TypeError):
            await ringline.connect_unix(42)
        with pytest.raises(TypeError):
            await ringline.serve_unix(echo, None)
        with pytest.raises(TypeError):
            await ringline.serve_unix("not callable", sock_path)

    run(main)


def test_stdlib_socket_peers_on_both_sides(sock_path, tmp_path):
    """A stdlib client against serve_unix, and connect_unix against a
    stdlib server (a thread): bytes exact both ways."""
    data = pattern(200000, 3)

    def stdlib_client() -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(IO_TIMEOUT)
            s.connect(sock_path)
            s.sendall(data)
            return recv_exactly(s, len(data))

    other = str(tmp_path / "stdlib.sock")
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(other)
    ls.listen(1)
    ls.settimeout(IO_TIMEOUT)
    received: list[bytes] = []

    def stdlib_server() -> None:
        s, _ = ls.accept()
        with s:
            s.settimeout(IO_TIMEOUT)
            buf = recv_exactly(s, len(data))
            received.append(buf)
            s.sendall(buf[::-1])

    async def main():
        server = await ringline.serve_unix(echo, sock_path)
        try:
            assert await asyncio.wait_for(asyncio.to_thread(stdlib_client), IO_TIMEOUT) == data
        finally:
            await server.shutdown(2.0)
        t = threading.Thread(target=stdlib_server)
        t.start()
        try:
            conn = await ringline.connect_unix(other)
            assert conn.peer_addr == other
            await conn.send_chain([data[:1000], data[1000:]])
            back = await asyncio.wait_for(conn.recv_exactly(len(data)), IO_TIMEOUT)
            assert back == data[::-1]
            conn.close()
            await conn.wait_closed()
        finally:
            t.join(IO_TIMEOUT)
            ls.close()
        assert received == [data]

    run(main)


def test_abstract_namespace_name():
    name = f"\0ringline-test-{os.getpid()}-{id(object())}".encode()

    async def main():
        server = await ringline.serve_unix(echo, name)
        try:
            conn = await ringline.connect_unix(name)
            assert conn.peer_addr == name
            conn.send_nowait(b"abstract")
            assert await asyncio.wait_for(conn.recv_exactly(8), IO_TIMEOUT) == b"abstract"
            conn.close()
            await conn.wait_closed()
        finally:
            await server.shutdown(2.0)

    run(main)


@uring_only("the cancellation sweep counts the ring's slots, fixed slots and descriptors")
@pytest.mark.parametrize("fixed", [True, False], ids=["fixed", "plain-fd"])
def test_connect_unix_cancel_sweep(config_defaults, sock_path, fixed):
    """connect_unix cancelled after 0, 1, 2, ... loop iterations leaves no
    slot, fixed-table slot or descriptor behind (the listener's backlog is
    emptied after every round)."""
    config_defaults(_fixed_files=fixed)
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(sock_path)
    ls.listen(4096)
    ls.setblocking(False)

    def accept_and_close():
        try:
            while True:
                ls.accept()[0].close()
        except BlockingIOError:
            pass

    async def main():
        async def after(outcome, conn):
            if conn is not None:
                assert outcome != "cancelled"
                conn.close()
                await conn.wait_closed()

        r = await sweep(f"connect_unix fixed={fixed}", lambda: ringline.connect_unix(sock_path),
                        after=after, poll=accept_and_close)
        assert r.cancelled >= 1 and r.done_at >= 1

    try:
        run(main)
    finally:
        ls.close()


def test_send_chain_from_another_thread_raises(sock_path):
    async def main():
        server = await ringline.serve_unix(echo, sock_path)
        try:
            conn = await ringline.connect_unix(sock_path)
            err = await asyncio.to_thread(_call_raises, lambda: conn.send_chain([b"x"]))
            assert isinstance(err, RuntimeError), err
            assert conn.queued == 0
            conn.close()
            await conn.wait_closed()
        finally:
            await server.shutdown(2.0)

    run(main)


def _call_raises(fn):
    try:
        fn()
    except BaseException as exc:
        return exc
    return None
