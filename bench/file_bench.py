"""File I/O benchmark: ringline.fs vs os.pread, run_in_executor, aiofiles and fio.

    python bench/file_bench.py                  # 1 GiB file, 2 s per cell, 10,000 small files
    python bench/file_bench.py --quick          # smoke run: 64 MiB, 0.5 s per cell, 1,000 files
    python bench/file_bench.py --dir /mnt/nvme  # where the test files go (needs O_DIRECT for
                                                # the direct cells; default: the temp dir)

Workloads (one run, every method on the same files):

* 4 KiB random reads of one 1 GiB file, 1 and 32 in flight, from the page
  cache and with O_DIRECT (which reaches the disk). "In flight" means
  concurrent tasks (or threads, for the executor; iodepth for fio).
* Reading 10,000 small files (4 KiB each, page cache): open, read all, close;
  1 and 32 files at a time.

Methods:

* ``os.pread``: synchronous, one thread (1 in flight only: a blocking call
  cannot have 32 in flight without threads).
* ``run_in_executor``: ``loop.run_in_executor(pool, os.pread, ...)`` on
  asyncio's loop with a ThreadPoolExecutor of as many threads as in flight.
* ``aiofiles``: what aiofiles users write: one file object per task and
  ``await f.seek(off); await f.read(4096)`` (aiofiles hops to asyncio's
  default executor per call). For O_DIRECT aiofiles has no aligned read, so
  that cell uses ``aiofiles.os.wrap(os.preadv)`` into an aligned buffer.
* ``ringline``: ``await f.pread(4096, off)`` on ``fs.open`` / ``fs.open_direct``
  (O_DIRECT goes through registered buffers: READ_FIXED).
* ``portable``: the same code on the portable backend (``backend="portable"``:
  uvloop's loop when installed, the calls on a thread pool), the one that runs
  where io_uring is refused; issue 19 asks it to be at least as fast as
  aiofiles.
* ``fio``: fio's io_uring engine, the ceiling (``--ioengine=io_uring``, default
  engine options, ``--iodepth`` = in flight, ``--invalidate=0`` so the cache
  cells read the page cache). Skipped with a note if fio is missing.

Each cell runs for ``--seconds`` and reports operations per second. The
portable/aiofiles ratios come from ``--pair-rounds`` (3) further rounds per
cell that alternate the two, best of each (single cells minutes apart are
not comparable on a shared host). The 1 GiB
file and the small files are deleted at the end. Results go to
``bench/results/files-<timestamp>.json`` (``--json PATH`` to override).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime as _dt
import json
import mmap
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

import ringline  # noqa: E402
from ringline import fs  # noqa: E402

try:
    import aiofiles
    import aiofiles.os
except ImportError:                 # reported as skipped cells
    aiofiles = None

BS = 4096


# ---------------------------------------------------------------------------
# setup
# ---------------------------------------------------------------------------

def make_big_file(path: str, size: int) -> None:
    chunk = os.urandom(4 << 20)
    with open(path, "wb") as f:
        written = 0
        while written < size:
            n = min(len(chunk), size - written)
            f.write(chunk[:n])
            written += n
            chunk = chunk[1:] + chunk[:1]     # not the same 4 MiB over and over
        f.flush()
        os.fsync(f.fileno())
    with open(path, "rb") as f:               # warm the page cache
        while f.read(8 << 20):
            pass


def make_small_files(directory: str, count: int) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    payload = os.urandom(BS)
    paths = []
    for i in range(count):
        p = os.path.join(directory, f"f{i:05d}")
        with open(p, "wb") as f:
            f.write(payload)
        paths.append(p)
    for p in paths:                           # warm the page cache (and the dentries)
        with open(p, "rb") as f:
            f.read()
    return paths


def supports_direct(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    os.close(fd)
    return True


_OFFS: dict[int, list[int]] = {}
_NOFFS = 1 << 16


def offsets(seed: int, nblocks: int) -> list[int]:
    """65,536 random block offsets, rotated by ``seed`` so that workers do
    not read in lockstep; computed once per file size, outside the timing."""
    base = _OFFS.get(nblocks)
    if base is None:
        rnd = random.Random(nblocks)
        base = _OFFS[nblocks] = [rnd.randrange(nblocks) * BS for _ in range(_NOFFS)]
    k = (seed * 7919) % _NOFFS
    return base[k:] + base[:k]


# ---------------------------------------------------------------------------
# random reads
# ---------------------------------------------------------------------------

def rr_os_pread(path: str, size: int, qd: int, direct: bool, seconds: float) -> float | None:
    if qd != 1:
        return None
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    buf = mmap.mmap(-1, BS)
    offs = offsets(1, size // BS)
    n = 0
    try:
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while True:
            for off in offs[(n % len(offs)):(n % len(offs)) + 256]:
                if direct:
                    os.preadv(fd, [buf], off)
                else:
                    os.pread(fd, BS, off)
            n += 256
            if time.perf_counter() >= deadline:
                break
        return n / (time.perf_counter() - t0)
    finally:
        buf.close()
        os.close(fd)


def rr_executor(path: str, size: int, qd: int, direct: bool, seconds: float) -> float:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=qd)
    bufs = [mmap.mmap(-1, BS) for _ in range(qd)]
    count = [0]

    offs_all = [offsets(100 + i, size // BS) for i in range(qd)]

    async def worker(i: int, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        offs = offs_all[i]
        k = 0
        buf = bufs[i]
        while time.perf_counter() < deadline:
            off = offs[k % len(offs)]
            if direct:
                await loop.run_in_executor(pool, os.preadv, fd, [buf], off)
            else:
                await loop.run_in_executor(pool, os.pread, fd, BS, off)
            k += 1
        count[0] += k

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i, t0 + seconds) for i in range(qd)))
        return count[0] / (time.perf_counter() - t0)

    try:
        return asyncio.run(main())
    finally:
        pool.shutdown()
        for b in bufs:
            b.close()
        os.close(fd)


def rr_aiofiles(path: str, size: int, qd: int, direct: bool, seconds: float) -> float | None:
    if aiofiles is None:
        return None
    count = [0]

    offs_all = [offsets(200 + i, size // BS) for i in range(qd)]

    async def worker(i: int, deadline: float) -> None:
        offs = offs_all[i]
        k = 0
        if direct:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            buf = mmap.mmap(-1, BS)
            preadv = aiofiles.os.wrap(os.preadv)
            try:
                while time.perf_counter() < deadline:
                    await preadv(fd, [buf], offs[k % len(offs)])
                    k += 1
            finally:
                buf.close()
                os.close(fd)
        else:
            async with aiofiles.open(path, "rb") as f:
                while time.perf_counter() < deadline:
                    await f.seek(offs[k % len(offs)])
                    await f.read(BS)
                    k += 1
        count[0] += k

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i, t0 + seconds) for i in range(qd)))
        return count[0] / (time.perf_counter() - t0)

    return asyncio.run(main())


def rr_ringline(path: str, size: int, qd: int, direct: bool, seconds: float,
                backend: str | None = None) -> float:
    count = [0]

    offs_all = [offsets(300 + i, size // BS) for i in range(qd)]

    async def worker(f: fs.AsyncFile, i: int, deadline: float) -> None:
        offs = offs_all[i]
        k = 0
        pread = f.pread
        while time.perf_counter() < deadline:
            await pread(BS, offs[k % len(offs)])
            k += 1
        count[0] += k

    async def main() -> float:
        opener = fs.open_direct(path, "rb") if direct else fs.open(path, "rb")
        async with opener as f:
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(f, i, t0 + seconds) for i in range(qd)))
            return count[0] / (time.perf_counter() - t0)

    return ringline.run(main(), backend=backend)


def rr_portable(path: str, size: int, qd: int, direct: bool, seconds: float) -> float:
    return rr_ringline(path, size, qd, direct, seconds, backend="portable")


def rr_fio(path: str, size: int, qd: int, direct: bool, seconds: float) -> float | None:
    fio = shutil.which("fio")
    if fio is None:
        return None
    cmd = [fio, "--name=ringline-bench", f"--filename={path}", "--rw=randread",
           f"--bs={BS}", "--ioengine=io_uring", f"--iodepth={qd}",
           f"--direct={int(direct)}", f"--size={size}", f"--runtime={seconds}",
           "--invalidate=0",              # keep the page cache: the cache cells need it
           "--time_based", "--norandommap", "--randrepeat=0", "--output-format=json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if r.returncode != 0:
        print(f"  fio failed: {r.stderr.strip()[:200]}", file=sys.stderr)
        return None
    return float(json.loads(r.stdout)["jobs"][0]["read"]["iops"])


RR_METHODS = {
    "os.pread": rr_os_pread,
    "run_in_executor": rr_executor,
    "aiofiles": rr_aiofiles,
    "ringline": rr_ringline,
    "portable": rr_portable,
    "fio io_uring": rr_fio,
}


# ---------------------------------------------------------------------------
# small files
# ---------------------------------------------------------------------------

def _chunks(paths: list[str], qd: int) -> list[list[str]]:
    return [paths[i::qd] for i in range(qd)]


def sf_os(paths: list[str], qd: int) -> float | None:
    if qd != 1:
        return None
    t0 = time.perf_counter()
    for p in paths:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        try:
            while os.read(fd, 65536):
                pass
        finally:
            os.close(fd)
    return len(paths) / (time.perf_counter() - t0)


def sf_executor(paths: list[str], qd: int) -> float:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=qd)

    def read_file(p: str) -> bytes:
        with open(p, "rb") as f:
            return f.read()

    async def worker(mine: list[str]) -> None:
        loop = asyncio.get_running_loop()
        for p in mine:
            await loop.run_in_executor(pool, read_file, p)

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in _chunks(paths, qd)))
        return len(paths) / (time.perf_counter() - t0)

    try:
        return asyncio.run(main())
    finally:
        pool.shutdown()


def sf_aiofiles(paths: list[str], qd: int) -> float | None:
    if aiofiles is None:
        return None

    async def worker(mine: list[str]) -> None:
        for p in mine:
            async with aiofiles.open(p, "rb") as f:
                await f.read()

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in _chunks(paths, qd)))
        return len(paths) / (time.perf_counter() - t0)

    return asyncio.run(main())


def sf_ringline(paths: list[str], qd: int, backend: str | None = None) -> float:
    async def worker(mine: list[str]) -> None:
        for p in mine:
            async with fs.open(p, "rb") as f:
                await f.read()

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in _chunks(paths, qd)))
        return len(paths) / (time.perf_counter() - t0)

    return ringline.run(main(), backend=backend)


def sf_portable(paths: list[str], qd: int) -> float:
    return sf_ringline(paths, qd, backend="portable")


SF_METHODS = {
    "os (open/read/close)": sf_os,
    "run_in_executor": sf_executor,
    "aiofiles": sf_aiofiles,
    "ringline": sf_ringline,
    "portable": sf_portable,
}


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------

def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def pair_rounds(args: argparse.Namespace, big: str, paths: list[str], direct_ok: bool,
                rr: dict, sf: dict) -> dict[str, dict[str, float | None]]:
    """aiofiles and the portable backend measured alternately, ``--pair-rounds``
    times per cell, best of each: the portable/aiofiles ratios (issue 19: at
    least 1x) then compare runs that saw the same machine (a single cell of
    each, minutes apart, does not on a shared host).  Starts from the
    table's cells."""
    best: dict[str, dict[str, float | None]] = {
        "aiofiles": {**rr["aiofiles"], **{f"small-{k}": v for k, v in sf["aiofiles"].items()}},
        "portable": {**rr["portable"], **{f"small-{k}": v for k, v in sf["portable"].items()}},
    }
    if args.pair_rounds <= 0 or aiofiles is None:
        return best
    print(f"\nportable vs aiofiles: {args.pair_rounds} interleaved rounds per cell, best of each")
    cells: list[tuple[str, Callable[[str], float | None]]] = []
    for mode in ("cache", "direct"):
        if mode == "direct" and not direct_ok:
            continue
        for qd in (1, 32):
            cells.append((f"{mode}-qd{qd}", lambda name, m=mode, q=qd: RR_METHODS[name](
                big, args.size, q, m == "direct", args.seconds)))
    for qd in (1, 32):
        cells.append((f"small-qd{qd}", lambda name, q=qd: SF_METHODS[name](paths, q)))
    for key, run in cells:
        for _ in range(args.pair_rounds):
            for name in ("aiofiles", "portable"):
                try:
                    v = run(name)
                except Exception as exc:          # one broken cell must not stop the run
                    print(f"  {name} {key}: {exc!r}", file=sys.stderr)
                    continue
                if v and (best[name].get(key) or 0) < v:
                    best[name][key] = v
        a, p = best["aiofiles"].get(key), best["portable"].get(key)
        print(f"  {key:<14} aiofiles {fmt(a):>10}  portable {fmt(p):>10}  "
              f"{'-' if not (a and p) else f'{p / a:.2f}x'}")
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=None, help="directory for the test files")
    ap.add_argument("--size", type=int, default=1 << 30, help="big file size in bytes")
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each cell")
    ap.add_argument("--files", type=int, default=10_000, help="number of small files")
    ap.add_argument("--quick", action="store_true", help="64 MiB, 0.5 s cells, 1,000 files")
    ap.add_argument("--json", default=None, help="result file (default bench/results/...)")
    ap.add_argument("--pair-rounds", type=int, default=3,
                    help="interleaved rounds of aiofiles and portable per cell for their "
                         "ratio (best of each; 0: use the table's single cells)")
    args = ap.parse_args()
    if args.quick:
        args.size, args.seconds, args.files = 64 << 20, 0.5, 1000

    work = tempfile.mkdtemp(prefix="ringline-file-bench-", dir=args.dir)
    big = os.path.join(work, "big.bin")
    t_start = time.perf_counter()
    results: dict = {"random_reads": {}, "small_files": {}}
    try:
        print(f"ringline file benchmark: {args.size >> 20} MiB file in {work}, "
              f"{args.seconds:g} s per cell; {os.cpu_count()} CPUs, kernel {platform.release()}")
        t = time.perf_counter()
        make_big_file(big, args.size)
        print(f"created the file in {time.perf_counter() - t:.1f} s")
        inline_ok = supports_direct(big)
        if not inline_ok:
            print("O_DIRECT is not supported in this directory: direct cells skipped "
                  "(use --dir on ext4/xfs/btrfs)")

        print("\n4 KiB random reads (operations/s)")
        header = f"{'method':<18}" + "".join(
            f"{f'{m} qd{qd}':>16}" for m in ("cache", "direct") for qd in (1, 32))
        print(header)
        for name, fn in RR_METHODS.items():
            row = {}
            for mode in ("cache", "direct"):
                for qd in (1, 32):
                    key = f"{mode}-qd{qd}"
                    if mode == "direct" and not inline_ok:
                        row[key] = None
                        continue
                    try:
                        row[key] = fn(big, args.size, qd, mode == "direct", args.seconds)
                    except Exception as exc:          # one broken cell must not stop the run
                        print(f"  {name} {key}: {exc!r}", file=sys.stderr)
                        row[key] = None
            results["random_reads"][name] = row
            print(f"{name:<18}" + "".join(f"{fmt(row[k]):>16}" for k in row))

        print(f"\nreading {args.files:,} small files of {BS} bytes (files/s)")
        paths = make_small_files(os.path.join(work, "small"), args.files)
        print(f"{'method':<22}{'1 at a time':>14}{'32 at a time':>14}")
        for name, fn in SF_METHODS.items():
            row = {}
            for qd in (1, 32):
                try:
                    row[f"qd{qd}"] = fn(paths, qd)
                except Exception as exc:
                    print(f"  {name} qd{qd}: {exc!r}", file=sys.stderr)
                    row[f"qd{qd}"] = None
            results["small_files"][name] = row
            print(f"{name:<22}{fmt(row['qd1']):>14}{fmt(row['qd32']):>14}")

        rr = results["random_reads"]
        ratios = {}

        def ratio(a: float | None, b: float | None) -> float | None:
            return a / b if a and b else None

        ratios["ringline/aiofiles cache qd32"] = ratio(rr["ringline"]["cache-qd32"],
                                                       rr["aiofiles"]["cache-qd32"])
        ratios["ringline/aiofiles direct qd32"] = ratio(rr["ringline"]["direct-qd32"],
                                                        rr["aiofiles"]["direct-qd32"])
        ratios["ringline/fio direct qd32"] = ratio(rr["ringline"]["direct-qd32"],
                                                   rr["fio io_uring"]["direct-qd32"])
        ratios["ringline/fio direct qd1"] = ratio(rr["ringline"]["direct-qd1"],
                                                  rr["fio io_uring"]["direct-qd1"])
        sf = results["small_files"]
        ratios["ringline/aiofiles small files qd32"] = ratio(sf["ringline"]["qd32"],
                                                             sf["aiofiles"]["qd32"])
        pair = pair_rounds(args, big, paths, inline_ok, rr, sf)
        os.unlink(big)
        results["portable_vs_aiofiles"] = pair
        for key in ("cache-qd1", "cache-qd32", "direct-qd1", "direct-qd32"):
            ratios[f"portable/aiofiles {key.replace('-', ' ')}"] = ratio(
                pair["portable"].get(key), pair["aiofiles"].get(key))
        for qd in (1, 32):
            ratios[f"portable/aiofiles small files qd{qd}"] = ratio(
                pair["portable"].get(f"small-qd{qd}"), pair["aiofiles"].get(f"small-qd{qd}"))
        results["ratios"] = ratios
        print("\ntargets: ringline >= 10x aiofiles at 32 in flight; >= 50% of fio IOPS with O_DIRECT;"
              " portable >= 1x aiofiles")
        for k, v in ratios.items():
            print(f"  {k:<38} {'-' if v is None else f'{v:.2f}x'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results["machine"] = {"cpus": os.cpu_count(), "kernel": platform.release(),
                          "python": platform.python_version(), "dir": args.dir or tempfile.gettempdir(),
                          "size": args.size, "seconds": args.seconds, "files": args.files}
    out = Path(args.json) if args.json else (
        HERE / "results" / f"files-{_dt.datetime.now():%Y%m%d-%H%M%S}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out}  (total {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
