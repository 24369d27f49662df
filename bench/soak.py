"""Soak: ringline's two faces under churn, resets, half-closes and slow readers.

    python bench/soak.py --seconds 300             # both faces, half the time each
    python bench/soak.py --seconds 60 --face aioface
    make soak SECONDS=600                          # the same, from the Makefile

Each face's echo server runs in a process of its own (this file re-run with
``--serve FACE``), so its memory and descriptors are all that is measured:

    native    ``ringline.serve()``: recv, send_nowait, drain (waits out backpressure)
    aioface   an ``asyncio.Protocol`` echo on ringline's loop (``create_server``),
              pausing reading while the transport's write buffer is above its limit

The clients run here, on the standard asyncio loop (a peer that is not
ringline), in a fixed number of workers that loop until the time is up:

    churn      connect, 1-4 messages of 1 B..32 KiB each echoed back, close
    reset      connect, send up to 256 KiB, read the first KiB back, then close
               with SO_LINGER 0 (the server gets a RST mid-transfer)
    halfclose  connect, send up to 256 KiB, shutdown(SHUT_WR), read to EOF
    slow       (one worker of its own) 1 MiB echoed to a reader that takes
               16 KiB every 5 ms: the server's sends back up behind it, past
               its send-queue limit (256 KiB here), so it waits for the reader

Every byte that comes back is compared with what was sent (for a reset,
the prefix read before it).  At the end, once the server reports no live
connection, these must be back at their value after the warm-up: the
server's descriptor count, its open streams and in-flight ring slots
(``ringline.metrics``), free send-pool slots, the clients' descriptor
count; and the server must have accepted exactly the connections the
clients made.

RSS is sampled once a second (/proc/PID/status).  The second half must be
flat: the median of the last tenth of the samples may exceed the median
of the samples around the midpoint by at most ``--rss-growth`` (5%).  A
leak of one small object per connection shows up as steady growth across
tens of thousands of connections, whereas the echo data in flight at one
moment (bounded by the workers: at most about 3 MiB) moves RSS by a
few per cent of a ~40 MB server at most, and medians, not single samples,
are compared.  The whole curve is printed, one figure per tenth of the time.

Exit status 0 when every check held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FACES = ("native", "aioface")
WORKERS = 12              # churn/reset/halfclose workers (plus one slow reader)
WEIGHTS = {"churn": 6, "reset": 2, "halfclose": 2}
SLOW_PAYLOAD = 1 << 20
SLOW_CHUNK, SLOW_PAUSE = 16384, 0.005
IO_TIMEOUT = 30.0
# The servers' send-queue limit (Config.send_queue_limit, asyncio's write
# buffer high-water mark on ringline's loop): low enough that the slow
# reader's 1 MiB backs up past it, so drain() waits and pause_writing() fires.
SEND_QUEUE_LIMIT = 256 * 1024


# ---------------------------------------------------------------------------
# Server process
# ---------------------------------------------------------------------------

def serve(face: str) -> None:
    """Run one face's echo server until stdin closes.

    Prints ``port N`` once listening; then answers each ``stats`` line on
    stdin with one JSON line, collected on the loop thread (the request
    crosses threads through ``call_soon_threadsafe``)."""
    import ringline
    from ringline import metrics

    st = {"accepted": 0, "live": 0, "bytes": 0, "ended_by_error": 0, "unexpected": 0,
          "queued_peak": 0, "paused": 0}
    problems: list[str] = []

    def unexpected(what: str) -> None:
        st["unexpected"] += 1
        if len(problems) < 5:
            problems.append(what)

    async def handler(conn: ringline.Connection) -> None:
        st["accepted"] += 1
        st["live"] += 1
        try:
            while data := await conn.recv(1 << 16):
                st["bytes"] += len(data)
                conn.send_nowait(data)
                if conn.queued > st["queued_peak"]:
                    st["queued_peak"] = conn.queued
                if conn.queued > SEND_QUEUE_LIMIT:
                    st["paused"] += 1              # this drain() waits
                await conn.drain()
            # EOF (the peer half-closed): returning closes after the queued sends.
        except OSError:
            st["ended_by_error"] += 1          # a reset peer: expected
        except Exception as exc:  # noqa: BLE001 - counted and reported, the soak fails
            unexpected(f"handler: {exc!r}")
        finally:
            st["live"] -= 1

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            st["accepted"] += 1
            st["live"] += 1

        def data_received(self, data: bytes) -> None:
            st["bytes"] += len(data)
            self.transport.write(data)
            queued = self.transport.get_write_buffer_size()
            if queued > st["queued_peak"]:
                st["queued_peak"] = queued

        def eof_received(self) -> bool:
            return False                       # close once everything queued is sent

        def pause_writing(self) -> None:
            st["paused"] += 1
            self.transport.pause_reading()

        def resume_writing(self) -> None:
            self.transport.resume_reading()

        def connection_lost(self, exc: BaseException | None) -> None:
            st["live"] -= 1
            if exc is not None:
                st["ended_by_error"] += 1

    def collect() -> dict[str, Any]:
        m = metrics.snapshot()
        return {**st, "fds": len(os.listdir("/proc/self/fd")), "streams": m.streams,
                "slots_live": m.slots_live, "send_pool_free": m.send_pool_free,
                "problems": problems}

    def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        unexpected(f"exception handler: {context.get('message')} "
                   f"{context.get('exception')!r}")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(on_error)
        if face == "native":
            server = await ringline.serve(handler, "127.0.0.1", 0)
            port = server.port
        else:
            server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=1024)
            port = server.sockets[0].getsockname()[1]
        stop = asyncio.Event()

        def control() -> None:
            for line in sys.stdin:
                if line.strip() == "stats":
                    fut: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
                    loop.call_soon_threadsafe(lambda f=fut: f.set_result(collect()))
                    print(json.dumps(fut.result(IO_TIMEOUT)), flush=True)
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=control, daemon=True).start()
        print(f"port {port}", flush=True)
        await stop.wait()
        if face == "native":
            await server.shutdown(2.0)
        else:
            server.close()
            await server.wait_closed()

    config = ringline.Config(send_queue_limit=SEND_QUEUE_LIMIT)
    runner = asyncio.Runner(loop_factory=lambda: ringline.new_event_loop(config))
    with runner:
        runner.run(main())


class Server:
    """The parent's handle on a server process."""

    def __init__(self, face: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", face],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("port "):
            self.proc.kill()
            raise SystemExit(f"soak: the {face} server did not start ({line!r})")
        self.port = int(line.split()[1])

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9


# ---------------------------------------------------------------------------
# Clients (standard asyncio)
# ---------------------------------------------------------------------------

class Tally:
    """What the clients did and every mismatch they saw."""

    def __init__(self) -> None:
        self.conns = {"churn": 0, "reset": 0, "halfclose": 0, "slow": 0}
        self.sent = 0
        self.verified = 0
        self.failures: list[str] = []

    def fail(self, what: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(what)


def _check(tally: Tally, kind: str, got: bytes, want: bytes) -> None:
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                  min(len(got), len(want)))
        tally.fail(f"{kind}: {len(got)} bytes back for {len(want)}, first difference at {at}")
    else:
        tally.verified += len(got)


async def _connect(port: int, limit: int = 1 << 16
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, limit=limit),
                                  IO_TIMEOUT)
    w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return r, w


async def _close(w: asyncio.StreamWriter) -> None:
    w.close()
    try:
        await w.wait_closed()
    except OSError:
        pass


async def churn(port: int, rng: random.Random, tally: Tally) -> None:
    r, w = await _connect(port)
    tally.conns["churn"] += 1
    try:
        for _ in range(rng.randint(1, 4)):
            msg = rng.randbytes(rng.randint(1, 32768))
            w.write(msg)
            tally.sent += len(msg)
            _check(tally, "churn", await asyncio.wait_for(r.readexactly(len(msg)), IO_TIMEOUT),
                   msg)
    finally:
        await _close(w)


async def reset(port: int, rng: random.Random, tally: Tally) -> None:
    r, w = await _connect(port)
    tally.conns["reset"] += 1
    msg = rng.randbytes(rng.randint(1024, 262144))
    w.write(msg)
    tally.sent += len(msg)
    _check(tally, "reset", await asyncio.wait_for(r.readexactly(1024), IO_TIMEOUT), msg[:1024])
    w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          struct.pack("ii", 1, 0))
    w.transport.abort()
    await asyncio.sleep(0)


async def halfclose(port: int, rng: random.Random, tally: Tally) -> None:
    r, w = await _connect(port)
    tally.conns["halfclose"] += 1
    try:
        msg = rng.randbytes(rng.randint(0, 262144))
        w.write(msg)
        w.write_eof()
        tally.sent += len(msg)
        _check(tally, "halfclose", await asyncio.wait_for(r.read(), IO_TIMEOUT), msg)
    finally:
        await _close(w)


async def slow(port: int, rng: random.Random, tally: Tally) -> None:
    # A small StreamReader limit: the transport stops reading at once, so the
    # kernel's buffers fill and the server's sends back up.
    r, w = await _connect(port, limit=SLOW_CHUNK)
    tally.conns["slow"] += 1
    try:
        msg = rng.randbytes(SLOW_PAYLOAD)
        w.write(msg)
        w.write_eof()
        tally.sent += len(msg)
        got = bytearray()
        async with asyncio.timeout(IO_TIMEOUT):
            while chunk := await r.read(SLOW_CHUNK):
                got += chunk
                await asyncio.sleep(SLOW_PAUSE)
        _check(tally, "slow", bytes(got), msg)
    finally:
        await _close(w)


async def worker(port: int, seed: int, deadline: float, tally: Tally, kinds: list[str]) -> None:
    rng = random.Random(seed)
    scenarios = {"churn": churn, "reset": reset, "halfclose": halfclose, "slow": slow}
    weights = [WEIGHTS.get(k, 1) for k in kinds]
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        try:
            await scenarios[kind](port, rng, tally)
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            tally.fail(f"{kind}: {exc!r}")


async def until_quiet(server: Server, want_streams: int, timeout: float = 15.0
                      ) -> dict[str, Any]:
    """The server's stats once it has no live connection (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        # Bounded: a wedged server fails the soak instead of hanging it.
        s = await asyncio.wait_for(asyncio.to_thread(server.stats), IO_TIMEOUT)
        if (s["live"] == 0 and s["streams"] <= want_streams) or time.monotonic() > deadline:
            return s
        await asyncio.sleep(0.1)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def soak_face(face: str, seconds: float, seed: int, growth_limit: float) -> bool:
    print(f"=== soak: {face} face, {seconds:.0f} s, {WORKERS} workers + 1 slow reader "
          f"(seed {seed}) ===", flush=True)
    server = Server(face)
    ok = True
    try:
        # Warm-up: one-time allocations (send pool, buffer rings, lazily made
        # rings) happen here, before the baseline is taken.
        warm = Tally()
        await asyncio.gather(*(worker(server.port, seed + 1000 + i, time.monotonic() + 1.0, warm,
                                      ["churn", "halfclose", "reset"]) for i in range(4)))
        base = await until_quiet(server, 0)
        base_client_fds = _fds()

        tally = Tally()
        samples: list[tuple[float, int]] = []
        start = time.monotonic()
        deadline = start + seconds

        async def sample() -> None:
            while time.monotonic() < deadline:
                samples.append((time.monotonic() - start, server.rss()))
                await asyncio.sleep(1.0)

        kinds = list(WEIGHTS)
        await asyncio.gather(
            sample(),
            worker(server.port, seed, deadline, tally, ["slow"]),
            *(worker(server.port, seed + 1 + i, deadline, tally, kinds) for i in range(WORKERS)))
        elapsed = time.monotonic() - start
        end = await until_quiet(server, base["streams"])
        samples.append((elapsed, server.rss()))
        client_fds = _fds()
    finally:
        rc = server.stop()

    total = sum(tally.conns.values())
    wire = tally.sent
    print(f"connections: {total} ({total / elapsed:.0f}/s): "
          + ", ".join(f"{k} {v}" for k, v in tally.conns.items()))
    print(f"bytes: {wire / 1e6:.1f} MB sent by the clients, {tally.verified / 1e6:.1f} MB "
          f"echoed back and verified, {(end['bytes'] - base['bytes']) / 1e6:.1f} MB received "
          f"by the server; {end['ended_by_error'] - base['ended_by_error']} connections "
          f"ended by a reset; server send queue peak {end['queued_peak'] / 1024:.0f} KiB"
          + f", {end['paused']} waits for the peer to read ("
          + ("drain()" if face == "native" else "pause_writing()") + ")")

    # RSS curve: one figure per tenth of the time (the sample nearest to it).
    marks = []
    for tenth in range(11):
        t = elapsed * tenth / 10
        marks.append(min(samples, key=lambda s: abs(s[0] - t))[1])
    print("RSS MB at 0..100% of the time: " + " ".join(f"{m / 1e6:.1f}" for m in marks))
    rss = [v for _, v in samples]
    tail = rss[-max(2, len(rss) // 10):]
    mid_t = [v for t, v in samples if 0.45 * elapsed <= t <= 0.55 * elapsed] or [marks[5]]
    growth = statistics.median(tail) / statistics.median(mid_t) - 1
    print(f"RSS second half: median at the midpoint {statistics.median(mid_t) / 1e6:.1f} MB, "
          f"median of the last tenth {statistics.median(tail) / 1e6:.1f} MB: "
          f"{growth * 100:+.1f}% (limit +{growth_limit * 100:.0f}%)")

    checks = [
        ("every echoed byte matched", not tally.failures, "; ".join(tally.failures[:5])),
        ("server saw no unexpected error", end["unexpected"] == 0, "; ".join(end["problems"])),
        ("accepted == connections made", end["accepted"] - base["accepted"] == total,
         f"{end['accepted'] - base['accepted']} accepted, {total} made"),
        ("no live connection at the end", end["live"] == 0, f"{end['live']} live"),
        ("open streams back to baseline", end["streams"] == base["streams"],
         f"{base['streams']} -> {end['streams']}"),
        ("in-flight slots back to baseline", end["slots_live"] == base["slots_live"],
         f"{base['slots_live']} -> {end['slots_live']}"),
        ("free send-pool slots back to baseline",
         end["send_pool_free"] == base["send_pool_free"],
         f"{base['send_pool_free']} -> {end['send_pool_free']}"),
        ("server fds back to baseline", end["fds"] == base["fds"],
         f"{base['fds']} -> {end['fds']}"),
        ("client fds back to baseline", client_fds == base_client_fds,
         f"{base_client_fds} -> {client_fds}"),
        ("RSS flat in the second half", growth <= growth_limit, f"{growth * 100:+.1f}%"),
        ("server exited cleanly", rc == 0, f"exit status {rc}"),
    ]
    for name, held, detail in checks:
        print(f"  {'ok  ' if held else 'FAIL'} {name}" + ("" if held else f": {detail}"))
        ok = ok and held
    print(f"fds: server {base['fds']} -> {end['fds']}, slots live {base['slots_live']} -> "
          f"{end['slots_live']}, streams {base['streams']} -> {end['streams']}", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="total soak time, split between the faces (default 60)")
    parser.add_argument("--face", choices=(*FACES, "both"), default="both")
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--rss-growth", type=float, default=0.05,
                        help="allowed RSS growth over the second half (default 0.05)")
    parser.add_argument("--serve", choices=FACES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    faces = FACES if args.face == "both" else (args.face,)
    seed = args.seed if args.seed is not None else random.randrange(1 << 20)
    ok = True
    for face in faces:
        ok = asyncio.run(soak_face(face, args.seconds / len(faces), seed, args.rss_growth)) and ok
    print(f"soak: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
