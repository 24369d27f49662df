"""``python -m ringline serve MOD:HANDLER --ssl-cert F --ssl-key K``: TLS
for native handlers, run as the real command (a supervisor and its worker
processes) and reached over loopback by a verifying stdlib TLS client."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import ringline
from tests.support.tls import make_certs

pytestmark = pytest.mark.timeout(90)

_LIB = str(Path(ringline.__file__).resolve().parent.parent)

APP = """
import ringline

async def echo(conn):
    info = conn.tls_info()
    conn.send_nowait(f"{info.version} sni={info.sni}\\n".encode())
    while data := await conn.recv():
        conn.send_nowait(data)

class Echo(ringline.Handler):
    async def on_accept(self, conn):
        await echo(conn)
"""


def _env(d: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(d), _LIB]))


def _start(d: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "ringline", "serve", *args], cwd=d,
                            env=_env(d), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"serving .* on .*:(\d+) over TLS with", line)
        if m:
            return proc, int(m.group(1))
    proc.kill()
    proc.wait()
    raise AssertionError("no serving line:\n" + "".join(lines))


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("target", ["tlsapp:echo", "tlsapp:Echo"])
def test_native_handler_serves_tls(tmp_path: Path, target: str) -> None:
    (tmp_path / "tlsapp.py").write_text(textwrap.dedent(APP))
    certs = make_certs(tmp_path)
    proc, port = _start(tmp_path, target, "--bind", "127.0.0.1:0", "--workers", "2",
                        "--ssl-cert", certs.cert, "--ssl-key", certs.key)
    try:
        for _ in range(4):      # over both workers, most likely
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    certs.client_ctx().wrap_socket(raw, server_hostname="localhost",
                                                   suppress_ragged_eofs=False) as s:
                f = s.makefile("rb")
                assert f.readline().decode().endswith("sni=localhost\n")
                s.sendall(b"x" * 100_000)
                got = b""
                while len(got) < 100_000:
                    got += s.recv(65536)
                assert got == b"x" * 100_000
        # Plaintext to the TLS port: closed, and the workers keep serving.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert raw.recv(100)[:1] in (b"", b"\x15")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                certs.client_ctx().wrap_socket(raw, server_hostname="localhost") as s:
            assert s.makefile("rb").readline().startswith(b"TLSv1.")
    finally:
        assert _stop(proc) == 0


def test_bad_key_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "tlsapp.py").write_text(textwrap.dedent(APP))
    certs = make_certs(tmp_path)
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key\n")
    r = subprocess.run([sys.executable, "-m", "ringline", "serve", "tlsapp:echo",
                        "--ssl-cert", certs.cert, "--ssl-key", str(bad)], cwd=tmp_path,
                       env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "--ssl-cert/--ssl-key: cannot load" in r.stderr
    assert "Traceback" not in r.stderr
