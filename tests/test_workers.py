"""Multi-worker launcher: processes share a port via SO_REUSEPORT, stop gracefully."""

import os
import socket

import ringline
from ringline.workers import WorkerPool


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
