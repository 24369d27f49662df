"""Process-level helpers for the fault-matrix tests: a child interpreter
under tightened rlimits, its CPU time, and resident memory.

Limits (RLIMIT_NOFILE, RLIMIT_MEMLOCK) and dropped capabilities apply to
the whole process, so the code under them runs in a throw-away child made
with :func:`spawn_child`; the pytest process is never changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

from tests.support.net import HOST, IO_TIMEOUT, client_socket, pattern, recv_exactly, rst_close
from tests.support.paths import ROOT, SRC

#: Prologue for a child's script: lower rlimits before anything else runs.
#: ``LIMITS`` is a dict name -> (soft, hard) the caller substitutes.
RLIMIT_PROLOGUE = """
import resource
for _name, (_soft, _hard) in LIMITS.items():
    resource.setrlimit(getattr(resource, _name), (_soft, _hard))
"""

#: Prologue that drops CAP_IPC_LOCK from this (root) process, so that
#: RLIMIT_MEMLOCK applies to io_uring's accounting of pinned memory as it
#: does for an ordinary user (root's CAP_IPC_LOCK bypasses it).
DROP_IPC_LOCK = """
import ctypes, ctypes.util
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
class _Hdr(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]
_hdr = _Hdr(0x20080522, 0)          # _LINUX_CAPABILITY_VERSION_3
_data = (_Data * 2)()
assert _libc.capget(ctypes.byref(_hdr), _data) == 0, ctypes.get_errno()
_CAP_IPC_LOCK = 14
for _d in _data[:1]:
    _d.effective &= ~(1 << _CAP_IPC_LOCK)
    _d.permitted &= ~(1 << _CAP_IPC_LOCK)
    _d.inheritable &= ~(1 << _CAP_IPC_LOCK)
assert _libc.capset(ctypes.byref(_hdr), _data) == 0, ctypes.get_errno()
"""


def child_env() -> dict[str, str]:
    """The environment of a child that imports ringline from this checkout
    and the tests package from the repository root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(ROOT)])
    return env


def spawn_child(script: str, *, limits: dict[str, tuple[int, int]] | None = None,
                drop_ipc_lock: bool = False) -> subprocess.Popen[str]:
    """Start ``python -c script`` with ``limits`` applied first (and
    CAP_IPC_LOCK dropped if asked); stdin/stdout are text pipes."""
    prologue = f"LIMITS = {limits or {}!r}\n" + RLIMIT_PROLOGUE
    if drop_ipc_lock:
        prologue += DROP_IPC_LOCK
    code = prologue + textwrap.dedent(script)
    return subprocess.Popen([sys.executable, "-c", code], env=child_env(), cwd=str(ROOT),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of process ``pid`` (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# -- what both fault-matrix modules drive their faults with -------------------

async def threads(fn: Callable[..., Any], n: int, *args: Any) -> list[Any]:
    """``fn(*args, i)`` in ``n`` threads at once; their results."""
    return await asyncio.gather(*(asyncio.to_thread(fn, *args, i) for i in range(n)))


def rst_listener(read: int, then_send: bytes = b"") -> tuple[socket.socket, Callable[[], None]]:
    """A blocking listener: each peer ``serve_one()`` accepts gets
    ``then_send``, is read for ``read`` bytes, then reset (SO_LINGER 0).
    Returns (listening socket, serve_one) (run serve_one in a thread)."""
    ls = socket.create_server((HOST, 0))
    ls.settimeout(IO_TIMEOUT)

    def serve_one() -> None:
        s, _ = ls.accept()
        s.settimeout(IO_TIMEOUT)
        if then_send:
            s.sendall(then_send)
            time.sleep(0.05)    # the connect completes first, then the reset lands
        if read:
            recv_exactly(s, read)
        rst_close(s)

    return ls, serve_one


def digest_sender(port: int, size: int, i: int) -> bool:
    """Send the tag ``SINK`` and ``size`` bytes, half-close, check the
    SHA-256 digest the server's sink role answers with."""
    payload = pattern(size, seed=i)
    with client_socket(port) as s:
        s.sendall(b"SINK")
        for off in range(0, size, 1 << 16):
            s.sendall(payload[off:off + (1 << 16)])
        s.shutdown(socket.SHUT_WR)
        return recv_exactly(s, 32) == hashlib.sha256(payload).digest()


def child_stats(child: subprocess.Popen[str]) -> dict[str, Any]:
    """The counters a fault child prints when asked with ``stats``."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("stats\n")
    child.stdin.flush()
    return dict(json.loads(child.stdout.readline()))


def echo_works(s: socket.socket, msg: bytes, timeout: float, before: bytes = b"") -> bool:
    """Whether ``msg`` (after ``before``, sent earlier) is echoed in time."""
    s.settimeout(timeout)
    try:
        s.sendall(msg)
        return recv_exactly(s, len(before + msg)) == before + msg
    except (TimeoutError, OSError, EOFError):
        return False
