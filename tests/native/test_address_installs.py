"""The addresses of accepted native connections (native/serve.py).

A fixed descriptor has no getpeername(2): the server asks the kernel for a
temporary process fd per connection (FIXED_FD_INSTALL).  These tests run
the server in a child process with a small RLIMIT_NOFILE and check that an
accept burst holds at most ADDRESS_INSTALLS of those fds at once (every
connection still gets its addresses), that a brief fd shortage is waited
out, and that a lasting one lets the connections run without addresses,
counted and warned about once.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from ringline.native.serve import ADDRESS_INSTALLS
from tests.support import HOST, IO_TIMEOUT, recv_exactly
from tests.support.faults import spawn_child
from tests.support.healthy import ThreadClients, assert_exact

pytestmark = [pytest.mark.timeout(60), pytest.mark.needs_extension]

#: Bytes each client of the shortage tests streams at least.
MIN_BYTES = 256 << 10

#: Connections in the burst: several times the budget.
BURST = 5 * ADDRESS_INSTALLS

#: Process fds the burst's child may use above what it holds before it.
SLACK = 16

BURST_CHILD = """
import asyncio, json, os, resource, sys, time
import ringline
from ringline import Config
from ringline._net import stream
from ringline.native import serve as native_serve

N = {n}
peers = []
fd_counts = []
flight = {{"now": 0, "max": 0}}

def fd_count():
    return len(os.listdir("/proc/self/fd")) - 1     # less listdir's own

class CountingOps:
    # The server's socket ops, counting address installs in flight.
    def __init__(self, real):
        self.real = real
    def __getattr__(self, name):
        return getattr(self.real, name)
    def install_call(self, *args):
        fut = self.real.install_call(*args)
        flight["now"] += 1
        flight["max"] = max(flight["max"], flight["now"])
        fut.add_done_callback(lambda _: flight.__setitem__("now", flight["now"] - 1))
        return fut

native_serve._sockops = CountingOps(native_serve._sockops)

async def handler(conn):
    peers.append(conn.peer_addr)
    fd_counts.append(fd_count())
    conn.send_nowait(bytes(await conn.recv_exactly(8)))
    await conn.drain()

async def main():
    loop = asyncio.get_running_loop()
    server = await ringline.serve(handler, "127.0.0.1", 0)
    ns = stream.net_state_for(loop)
    # The fixed table is registered (it needs a limit above its size): now
    # leave room for the budget of installs and a few more fds, no more.
    base = fd_count()
    top = max(int(fd) for fd in os.listdir("/proc/self/fd")) + 1
    limit = top + {budget} + {slack}
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    print(json.dumps({{"port": server.port, "fixed": ns.use_fixed_files(), "base": base,
                      "limit": limit}}), flush=True)
    # Busy while the parent connects: the burst waits in the backlog and
    # comes in at once.
    time.sleep(1.0)
    deadline = loop.time() + 10
    while len(peers) < N and loop.time() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.to_thread(sys.stdin.readline)
    await server.shutdown(1.0)
    print(json.dumps({{"peers": peers, "fd_counts": fd_counts, "after": fd_count(),
                      "max_in_flight": flight["max"], "retries": server.address_retries,
                      "unknown": ns.addresses_unknown}}), flush=True)

ringline.run(main(), config=Config(max_connections=N + 16, file_slots=0, backlog=N + 16))
"""


def _skip_unless_fixed(info: dict) -> None:
    if not info["fixed"]:
        # Before Linux 6.8 (no FIXED_FD_INSTALL) connections are plain fds,
        # with addresses from getpeername: nothing here to bound.
        pytest.skip("connections use plain fds: the kernel lacks FIXED_FD_INSTALL")


def test_accept_burst_bounds_address_fds_and_every_peer_is_known():
    """A burst of BURST connections queued while the child's loop is busy,
    the child's RLIMIT_NOFILE soft limit set (after its fixed table is
    registered) to its highest fd + ADDRESS_INSTALLS + SLACK: no install
    meets EMFILE (none is retried), at most ADDRESS_INSTALLS are in flight,
    every connection knows its peer (the client's own address) and echoes
    exact, and no fd is left over."""
    child = spawn_child(BURST_CHILD.format(n=BURST, budget=ADDRESS_INSTALLS, slack=SLACK))
    clients: list[socket.socket] = []
    try:
        info = json.loads(child.stdout.readline() or "null")
        assert info is not None, child.stderr.read()
        _skip_unless_fixed(info)
        for _ in range(BURST):
            clients.append(socket.create_connection((HOST, info["port"]), timeout=IO_TIMEOUT))
        for i, s in enumerate(clients):
            s.sendall(i.to_bytes(8, "big"))
        for i, s in enumerate(clients):
            s.settimeout(IO_TIMEOUT)
            assert recv_exactly(s, 8) == i.to_bytes(8, "big")
        ports = sorted(s.getsockname()[1] for s in clients)
        child.stdin.write("\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=IO_TIMEOUT)
        assert child.returncode == 0, err
    finally:
        for s in clients:
            s.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    res = json.loads(out)
    assert len(res["peers"]) == BURST, res["peers"]
    assert all(p is not None and p[0] == HOST for p in res["peers"]), res["peers"]
    assert sorted(p[1] for p in res["peers"]) == ports
    assert res["retries"] == 0 and res["unknown"] == 0, res
    assert res["max_in_flight"] <= ADDRESS_INSTALLS, res["max_in_flight"]
    # Handlers see the burst's fds (its fixed slots are not process fds).
    assert max(res["fd_counts"]) <= info["base"] + ADDRESS_INSTALLS + SLACK, res["fd_counts"]
    assert res["after"] <= info["base"] + 2, (res["after"], info["base"])


SHORTAGE_CHILD = """
import asyncio, json, logging, os, sys, threading
import ringline
from ringline import Config
from ringline._net import stream

MODE = {mode!r}

class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []
    def emit(self, record):
        self.messages.append(record.getMessage())

warnings = Warnings()
logging.getLogger("ringline.serve").addHandler(warnings)
peers = []

async def echo(conn):
    peers.append(conn.peer_addr)
    while data := await conn.recv(1 << 20):
        conn.send_nowait(data)
        await conn.drain()

async def main():
    loop = asyncio.get_running_loop()
    server = await ringline.serve(echo, "127.0.0.1", 0)
    ns = stream.net_state_for(loop)
    lines = asyncio.Queue()
    def reader():        # started before the fds run out; needs none later
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
    threading.Thread(target=reader, daemon=True).start()
    await asyncio.sleep(0.05)
    hold = []
    try:
        while True:
            hold.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    def release():
        while hold:
            os.close(hold.pop())
    print(json.dumps({{"port": server.port, "fixed": ns.use_fixed_files(),
                      "held": len(hold)}}), flush=True)
    await lines.get()               # the clients are connected
    if MODE == "brief":
        await asyncio.sleep(0.3)
        release()
    await lines.get()               # the clients are done
    release()
    print(json.dumps({{"peers": peers, "unknown": ns.addresses_unknown,
                      "retries": server.address_retries,
                      "warnings": warnings.messages}}), flush=True)
    peers.clear()
    await lines.get()               # one more client came and went
    await server.shutdown(1.0)
    print(json.dumps({{"peers": peers, "unknown": ns.addresses_unknown}}), flush=True)

ringline.run(main(), config=Config(max_connections=48, file_slots=0))
"""


def _shortage(mode: str, n: int) -> tuple[dict, dict, list]:
    """Run SHORTAGE_CHILD: ``n`` streaming clients while its fds are all
    taken (for 0.3 s with ``brief``, else until they are done), then one
    more client once they are free.  The child's reports and the clients'
    results."""
    child = spawn_child(SHORTAGE_CHILD.format(mode=mode),
                        limits={"RLIMIT_NOFILE": (64, 64)})
    try:
        info = json.loads(child.stdout.readline() or "null")
        assert info is not None, child.stderr.read()
        _skip_unless_fixed(info)
        assert info["held"] > 0, info
        clients = ThreadClients(info["port"], n, min_bytes=MIN_BYTES).start()
        deadline = time.monotonic() + IO_TIMEOUT
        while not all(r.sent for r in clients.results) and time.monotonic() < deadline:
            time.sleep(0.01)
        child.stdin.write("connected\n")
        child.stdin.flush()
        results = clients.finish()
        child.stdin.write("done\n")
        child.stdin.flush()
        during = json.loads(child.stdout.readline() or "null")
        assert during is not None, child.stderr.read()
        # Enough fds again: the next connection has its addresses.
        results += ThreadClients(info["port"], 1, seed0=77, min_bytes=MIN_BYTES).start().finish()
        child.stdin.write("after\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=IO_TIMEOUT)
        assert child.returncode == 0, err
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return during, json.loads(out), results


def test_fd_shortage_is_waited_out_and_addresses_are_known():
    """Every process fd is taken while 4 clients connect, and freed 0.3 s
    later: the installs are retried (not given up), every handler starts
    with its peer's address, nothing is counted or warned, bytes exact."""
    during, after, results = _shortage("brief", 4)
    assert_exact(results, MIN_BYTES)
    assert len(during["peers"]) == 4 and all(p and p[0] == HOST for p in during["peers"]), during
    assert during["retries"] > 0, during
    assert during["unknown"] == 0 and during["warnings"] == [], during
    assert len(after["peers"]) == 1 and after["peers"][0][0] == HOST, after


def test_lasting_fd_shortage_runs_without_addresses_counted_and_warned_once():
    """Every process fd stays taken while 4 clients stream: after
    ADDRESS_RETRY_FOR their handlers start without addresses and echo
    exact; each is counted (addresses_unknown) and one warning is logged
    for all of them.  Once fds are free, a new connection has its
    addresses again."""
    during, after, results = _shortage("lasting", 4)
    assert_exact(results, MIN_BYTES)
    assert during["peers"] == [None] * 4, during
    assert during["unknown"] == 4 and during["retries"] > 0, during
    assert len(during["warnings"]) == 1, during["warnings"]
    assert "addresses_unknown" in during["warnings"][0], during["warnings"]
    assert len(after["peers"]) == 1 and after["peers"][0][0] == HOST, after
    assert after["unknown"] == 4, after
