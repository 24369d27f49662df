"""An accept burst's address installs, native server with fixed descriptors.

N loopback connections are queued in the backlog while the loop is busy,
then the loop accepts them all; each accepted connection takes a temporary
process fd (FIXED_FD_INSTALL) for its addresses before its handler starts.
Prints the io_uring_enter calls and CPU time per accept over the burst and
the peak number of installs in flight (an upper bound on the process fds
they hold at once; native/serve.py ADDRESS_INSTALLS bounds it).

    PYTHONPATH=src python bench/accept_burst_fds.py [--conns 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from typing import Any

import ringline
from ringline.native import serve as native_serve


class CountingOps:
    """The server's socket ops, counting address installs in flight."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.now = 0
        self.peak = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def install_call(self, *args: Any) -> Any:
        fut = self.real.install_call(*args)
        self.now += 1
        self.peak = max(self.peak, self.now)
        fut.add_done_callback(self._done)
        return fut

    def _done(self, _: Any) -> None:
        self.now -= 1


def burst(n: int) -> str:
    ops = CountingOps(native_serve._sockops)
    native_serve._sockops = ops     # type: ignore[assignment]
    started = 0

    async def handler(conn: ringline.Connection) -> None:
        nonlocal started
        started += 1
        assert conn.peer_addr is not None
        await conn.recv()

    async def main() -> str:
        loop = asyncio.get_running_loop()
        server = await ringline.serve(handler, "127.0.0.1", 0)
        clients = []
        try:
            for _ in range(n):
                s = socket.socket()
                s.setblocking(False)
                try:
                    s.connect(("127.0.0.1", server.port))
                except BlockingIOError:
                    pass
                clients.append(s)
            time.sleep(0.05)
            e0, c0 = loop.statistics()["enters"], time.process_time()
            while started < n:
                await asyncio.sleep(0)
            e1, c1 = loop.statistics()["enters"], time.process_time()
            return (f"{n} connections: {e1 - e0} io_uring_enter calls, "
                    f"{(c1 - c0) / n * 1e6:.1f} us CPU per accept, "
                    f"peak address installs in flight {ops.peak}")
        finally:
            for s in clients:
                s.close()
            await server.shutdown(2.0)

    cfg = ringline.Config(max_connections=n + 16, backlog=n + 16)
    return ringline.run(main(), config=cfg)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=2000)
    print(burst(ap.parse_args().conns))
