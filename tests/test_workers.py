"""Multi-worker launcher: processes share a port via SO_REUSEPORT, stop gracefully."""

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
