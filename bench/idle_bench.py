"""Memory per idle connection: bytes the SERVER process holds per open, idle TCP connection.

    python bench/idle_bench.py                 # 10,000 idle connections, all four servers
    python bench/idle_bench.py --quick         # 2,000 connections (what `make bench --quick` runs)
    python bench/idle_bench.py -n 100000 --only native   # 100,000 native connections
    python bench/idle_bench.py -n 100000 --only native --rings 6   # the same, rings chosen

Servers (each in its own process, so its memory is all it measures):

    native    ringline.serve(), the handler parked in ``await conn.recv()``
    portable  the same handler on the portable backend (uvloop underneath;
              not in the default set: ``--only portable``)
    aioface   a Protocol server (loop.create_server) on ringline's loop
    uvloop    the same Protocol on uvloop
    asyncio   the same Protocol on the standard asyncio loop

Client processes open the connections (bound to several source addresses
127.0.0.x so the ephemeral port range is no limit) and keep them open and
silent.  After a warm-up (connections opened and closed, so one-time
allocations are made) the server's RSS and Pss_Anon (/proc/PID/smaps_rollup)
are read, the N connections are opened, and read again once the server has
all N: the deltas divided by N are the figures.

RLIMIT_NOFILE is raised inside this benchmark's own processes (to the hard
limit, and the hard limit too when running as root), never by the library.
Results go to bench/results/idle.json.

Several rings (native only, ``--rings K``).  A native connection is a
direct descriptor in its ring's fixed file table, not an entry of the
process fd table, but the kernel refuses to register a table larger than
RLIMIT_NOFILE (EMFILE from io_uring_register).  So where the hard limit is below N (20,000 on
the development VM, no CAP_SYS_RESOURCE) the server runs K ringline loops,
one per thread, each serving the same port with SO_REUSEPORT and holding a
fixed table of up to RLIMIT_NOFILE entries; the kernel spreads the
connections over the K listeners.  The default (``--rings 0``) picks the
fewest rings whose tables hold N with 15% to spare.  The server's process
fd count is read before and after the N connections: it must not grow with
N (only a listener, a ring fd and an eventfd per ring).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = ("native", "aioface", "uvloop", "asyncio", "portable")
DEFAULT_KINDS = KINDS[:4]
PER_CLIENT = 5000          # connections per client process
SOURCES = 8                # client source addresses 127.0.0.2 .. 127.0.0.9
FILE_SLOTS = 64            # Config.file_slots of the native server (its default)


def raise_nofile(want: int) -> int:
    """Raise this process's RLIMIT_NOFILE soft limit toward ``want`` (and the
    hard limit too when allowed); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            pass
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def memory(pid: int) -> tuple[int, int]:
    """(RSS, Pss_Anon) of ``pid`` in bytes, from /proc/PID/smaps_rollup."""
    rss = pss_anon = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key == "Rss":
                rss = int(rest.split()[0]) * 1024
            elif key == "Pss_Anon":
                pss_anon = int(rest.split()[0]) * 1024
    return rss, pss_anon


# ---------------------------------------------------------------------------
# Server process
# ---------------------------------------------------------------------------

def ring_capacity(nofile: int) -> int:
    """Connections one ring's fixed file table can hold under ``nofile``:
    the table (max_connections + file_slots) may not exceed RLIMIT_NOFILE;
    128 fds stay for the process's own use."""
    return nofile - FILE_SLOTS - 128


def serve(kind: str, n: int, rings: int) -> None:
    nofile = raise_nofile(n + 4096)
    if kind == "native" and rings == 0:
        # The fewest rings whose tables hold n with 15% to spare (the kernel's
        # SO_REUSEPORT hash spreads connections evenly, not exactly).
        cap = ring_capacity(nofile)
        rings = 1 if n + 1000 <= cap else -(-n * 115 // (100 * cap))
    if kind == "native" and rings > 1:
        serve_rings(n, rings, nofile)
        return
    live = 0

    async def report() -> None:
        # The count of open connections, each time it changes.
        last = -1
        while True:
            if live != last:
                last = live
                print(live, flush=True)
            await asyncio.sleep(0.05)

    class Idle(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            nonlocal live
            live += 1

        def connection_lost(self, exc: BaseException | None) -> None:
            nonlocal live
            live -= 1

    async def handler(conn) -> None:  # type: ignore[no-untyped-def]
        nonlocal live
        live += 1
        try:
            while await conn.recv():
                pass
        finally:
            live -= 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if kind == "portable":
            import ringline

            server = await ringline.serve(handler, "0.0.0.0", 0)
            port = server.port
        elif kind == "native":
            import ringline
            from ringline._net.stream import net_state_for

            server = await ringline.serve(handler, "0.0.0.0", 0)
            port = server.port
            st = net_state_for(loop)
            # Direct descriptors need a fixed file table no larger than RLIMIT_NOFILE.
            print(f"# RLIMIT_NOFILE {nofile}, direct descriptors: {st.fixed_files == 1}"
                  f"{'' if st.fixed_reason is None else f' ({st.fixed_reason})'}",
                  file=sys.stderr, flush=True)
        else:
            server = await loop.create_server(Idle, "0.0.0.0", 0, backlog=4096)
            port = server.sockets[0].getsockname()[1]
        print(f"port {port} rings 1", flush=True)
        await report()

    if kind in ("native", "aioface", "portable"):
        import ringline

        # The fixed file table (max_connections + file_slots) must fit RLIMIT_NOFILE.
        cfg = ringline.Config(max_connections=max(1000, min(n + 1000, nofile - 128)),
                              backlog=4096)
        backend = "portable" if kind == "portable" else None
        runner = asyncio.Runner(
            loop_factory=lambda: ringline.new_event_loop(cfg, backend=backend))
    elif kind == "uvloop":
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    with runner:
        runner.run(main())


def serve_rings(n: int, rings: int, nofile: int) -> None:
    """The native server as ``rings`` ringline loops, one per thread, each
    with its own ring (and fixed file table), NetState and Server on one
    SO_REUSEPORT port.  The main thread only reports the total count."""
    import threading

    import ringline
    from ringline._net.stream import net_state_for

    per_ring = min(n + 1000, ring_capacity(nofile))
    cfg = ringline.Config(max_connections=per_ring, file_slots=FILE_SLOTS, backlog=4096,
                          reuse_port=True)
    live = [0] * rings        # one counter per ring, written by its thread only
    port = 0
    started = threading.Semaphore(0)
    failures: list[str] = []

    def run_ring(i: int) -> None:
        async def handler(conn) -> None:  # type: ignore[no-untyped-def]
            live[i] += 1
            try:
                while await conn.recv():
                    pass
            finally:
                live[i] -= 1

        async def main() -> None:
            nonlocal port
            loop = asyncio.get_running_loop()
            try:
                server = await ringline.serve(handler, "0.0.0.0", port, config=cfg)
            except BaseException as exc:
                failures.append(f"ring {i}: {exc!r}")
                started.release()
                raise
            port = server.port
            st = net_state_for(loop)
            if st.fixed_files != 1:
                failures.append(f"ring {i}: no direct descriptors ({st.fixed_reason})")
            started.release()
            await loop.create_future()      # until the benchmark kills the process

        with asyncio.Runner(loop_factory=lambda: ringline.new_event_loop(cfg)) as runner:
            runner.run(main())

    for i in range(rings):
        # Ring 0 picks the port; the others join it once it is known.
        threading.Thread(target=run_ring, args=(i,), daemon=True, name=f"ring{i}").start()
        started.acquire()
        if failures:
            print("# " + "; ".join(failures), file=sys.stderr, flush=True)
            raise SystemExit(1)
    print(f"# RLIMIT_NOFILE {nofile}, {rings} rings x {per_ring} direct descriptors",
          file=sys.stderr, flush=True)
    print(f"port {port} rings {rings}", flush=True)
    last = -1
    while True:
        total = sum(live)
        if total != last:
            last = total
            print(total, flush=True)
            if total == n:
                print(f"# per ring: {live}", file=sys.stderr, flush=True)
        time.sleep(0.05)


# ---------------------------------------------------------------------------
# Client process: open connections, report, stay silent until stdin closes
# ---------------------------------------------------------------------------

def client(port: int, n: int, first_source: int) -> None:
    raise_nofile(n + 256)
    socks = []
    try:
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            # The port is picked at connect() for the whole 4-tuple, not at bind().
            s.setsockopt(socket.IPPROTO_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT
            s.bind((f"127.0.0.{2 + (first_source + i) % SOURCES}", 0))
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
    except OSError as exc:
        print(f"failed after {len(socks) - 1} connections: {exc}", flush=True)
    else:
        print("open", flush=True)
    sys.stdin.read()          # until the benchmark closes our stdin
    for s in socks:
        s.close()


def open_clients(port: int, n: int) -> list[subprocess.Popen[str]]:
    procs = []
    left = n
    idx = 0
    while left > 0:
        k = min(PER_CLIENT, left)
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--client", str(port), str(k), str(idx)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        left -= k
        idx += 1
    failed = []
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        if line != "open":
            failed.append(line)
    if failed:
        close_clients(procs)
        raise RuntimeError(f"a client {failed[0]}")
    return procs


def close_clients(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
    for p in procs:
        p.wait(timeout=60)


def wait_count(srv: subprocess.Popen[str], want: int, timeout: float) -> int:
    assert srv.stdout is not None
    deadline = time.monotonic() + timeout
    count = -1
    while count != want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"server has {count} connections, wanted {want}")
        line = srv.stdout.readline()
        if not line:
            raise RuntimeError("server exited")
        count = int(line)
    return count


def fd_count(pid: int) -> int:
    """Entries in the process fd table of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def measure(kind: str, n: int, warm: int, rings: int = 0) -> dict[str, object]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    srv = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(n), str(rings)],
                           stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert srv.stdout is not None
        line = srv.stdout.readline()
        if not line.startswith("port "):
            raise RuntimeError(f"{kind} server did not start")
        port = int(line.split()[1])
        rings = int(line.split()[3])
        wait_count(srv, 0, 10)
        # Warm-up: one-time allocations (tasks machinery, free lists, ring).
        for _ in range(2):
            procs = open_clients(port, warm)
            wait_count(srv, warm, 60)
            close_clients(procs)
            wait_count(srv, 0, 60)
        time.sleep(0.3)
        rss0, anon0 = memory(srv.pid)
        fds0 = fd_count(srv.pid)
        t0 = time.monotonic()
        procs = open_clients(port, n)
        try:
            wait_count(srv, n, 300)
        except RuntimeError:
            close_clients(procs)
            raise
        elapsed = time.monotonic() - t0
        time.sleep(0.5)
        rss1, anon1 = memory(srv.pid)
        fds1 = fd_count(srv.pid)
        close_clients(procs)
        return {
            "kind": kind, "connections": n, "open_seconds": round(elapsed, 2),
            "rss_per_conn": (rss1 - rss0) / n, "pss_anon_per_conn": (anon1 - anon0) / n,
            "rss_before": rss0, "rss_after": rss1, "rings": rings,
            "server_fds_before": fds0, "server_fds_after": fds1,
        }
    finally:
        srv.kill()
        srv.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="idle connections (default 10000)")
    parser.add_argument("--quick", action="store_true", help="2,000 connections")
    parser.add_argument("--only", action="append", choices=KINDS, help="servers to run")
    parser.add_argument("--rings", type=int, default=0,
                        help="native: ringline loops (threads) in the server process; "
                             "0 = as few as RLIMIT_NOFILE allows for -n (default)")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), int(args.serve[2]))
        return 0
    if args.client:
        client(*args.client)
        return 0
    n = 2000 if args.quick and args.n == 10_000 else args.n
    warm = min(n, 500)
    results = []
    print(f"{n} idle connections; bytes per connection of the server process")
    print(f"{'server':10} {'RSS':>8} {'Pss_Anon':>9} {'open s':>7} {'rings':>5} {'fds':>9}")
    for kind in args.only or DEFAULT_KINDS:
        try:
            r = measure(kind, n, warm, args.rings if kind == "native" else 1)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            print(f"{kind:10} failed: {exc}")
            results.append({"kind": kind, "connections": n, "error": str(exc)})
            continue
        results.append(r)
        fds = f"{r['server_fds_before']}->{r['server_fds_after']}"
        print(f"{kind:10} {r['rss_per_conn']:8.0f} {r['pss_anon_per_conn']:9.0f} "
              f"{r['open_seconds']:7.1f} {r['rings']:5} {fds:>9}", flush=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "idle.json").write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
