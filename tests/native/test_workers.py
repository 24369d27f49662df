"""Multi-worker launcher: processes share a port via SO_REUSEPORT, stop gracefully."""

import json
import os
import socket
import subprocess
import sys
import threading
import warnings

import pytest

import ringline
from ringline.native.workers import WorkerPool, _fork

pytestmark = pytest.mark.usefixtures("native_backend")


class Echo(ringline.Handler):
    async def on_accept(self, conn):
        while data := await conn.recv():
            conn.send_nowait(data)


def test_two_workers_serve_one_port_and_shut_down_cleanly():
    pool = WorkerPool(Echo, ("127.0.0.1", 0), ringline.Config(shutdown_timeout=1.0),
                      workers=2).start()
    try:
        assert pool.ready(10), "workers did not start listening"
        for i in range(20):
            with socket.create_connection(("127.0.0.1", pool.port), timeout=5) as s:
                msg = f"hello {i}".encode()
                s.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    chunk = s.recv(100)
                    assert chunk
                    got += chunk
                assert got == msg
    finally:
        pool.shutdown()
        codes = pool.wait(timeout=15)
    assert codes == [0, 0]


class WhoAmI(ringline.Handler):
    """Replies with the worker's pid and the cores it may run on."""

    @classmethod
    def create_for_worker(cls, worker_id):
        return cls()

    async def on_accept(self, conn):
        await conn.recv()
        cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
        await conn.send(f"{os.getpid()} {cores}\n".encode())


def ask(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"?")
        got = b""
        while not got.endswith(b"\n"):
            chunk = s.recv(100)
            assert chunk
            got += chunk
    pid, cores = got.decode().split()
    return int(pid), cores


def test_every_worker_listens_once_ready_and_is_pinned():
    pool = WorkerPool(WhoAmI, ("127.0.0.1", 0), ringline.Config(shutdown_timeout=1.0),
                      workers=2).start()
    try:
        assert pool.ready(10)
        seen = dict(ask(pool.port) for _ in range(64))
    finally:
        pool.shutdown()
        codes = pool.wait(timeout=15)
    assert codes == [0, 0]
    # SO_REUSEPORT spreads connections by their 4-tuple: 64 connections all
    # landing on one of two listening workers has probability 2**-63.
    assert set(seen) == set(pool.pids)
    if len(os.sched_getaffinity(0)) > 1:
        assert all("," not in cores for cores in seen.values()), seen


def test_shutdown_right_after_start_is_graceful():
    # SIGTERM may reach a worker before it has installed its handler: it must
    # still exit cleanly (0), not die of the signal (-15).
    for _ in range(3):
        pool = WorkerPool(Echo, ("127.0.0.1", 0), ringline.Config(shutdown_timeout=1.0),
                          workers=2).start()
        pool.shutdown()
        assert pool.wait(timeout=15) == [0, 0]


def test_ready_is_false_when_a_worker_cannot_bind():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)                        # no SO_REUSEPORT: workers cannot share it
    try:
        pool = WorkerPool(Echo, ("127.0.0.1", taken.getsockname()[1]),
                          ringline.Config(shutdown_timeout=1.0), workers=1).start()
        ok = pool.ready(10)
        if ok:
            pool.shutdown()
        codes = pool.wait(timeout=15)
        assert not ok
        assert codes == [1]
    finally:
        taken.close()


_FORK_NEXT_TO_IOWQ = r"""
import json, os, tempfile, warnings
import ringline
from ringline import fs
from ringline.native.workers import _fork

def fork_and_reap():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pid = _fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]

def thread_names():
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return names

async def main():
    with tempfile.TemporaryFile() as f:
        await fs.write(f.fileno(), b"x" * 4096, 0)
        await fs.fsync(f.fileno())          # always punted to an io-wq worker
    names = thread_names()
    return names, fork_and_reap()

names, warned = ringline.run(main())
print(json.dumps({"names": names, "warned": warned}))
"""


def test_forking_next_to_io_uring_workers_does_not_warn_but_other_threads_do():
    """io_uring's kernel workers (``iou-wrk-*``) count as threads of the
    process, and CPython 3.12+ warns when forking a multi-threaded process.
    They run no user code, so the launcher's fork does not warn for them (in
    a fresh interpreter: this one may hold other libraries' threads); a real
    second thread still gets the warning."""
    out = subprocess.run([sys.executable, "-c", _FORK_NEXT_TO_IOWQ], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    if not any(n.startswith("iou-") for n in got["names"]):
        pytest.skip(f"no io_uring worker thread to fork next to: {got['names']}")
    assert got["warned"] == [], got

    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pid = _fork()
            if pid == 0:                                  # child
                os._exit(0)
            os.waitpid(pid, 0)
    finally:
        stop.set()
        t.join()
    if sys.version_info >= (3, 12):
        assert any("multi-threaded" in str(w.message) for w in caught), caught
