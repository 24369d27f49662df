"""The issue targets, checked against the newest benchmark results.

    python bench/targets.py          # after `make bench` (or the single benchmarks)

Reads the newest JSON of each benchmark under ``bench/results/`` (tasks,
streams, aiohttp over TLS, native TLS, UDP, idle memory) and prints one row
per target of issues 18, 20 and 21 with the measured figure and ``ok`` or
``MISS``.  Nothing is re-measured here: a row whose benchmark has not run is
``--``.  The figures are wall-clock ratios from one run of each benchmark
(ringline and the other loops side by side), so they carry that run's noise;
read them on a quiet machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def newest(pattern: str) -> dict | list | None:
    files = sorted(RESULTS.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not files:
        return None
    try:
        return json.loads(files[-1].read_text())
    except (OSError, ValueError):
        return None


Row = tuple[str, str, "float | None", float, bool]   # issue, what, value, target, higher


def _harness_rows(issue: str, data: dict | None, tls_target: float) -> list[Row]:
    """Rows of a bench/_harness.py result (tasks, streams): each workload at
    or above 1.0x uvloop (TLS rows 1.3x) and never below stdlib asyncio."""
    rows: list[Row] = []
    if not data:
        return rows
    for r in data.get("results", []):
        label = r.get("label") or r.get("work", "?")
        tls = "TLS" in label
        rows.append((issue, f"{label}  vs uvloop", r.get("speedup_ringline_vs_uvloop"),
                     tls_target if tls else 1.0, True))
        rows.append((issue, f"{label}  vs asyncio", r.get("speedup_ringline_vs_asyncio"),
                     1.0, True))
    return rows


def _geomean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def rows() -> list[Row]:
    out: list[Row] = []
    tasks = newest("tasks-*.json")
    streams = newest("streams-*.json")
    out += _harness_rows("18", tasks, 1.3)
    out += _harness_rows("18", streams, 1.3)
    ratios = [r.get("speedup_ringline_vs_uvloop")
              for d in (tasks, streams) if d for r in d.get("results", [])]
    out.append(("18", "geometric mean, tasks + streams  vs uvloop", _geomean(ratios), 1.2, True))

    aio_tls = newest("aiohttp-tls-*.json")
    if aio_tls:
        for c in aio_tls.get("cells", []):
            if c.get("loop") == "ringline" and c.get("status") == "ok":
                out.append(("18", "aiohttp over TLS under wrk  vs uvloop",
                            c.get("req_per_s_vs_uvloop"), 1.0, True))
                out.append(("18", "aiohttp over TLS under wrk  vs asyncio",
                            c.get("req_per_s_vs_asyncio"), 1.0, True))

    ntls = newest("native-tls-2*.json")
    if ntls and "wall" in ntls:
        w = ntls["wall"]
        for work, what in (("rr", "native TLS 64 B req/resp"), ("bulk", "native TLS bulk")):
            ring, uv = w.get(f"{work}/ringline-native"), w.get(f"{work}/uvloop-protocol")
            if ring and uv:
                out.append(("21", f"{what}, server CPU  vs uvloop",
                            uv["cpu_us"] / ring["cpu_us"], 1.3, True))
    ninstr = newest("native-tls-instr-*.json")
    if ninstr and "instr" in ninstr:
        t = ninstr["instr"]
        for work, what in (("rr", "native TLS 64 B req/resp"), ("bulk", "native TLS bulk")):
            ring, uv = t.get(f"{work}/ringline-native"), t.get(f"{work}/uvloop-protocol")
            if ring and uv:
                out.append(("21", f"{what}, instructions  vs uvloop", uv / ring, 1.3, True))

    udp = newest("udp-*.json")
    if udp and "best" in udp:
        b = udp["best"]
        for size in ("64", "1400"):
            ring = b.get("ringline", {}).get(size)
            uv = b.get("uvloop", {}).get(size)
            c = b.get("c", {}).get(size)
            if ring and uv:
                out.append(("21", f"UDP echo {size} B, datagrams/s  vs uvloop",
                            ring["rps"] / uv["rps"], 1.3, True))
                out.append(("21", f"UDP echo {size} B, server CPU  vs uvloop",
                            uv["cpu_us"] / ring["cpu_us"], 1.3, True))
            if ring and c:
                out.append(("21", f"UDP echo {size} B, datagrams/s  vs C io_uring",
                            ring["rps"] / c["rps"], 0.9, True))
            aio = b.get("ringline-aio", {}).get(size)
            if aio and uv:
                out.append(("18", f"UDP echo {size} B, asyncio face  vs uvloop",
                            aio["rps"] / uv["rps"], 1.0, True))

    idle = newest("idle.json")
    if isinstance(idle, list):
        per = {r["kind"]: r for r in idle}
        if "native" in per:
            out.append(("20", f"idle native connection, bytes ({per['native']['connections']:,})",
                        per["native"]["pss_anon_per_conn"], 1536.0, False))
        if "aioface" in per and "uvloop" in per:
            out.append(("20", "idle asyncio-face connection, bytes  vs uvloop's",
                        per["aioface"]["pss_anon_per_conn"],
                        per["uvloop"]["pss_anon_per_conn"], False))
    return out


def main() -> int:
    table = rows()
    if not table:
        print("no results under bench/results/: run `make bench` first")
        return 1
    width = max(len(r[1]) for r in table)
    print(f"{'issue':<6}{'target':<{width + 2}}{'measured':>10}{'goal':>10}  ")
    misses = 0
    for issue, what, value, goal, higher in table:
        if value is None:
            mark, shown = "--", "--"
        else:
            ok = value >= goal if higher else value <= goal
            misses += not ok
            mark = "ok" if ok else "MISS"
            shown = f"{value:.2f}x" if higher else f"{value:,.0f}"
        goal_s = f">={goal:.2f}x" if higher else f"<={goal:,.0f}"
        print(f"{issue:<6}{what:<{width + 2}}{shown:>10}{goal_s:>10}  {mark}")
    print(f"\n{misses} of {len(table)} targets missed (ratios: >1 = ringline ahead)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
