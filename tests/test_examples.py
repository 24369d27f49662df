"""The examples under examples/, each run as a subprocess on loopback."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import paths

pytestmark = pytest.mark.timeout(60)

EXAMPLES = paths.EXAMPLES
HOST = "127.0.0.1"


def _env() -> dict[str, str]:
    # The subprocess imports the same ringline build as this test run.
    env = dict(os.environ)
    import ringline
    pkg_root = str(Path(ringline.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def read_line(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """One line of the process's stdout, or fail after ``timeout``."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        deadline = time.monotonic() + timeout
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"no output line within {timeout}s (got {buf!r})")
            ch = os.read(proc.stdout.fileno(), 1)
            if not ch:
                err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
                raise AssertionError(f"process ended before printing a line: {buf!r} {err}")
            buf += ch
        return buf.decode()
    finally:
        sel.close()


class Example:
    """An example run as a long-lived subprocess that prints
    ``listening on HOST:PORT`` when ready."""

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        try:
            line = read_line(self.proc)
        except BaseException:
            self.kill()
            raise
        assert line.startswith("listening on "), line
        host, _, port = line.split()[-1].rpartition(":")
        self.host, self.port = host, int(port)
        assert self.port != 0

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        finally:
            self.kill()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

    def __enter__(self) -> Example:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def run_client(*args: str, stdin: bytes | None = None, timeout: float = 20.0):
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "echo_client.py"), *args],
        input=stdin, capture_output=True, env=_env(), timeout=timeout)


def raw_echo(port: int, payload: bytes) -> bytes:
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.settimeout(10)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        buf = bytearray()
        while chunk := s.recv(1 << 16):
            buf += chunk
        return bytes(buf)


def test_echo_server_and_client():
    with Example("echo_server.py", "--port", "0") as server:
        assert server.host == HOST
        r = run_client("--port", str(server.port), "--message", "hello", "--count", "3")
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().splitlines() == ["hello"] * 3

        r = run_client("--port", str(server.port), "-m", "a", "-m", "bc")
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().splitlines() == ["a", "bc"]

        r = run_client("--port", str(server.port), stdin=b"one\ntwo\nthree\n")
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().splitlines() == ["one", "two", "three"]

        # A plain socket peer: everything comes back, then EOF.
        payload = os.urandom(1 << 20)
        assert raw_echo(server.port, payload) == payload

        assert server.stop(signal.SIGINT) == 0


def test_echo_server_stops_on_sigterm_with_idle_client():
    with Example("echo_server.py", "--port", "0", "-v", "--shutdown-timeout", "1") as server:
        idle = socket.create_connection((HOST, server.port), timeout=10)
        try:
            idle.sendall(b"ping")
            assert idle.recv(4) == b"ping"
            t0 = time.monotonic()
            assert server.stop(signal.SIGTERM) == 0
            assert time.monotonic() - t0 < 1 + 3
            try:
                assert idle.recv(10) == b""
            except ConnectionResetError:
                pass
        finally:
            idle.close()


def test_echo_client_reports_refused_connection():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    r = run_client("--port", str(port), "--message", "x")
    assert r.returncode == 1
    assert b"refused" in r.stderr.lower()


def test_proxy_in_front_of_echo_server():
    with Example("echo_server.py", "--port", "0") as server, \
            Example("proxy.py", "--listen", f"{HOST}:0",
                    "--target", f"{HOST}:{server.port}") as proxy:
        assert proxy.port != server.port
        r = run_client("--port", str(proxy.port), "--message", "through the proxy",
                       "--count", "2")
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().splitlines() == ["through the proxy"] * 2

        payload = os.urandom(4 << 20)
        assert raw_echo(proxy.port, payload) == payload

        assert proxy.stop(signal.SIGTERM) == 0
        assert server.stop(signal.SIGINT) == 0


def test_proxy_with_unreachable_target_closes_client():
    s = socket.socket()
    s.bind((HOST, 0))
    dead = s.getsockname()[1]
    s.close()
    with Example("proxy.py", "--listen", f"{HOST}:0", "--target", f"{HOST}:{dead}") as proxy:
        with socket.create_connection((HOST, proxy.port), timeout=10) as c:
            c.settimeout(10)
            try:
                assert c.recv(10) == b""
            except ConnectionResetError:
                pass
        assert proxy.stop() == 0


def run_client_only(*args: str, timeout: float = 30.0):
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "client_only.py"), *args],
        capture_output=True, env=_env(), timeout=timeout)


def test_client_only_against_the_echo_server():
    with Example("echo_server.py", "--port", "0") as server:
        r = run_client_only("--port", str(server.port), "--rounds", "5", "--size", "300000")
        assert r.returncode == 0, r.stderr
        line = r.stdout.decode()
        assert line.startswith("ok: 5 round trips of 300004 bytes"), line
        assert "1500020 bytes sent" in line, line
        assert server.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_client_only_runs_alone_and_exits(tmp_path, unix):
    args = ["--spawn-echo", "--rounds", "20", "--size", "5000"]
    if unix:
        args += ["--unix", str(tmp_path / "echo.sock")]
    r = run_client_only(*args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().startswith("ok: 20 round trips of 5004 bytes"), r.stdout
    assert not (tmp_path / "echo.sock").exists()


def test_client_only_reports_refused_connection():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    r = run_client_only("--port", str(port))
    assert r.returncode == 1
    assert b"refused" in r.stderr.lower()


def _tls_client(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, str(EXAMPLES / "tls_echo.py"), "connect", *args],
                          capture_output=True, env=_env(), timeout=30)


def test_tls_echo_serve_and_connect():
    """tls_echo.py makes its own certificate (openssl), serves TLS; its
    client trusts that certificate and gets greeting and echoes; a client
    that does not trust it gets a clear handshake error; SIGINT stops it."""
    from tests.support.loops import require_program
    require_program("openssl", "openssl")
    with Example("tls_echo.py", "serve", "--port", "0") as server:
        cert = read_line(server.proc).split(maxsplit=1)[1].strip()
        r = _tls_client("--port", str(server.port), "--cafile", cert, "-m", "one", "-m", "two")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.decode().splitlines()
        assert lines[0].startswith("hello over TLSv1.") and lines[0].endswith("alpn=echo/1")
        assert lines[1:] == ["one", "two"]
        bad = _tls_client("--port", str(server.port))       # system CAs only
        assert bad.returncode == 1
        assert b"certificate verif" in bad.stderr
        assert server.stop() == 0

def test_udp_echo():
    """examples/udp_echo.py echoes datagrams (stdlib socket peer) and
    exits 0 on SIGTERM, reporting what it echoed."""
    with Example("udp_echo.py", "--port", "0") as server:
        assert server.host == HOST
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(10)
            sent = [os.urandom(n) for n in (0, 1, 64, 1400, 9000, 65507)]
            for payload in sent:
                c.sendto(payload, (HOST, server.port))
                data, addr = c.recvfrom(70000)
                assert data == payload and addr == (HOST, server.port)
        server.proc.send_signal(signal.SIGTERM)
        assert read_line(server.proc) == f"echoed {len(sent)} of {len(sent)} datagrams (0 dropped)\n"
        # One SIGTERM only: a second one, sent while the example is still
        # exiting after its last line, would kill it (rc -15).
        assert server.proc.wait(10) == 0
