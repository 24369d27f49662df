"""Native TLS: ringline's native API with ``ssl=`` vs uvloop's and asyncio's TLS.

    python bench/native_tls_bench.py               # rr and bulk, 3 rounds, every server
    python bench/native_tls_bench.py --quick       # smoke run: 1 round of 1 s
    python bench/native_tls_bench.py --instr       # callgrind instructions per request / MB
    python bench/native_tls_bench.py --servers ringline-native,uvloop-protocol --work rr

Servers (each a fresh subprocess, pinned to CPU 0, one TLS 1.3 server
context with a P-256 certificate made by ``openssl`` per run):

* ``ringline-native``: ``ringline.serve(echo, ssl=ctx)``, the handler
  ``recv`` -> ``send_nowait`` (no ``drain``, like the Protocol servers'
  ``write``; one message in flight per connection), i.e. native/tls.pyx;
* ``uvloop-protocol``: an ``asyncio.Protocol`` echo (``data_received`` ->
  ``transport.write``) behind ``loop.create_server(ssl=ctx)`` on uvloop;
* ``asyncio-protocol``: the same on asyncio's own loop;
* ``ringline-protocol``: the same on ringline's loop (the asyncio face's
  compiled TLS, aio/tls.pyx), for reference.
* ``ringline-native-memorybio`` (only when named in ``--servers``): the
  native server with ``RINGLINE_TLS_DIRECT=0``, i.e. over a MemoryBIO
  pair instead of the ring BIOs, for A/B runs.

Load (this process, pinned to CPU 1): ringline's native TLS client.

* ``rr``: 50 connections, each a closed loop of 64-byte request / 64-byte
  echo; requests/s over the measured window (handshakes excluded);
* ``bulk``: 4 connections, each a closed loop of 256 KiB messages echoed
  back; MB/s of payload (one direction counted).

The score is the server's CPU per request (per MB for bulk): the run time
of every thread of the server process (``/proc/PID/task/*/schedstat``)
over the measured window divided by the requests (MB) done in it.  The
machine is shared and the client is as expensive as the server (TLS both
ends), so req/s says more about the client and the neighbours than about
the server; CPU per request does not depend on the rate much.  Best of the
rounds; servers run round-robin, the first rotating between rounds.

``--instr``: each server runs under ``valgrind --tool=callgrind`` twice,
serving N short and N long runs of the same client; the difference of its
instruction counts divided by the difference in requests (MB) is the
server's instructions per request (MB): start-up, imports and handshakes
cancel out.  Immune to the neighbours.  Needs valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import glob
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
SERVERS = ("ringline-native", "uvloop-protocol", "asyncio-protocol", "ringline-protocol")
RR_CONNS, RR_SIZE = 50, 64
BULK_CONNS, BULK_SIZE = 4, 256 * 1024
MB = 1_000_000


# ---------------------------------------------------------------------------
# servers (child processes)
# ---------------------------------------------------------------------------

def _server_ctx(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def _client_ctx(cert: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cert)
    return ctx


class _EchoProtocol(asyncio.Protocol):
    def __init__(self, done) -> None:
        self.done = done

    def connection_made(self, transport) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.t.write(data)

    def connection_lost(self, exc) -> None:
        self.done()


def serve_child(kind: str, cert: str, key: str, exit_after: int) -> None:
    """Serve until killed, or until ``exit_after`` connections closed."""
    if kind == "ringline-native-memorybio":
        os.environ["RINGLINE_TLS_DIRECT"] = "0"   # read before ringline's first TLS use
        kind = "ringline-native"
    ctx = _server_ctx(cert, key)
    closed = [0]

    async def main(stop: asyncio.Future) -> None:
        def done() -> None:
            closed[0] += 1
            if exit_after and closed[0] >= exit_after and not stop.done():
                stop.set_result(None)

        if kind == "ringline-native":
            import ringline

            async def echo(conn) -> None:
                # As the Protocol servers: no drain (the clients keep one
                # message in flight per connection, so queues stay short).
                try:
                    while data := await conn.recv(1 << 20):
                        conn.send_nowait(data)
                finally:
                    done()

            server = await ringline.serve(echo, "127.0.0.1", 0, ssl=ctx)
            port = server.port
        else:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(lambda: _EchoProtocol(done), "127.0.0.1", 0,
                                              ssl=ctx)
            port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        await stop

    if kind.startswith("uvloop"):
        import uvloop
        loop = uvloop.new_event_loop()
    elif kind.startswith("ringline"):
        import ringline
        loop = ringline.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main(loop.create_future()))
    finally:
        loop.close()


# ---------------------------------------------------------------------------
# the load (this process, on ringline's native client)
# ---------------------------------------------------------------------------

def _proc_ns(pid: int) -> int:
    total = 0
    for f in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(f) as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


async def _load(port: int, cert: str, work: str, warmup: float, duration: float,
                pid: int | None, count: int | None = None) -> dict:
    """Drive the server: a timed window (warmup + duration), or ``count``
    round trips per connection (for --instr).  Returns requests (or bytes),
    seconds and the server's CPU ns over the window."""
    import ringline

    ctx = _client_ctx(cert)
    conns_n, size = (RR_CONNS, RR_SIZE) if work == "rr" else (BULK_CONNS, BULK_SIZE)
    conns = [await ringline.connect("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
             for _ in range(conns_n)]
    state = {"measuring": False, "stop": False, "done": 0}
    msg = b"q" * size

    async def one(c) -> None:
        n = 0
        while not state["stop"]:
            c.send_nowait(msg)
            got = await c.recv_exactly(size)
            if len(got) != size:
                raise AssertionError("short echo")
            if state["measuring"]:
                state["done"] += 1
            n += 1
            if count is not None and n >= count:
                break

    tasks = [asyncio.ensure_future(one(c)) for c in conns]
    if count is not None:
        await asyncio.gather(*tasks)
        result = {"requests": count * conns_n}
    else:
        await asyncio.sleep(warmup)
        ns0 = _proc_ns(pid) if pid else 0
        t0 = time.perf_counter()
        state["measuring"] = True
        await asyncio.sleep(duration)
        state["measuring"] = False
        elapsed = time.perf_counter() - t0
        ns1 = _proc_ns(pid) if pid else 0
        done = state["done"]
        state["stop"] = True
        await asyncio.gather(*tasks)
        result = {"requests": done, "seconds": elapsed, "server_ns": ns1 - ns0}
    for c in conns:
        c.close()
    for c in conns:
        await c.wait_closed()
    return result


def _start_server(kind: str, cert: str, key: str, exit_after: int = 0,
                  valgrind_out: str | None = None) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(SRC)) if p)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--server", kind, cert, key,
           str(exit_after)]
    if valgrind_out:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={valgrind_out}", *cmd]

    def pin() -> None:
        if hasattr(os, "sched_setaffinity") and 0 in os.sched_getaffinity(0):
            os.sched_setaffinity(0, {0})

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=pin)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"{kind}: no READY line: {line!r} {proc.stderr.read()[-500:]}")
    return proc, int(line.split()[1])


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()


def _run(coro):
    import ringline
    return ringline.run(coro)


def measure(kinds: list[str], works: list[str], rounds: int, warmup: float,
            duration: float, cert: str, key: str) -> dict:
    best: dict[tuple[str, str], dict] = {}
    for r in range(rounds):
        order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
        for work in works:
            for kind in order:
                proc, port = _start_server(kind, cert, key)
                try:
                    res = _run(_load(port, cert, work, warmup, duration, proc.pid))
                finally:
                    _stop(proc)
                units = res["requests"] if work == "rr" else res["requests"] * BULK_SIZE / MB
                cell = {"rate": units / res["seconds"],
                        "cpu_us": res["server_ns"] / 1e3 / max(units, 1e-9),
                        "util": res["server_ns"] / 1e9 / res["seconds"]}
                print(f"  round {r + 1} {work:4} {kind:18} {cell['rate']:10,.0f}"
                      f"{'/s' if work == 'rr' else ' MB/s'}  {cell['cpu_us']:8.1f} us"
                      f"/{'req' if work == 'rr' else 'MB'} (server cpu {cell['util']:.0%})",
                      flush=True)
                old = best.get((work, kind))
                if old is None or cell["cpu_us"] < old["cpu_us"]:
                    best[(work, kind)] = cell
    return {f"{w}/{k}": v for (w, k), v in best.items()}


def instr(kinds: list[str], works: list[str], cert: str, key: str, tmp: str) -> dict:
    """Server instructions per request / MB under callgrind (see the docstring)."""
    counts = {"rr": (20, 80), "bulk": (10, 40)}
    out: dict[str, float] = {}
    for work in works:
        short, long = counts[work]
        conns_n = RR_CONNS if work == "rr" else BULK_CONNS
        for kind in kinds:
            totals = []
            for n in (short, long):
                cg = os.path.join(tmp, f"cg.{kind}.{work}.{n}")
                proc, port = _start_server(kind, cert, key, exit_after=conns_n, valgrind_out=cg)
                try:
                    _run(_load(port, cert, work, 0, 0, None, count=n))
                    proc.wait(300)
                finally:
                    _stop(proc)
                total = 0
                for f in glob.glob(cg + "*"):
                    with open(f) as fh:
                        for line in fh:
                            if line.startswith(("summary:", "totals:")):
                                total = max(total, int(line.split()[1]))
                    os.unlink(f)
                totals.append(total)
            units = (long - short) * conns_n
            if work == "bulk":
                units = units * BULK_SIZE / MB
            out[f"{work}/{kind}"] = (totals[1] - totals[0]) / units
            print(f"  {work:4} {kind:18} {out[f'{work}/{kind}']:14,.0f} instr/"
                  f"{'req' if work == 'rr' else 'MB'}", flush=True)
    return out


def _cert(tmp: str) -> tuple[str, str]:
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def _ratios(table: dict, works: list[str], lower_is_better: bool) -> None:
    for work in works:
        ring = table.get(f"{work}/ringline-native")
        if ring is None:
            continue
        for other in ("uvloop-protocol", "asyncio-protocol", "ringline-protocol"):
            o = table.get(f"{work}/{other}")
            if o is None:
                continue
            a, b = (ring, o) if not isinstance(ring, dict) else (ring["cpu_us"], o["cpu_us"])
            print(f"  {work:4} ringline-native vs {other:18} {b / a:5.2f}x "
                  f"{'less server CPU' if isinstance(ring, dict) else 'fewer instructions'}",
                  end="")
            if isinstance(ring, dict):
                print(f", {ring['rate'] / o['rate']:5.2f}x the rate", end="")
            print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--work", default="rr,bulk")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--instr", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--server", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.server:
        kind, cert, key, exit_after = args.server
        serve_child(kind, cert, key, int(exit_after))
        return 0
    if shutil.which("openssl") is None:
        print("needs the openssl program")
        return 1
    kinds = [k for k in args.servers.split(",") if k]
    if "uvloop-protocol" in kinds:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            kinds.remove("uvloop-protocol")
            print("uvloop not installed: skipped")
    works = args.work.split(",")
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 1.0, 0.3
    if hasattr(os, "sched_setaffinity") and 1 in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = _cert(tmp)
        if args.instr:
            if shutil.which("valgrind") is None:
                print("--instr needs valgrind")
                return 1
            table = instr(kinds, works, cert, key, tmp)
            _ratios(table, works, True)
        else:
            table = measure(kinds, works, args.rounds, args.warmup, args.duration, cert, key)
            print("best of the rounds (by server CPU per unit):")
            for k, v in table.items():
                print(f"  {k:28} {v['rate']:12,.1f}/s  {v['cpu_us']:8.1f} us")
            _ratios(table, works, True)
    path = args.json or str(HERE / "results" / (
        f"native-tls{'-instr' if args.instr else ''}-"
        f"{_dt.datetime.now():%Y%m%d-%H%M%S}.json"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"instr" if args.instr else "wall": table}, fh, indent=1)
    print(f"results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
