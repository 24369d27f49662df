"""``python -m ringline serve --udp HOST:PORT``: every native worker binds
its own SO_REUSEPORT UDP socket and runs the handler module's
``async def on_udp(sock)`` on it.  Real processes, stdlib UDP peers."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import ringline

pytestmark = pytest.mark.timeout(120)

_LIB = str(Path(ringline.__file__).resolve().parent.parent)

APP = """
import os

async def echo(conn):
    while data := await conn.recv():
        conn.send_nowait(data)

async def on_udp(sock):
    # Replies name the worker, so the test sees the port shared.
    tag = str(os.getpid()).encode() + b":"
    while True:
        for data, addr in await sock.recv_batch(64):
            sock.send_to(tag + data, addr)
"""

NO_UDP_APP = """
async def echo(conn):
    while data := await conn.recv():
        conn.send_nowait(data)
"""


def _start(tmp: Path, module: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp), _LIB]))
    return subprocess.Popen([sys.executable, "-m", "ringline", "serve", f"{module}:echo", *args],
                            cwd=tmp, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, start_new_session=True)


def _wait_line(proc: subprocess.Popen[str], pattern: str, lines: list[str],
               timeout: float = 60.0) -> re.Match[str]:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        m = rx.search(line)
        if m:
            return m
    raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(lines))


def test_udp_served_by_every_worker(tmp_path: Path) -> None:
    (tmp_path / "udpapp.py").write_text(textwrap.dedent(APP))
    proc = _start(tmp_path, "udpapp", "--bind", "127.0.0.1:0", "--workers", "2",
                  "--udp", "127.0.0.1:0")
    lines: list[str] = []
    try:
        m = _wait_line(proc, r"serving .* with 2 worker\(s\) .*UDP on 127\.0\.0\.1:(\d+)", lines)
        port = int(m.group(1))
        pids = set()
        # Many source ports: SO_REUSEPORT hashes each flow to one worker.
        for i in range(32):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                c.settimeout(10)
                payload = b"dgram %d" % i
                c.sendto(payload, ("127.0.0.1", port))
                data, addr = c.recvfrom(1000)
                pid, _, echoed = data.partition(b":")
                assert echoed == payload and addr == ("127.0.0.1", port)
                pids.add(int(pid))
        assert len(pids) == 2, pids        # both workers took datagrams
        # TCP still served alongside.
        with socket.create_connection(("127.0.0.1", int(re.search(
                r"on 127\.0\.0\.1:(\d+) with", m.group(0)).group(1))), timeout=10) as s:
            s.sendall(b"tcp")
            assert s.recv(10) == b"tcp"
        proc.terminate()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_udp_without_on_udp_is_a_clear_startup_error(tmp_path: Path) -> None:
    (tmp_path / "noudp.py").write_text(textwrap.dedent(NO_UDP_APP))
    proc = _start(tmp_path, "noudp", "--bind", "127.0.0.1:0", "--workers", "1",
                  "--udp", "127.0.0.1:0")
    try:
        code = proc.wait(60)
        err = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 3, err
    assert "noudp defines no on_udp(sock)" in err
