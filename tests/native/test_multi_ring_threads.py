"""Several ringline loops in one process, one per thread, serving one port.

Each loop has its own ring, fixed file table, NetState and Server; the
listeners share the port with SO_REUSEPORT (``Config.reuse_port``) and the
kernel spreads the connections over them.  This is how one process holds
more native connections than RLIMIT_NOFILE (docs/operations.md): with direct
descriptors a connection takes a slot in its ring's table, never an entry
of the process fd table, and each table may be as large as RLIMIT_NOFILE.

Real loopback sockets; blocking clients in the test's own thread.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest

import ringline
from ringline import Config
from ringline._net import stream as _stream
from tests.support import HOST, IO_TIMEOUT, client_socket, open_fd_count, pattern, recv_exactly

pytestmark = pytest.mark.timeout(60)

RINGS = 2
CLIENTS = 40        # all on one ring: probability 2**-39


@pytest.fixture(params=["direct", "plain"])
def mode(request, config_defaults):
    """Direct descriptors, and the plain-fd fallback for comparison."""
    config_defaults(_fixed_files=request.param == "direct")
    return request.param


class RingThread(threading.Thread):
    """One ringline loop on its own thread, serving ``port`` (0: pick one)
    with an echo handler that records which connections it served."""

    def __init__(self, index: int, port: int) -> None:
        super().__init__(name=f"ring{index}", daemon=True)
        self.port = port
        self.loop: asyncio.AbstractEventLoop | None = None
        self.served: list[int] = []          # thread idents the handlers ran on
        self.peers: list[Any] = []           # conn.peer_addr of each connection
        self.live = 0
        self.stats: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.started = threading.Event()
        self._stop_fut: asyncio.Future[None] | None = None

    async def _echo(self, conn: ringline.Connection) -> None:
        self.served.append(threading.get_ident())
        self.peers.append(conn.peer_addr)
        self.live += 1
        try:
            while data := await conn.recv():
                conn.send_nowait(data)
                await conn.drain()
        finally:
            self.live -= 1

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self._stop_fut = loop.create_future()
        server = await ringline.serve(self._echo, HOST, self.port, config=Config(reuse_port=True))
        self.port = server.port
        st = _stream.net_state_for(loop)
        self.stats["fixed_files"] = st.fixed_files
        self.stats["fixed_reason"] = st.fixed_reason
        self.started.set()
        await self._stop_fut
        await server.shutdown(2.0)
        await server.wait_closed()
        self.stats["fixed_live_after"] = st.statistics()["fixed_live"]

    def run(self) -> None:
        try:
            ringline.run(self._main())
        except BaseException as exc:      # reported by the test
            self.error = exc
            self.started.set()

    def call(self, fn: Any) -> Any:
        """``fn()`` run on this ring's loop thread; its result."""
        async def call() -> Any:
            return fn()
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(IO_TIMEOUT)

    def stop(self) -> None:
        assert self.loop is not None and self._stop_fut is not None
        self.loop.call_soon_threadsafe(self._stop_fut.set_result, None)


def test_two_loops_on_two_threads_share_a_port(mode):
    fds_at_start = open_fd_count()
    rings = [RingThread(0, 0)]
    rings[0].start()
    assert rings[0].started.wait(IO_TIMEOUT) and rings[0].error is None, rings[0].error
    rings.append(RingThread(1, rings[0].port))
    rings[1].start()
    assert rings[1].started.wait(IO_TIMEOUT) and rings[1].error is None, rings[1].error
    port = rings[0].port
    assert rings[1].port == port
    for r in rings:
        assert r.stats["fixed_files"] == (1 if mode == "direct" else 0), r.stats["fixed_reason"]

    base = open_fd_count()
    clients: list[socket.socket] = []
    try:
        for i in range(CLIENTS):
            s = client_socket(port)
            clients.append(s)
            # Bytes exact, each connection its own pattern, more than one
            # receive buffer's worth.
            data = pattern(70_000 + i, seed=i)
            s.sendall(data)
            assert recv_exactly(s, len(data)) == data
        per_ring = [r.call(lambda r=r: r.live) for r in rings]
        assert sum(per_ring) == CLIENTS
        assert all(k > 0 for k in per_ring), f"a ring accepted nothing: {per_ring}"
        for r in rings:
            # Each handler ran on its own loop's thread.
            assert set(r.served) == {r.ident}
        # Every connection was served once, by one ring, with its address.
        peers = sorted(p for r in rings for p in r.peers)
        assert peers == sorted(s.getsockname() for s in clients)
        if mode == "direct":
            # Each ring's table holds its own connections, and the server
            # side took no entry of the process fd table: only the clients'.
            assert [r.call(_loop_fixed_live(r)) for r in rings] == per_ring
            assert open_fd_count() == base + CLIENTS
        else:
            assert open_fd_count() == base + 2 * CLIENTS
        # Still echoing after all are open.
        for i, s in enumerate(clients):
            s.sendall(b"again %d" % i)
            assert recv_exactly(s, len(b"again %d" % i)) == b"again %d" % i
    finally:
        for s in clients:
            s.close()
    for r in rings:
        r.stop()
    for r in rings:
        r.join(IO_TIMEOUT)
        assert not r.is_alive()
        assert r.error is None, r.error
        assert r.live == 0
        if mode == "direct":
            assert r.stats["fixed_live_after"] == 0
    # Both rings, their wake-up eventfds and listeners are gone.
    assert open_fd_count() == fds_at_start


def _loop_fixed_live(r: RingThread) -> Any:
    """A callable for ``r.call``: the ring's count of live fixed slots."""
    assert r.loop is not None
    loop = r.loop
    return lambda: _stream.net_state_for(loop).statistics()["fixed_live"]
