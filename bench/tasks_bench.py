"""Task-heavy asyncio code: ringline vs asyncio vs uvloop, one run.

    python bench/tasks_bench.py                 # 3 rounds, all workloads, all loops
    python bench/tasks_bench.py --quick         # smoke run: 1 round, 1/10 sizes
    python bench/tasks_bench.py --bench gather,tree --rounds 7
    python bench/tasks_bench.py --list          # workload names

Plain asyncio programs with no I/O: task creation and completion (gather,
create_task, gather and TaskGroup trees, 3.12+'s eager task factory), async
generators, the synchronisation primitives, timeouts. Nothing here touches
ringline's own API: this is what a user who swaps the loop sees.

Method and output as in loop_bench.py (see bench/_harness.py): a fresh
subprocess per measurement, a 1/10-size warm-up on a throwaway loop, then the
timed run on a fresh loop; best of N rounds; pinned to CPU 0 unless
``--no-pin``. Every row is a wall time (lower is better); the ratio columns
are ringline's speedups, and the last row their geometric mean. JSON goes to
``bench/results/tasks-<timestamp>.json`` unless ``--json PATH``.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Skip, Work, main, n_of  # noqa: E402

now = time.perf_counter
LEVELS, BRANCHES = 6, 6  # the gather trees: 6**6 = 46,656 leaves, 55,987 tasks


def _timed(loop, coro) -> dict:
    t0 = now()
    result = loop.run_until_complete(coro)
    dt = now() - t0
    return {"time_s": dt, "result": result}


async def _noop():
    return 1


def bench_gather(loop, scale, extra):
    """gather() of 50k coroutines (each becomes a task)."""
    n = n_of(50_000, scale)

    async def main():
        return sum(await asyncio.gather(*[_noop() for _ in range(n)]))

    res = _timed(loop, main())
    assert res["result"] == n
    return res


def bench_create_task(loop, scale, extra):
    """create_task() of 50k coroutines doing one sleep(0) each; await them all."""
    n = n_of(50_000, scale)
    sleep = asyncio.sleep

    async def one():
        await sleep(0)
        return 1

    async def main():
        tasks = [loop.create_task(one()) for _ in range(n)]
        total = 0
        for t in tasks:
            total += await t
        return total

    res = _timed(loop, main())
    assert res["result"] == n
    return res


async def _gather_tree(depth: int) -> int:
    if depth == 0:
        return 1
    return sum(await asyncio.gather(*[_gather_tree(depth - 1) for _ in range(BRANCHES)]))


async def _group_tree(depth: int) -> int:
    if depth == 0:
        return 1
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(_group_tree(depth - 1)) for _ in range(BRANCHES)]
    return sum(t.result() for t in tasks)


def _levels(scale: float) -> int:
    # --quick shrinks the tree by a level (1/6 of the tasks) rather than 1/10
    return LEVELS if scale >= 1 else max(2, LEVELS - 1 - int(scale < 0.05))


def bench_tree(loop, scale, extra):
    """gather tree, 6 levels x 6 branches, no I/O (55,987 tasks)."""
    levels = _levels(scale)
    res = _timed(loop, _gather_tree(levels))
    assert res["result"] == BRANCHES**levels
    return res


def bench_taskgroup_tree(loop, scale, extra):
    """the same tree built with asyncio.TaskGroup."""
    levels = _levels(scale)
    res = _timed(loop, _group_tree(levels))
    assert res["result"] == BRANCHES**levels
    return res


def bench_eager_tree(loop, scale, extra):
    """the gather tree under asyncio.eager_task_factory (Python 3.12+)."""
    factory = getattr(asyncio, "eager_task_factory", None)
    if factory is None:
        raise Skip(
            f"asyncio.eager_task_factory needs Python 3.12+ (this is {sys.version.split()[0]})"
        )
    loop.set_task_factory(factory)
    levels = _levels(scale)
    try:
        res = _timed(loop, _gather_tree(levels))
    except TypeError as exc:
        if "eager_start" not in str(exc):
            raise
        # uvloop 0.23 on 3.13 passes eager_start= to the factory (the
        # protocol of CPython 3.13.3+); 3.13.0-3.13.2's factory refuses it.
        raise RuntimeError(f"this loop's create_task and this Python's eager_task_factory "
                           f"disagree on the factory protocol ({exc})") from None
    assert res["result"] == BRANCHES**levels
    return res


def bench_asyncgen(loop, scale, extra):
    """20k async generators of 10 items each, consumed with async for."""
    n = n_of(20_000, scale)

    async def agen(k):
        for i in range(k):
            yield i

    async def main():
        total = 0
        for _ in range(n):
            async for x in agen(10):
                total += x
        return total

    res = _timed(loop, main())
    assert res["result"] == 45 * n
    return res


def bench_queue(loop, scale, extra):
    """Queue ping-pong between two tasks, 50k round trips."""
    n = n_of(50_000, scale)

    async def main():
        q1: asyncio.Queue[int] = asyncio.Queue()
        q2: asyncio.Queue[int] = asyncio.Queue()

        async def ponger():
            while True:
                v = await q1.get()
                if v < 0:
                    return
                q2.put_nowait(v + 1)

        pong = loop.create_task(ponger())
        v = 0
        for _ in range(n):
            q1.put_nowait(v)
            v = await q2.get()
        q1.put_nowait(-1)
        await pong
        return v

    res = _timed(loop, main())
    assert res["result"] == n
    return res


def bench_event(loop, scale, extra):
    """Event ping-pong between two tasks (set/clear/wait), 50k round trips."""
    n = n_of(50_000, scale)

    async def main():
        ping, pong = asyncio.Event(), asyncio.Event()
        count = [0]

        async def ponger():
            for _ in range(n):
                await ping.wait()
                ping.clear()
                count[0] += 1
                pong.set()

        task = loop.create_task(ponger())
        for _ in range(n):
            ping.set()
            await pong.wait()
            pong.clear()
        await task
        return count[0]

    res = _timed(loop, main())
    assert res["result"] == n
    return res


def bench_lock(loop, scale, extra):
    """Lock held across a sleep(0) by 4 contending tasks, 50k acquisitions."""
    n, workers = n_of(50_000, scale), 4
    sleep = asyncio.sleep

    async def main():
        lock = asyncio.Lock()
        count = [0]

        async def worker():
            for _ in range(n // workers):
                async with lock:
                    count[0] += 1
                    await sleep(0)

        await asyncio.gather(*[worker() for _ in range(workers)])
        return count[0]

    res = _timed(loop, main())
    assert res["result"] == n // workers * workers
    return res


def bench_semaphore(loop, scale, extra):
    """Semaphore(2) held across a sleep(0) by 8 tasks, 50k acquisitions."""
    n, workers = n_of(50_000, scale), 8
    sleep = asyncio.sleep

    async def main():
        sem = asyncio.Semaphore(2)
        count = [0]

        async def worker():
            for _ in range(n // workers):
                async with sem:
                    count[0] += 1
                    await sleep(0)

        await asyncio.gather(*[worker() for _ in range(workers)])
        return count[0]

    res = _timed(loop, main())
    assert res["result"] == n // workers * workers
    return res


def bench_wait_for(loop, scale, extra):
    """20k wait_for(sleep(0), timeout=10) in a row."""
    n = n_of(20_000, scale)

    async def main():
        for _ in range(n):
            await asyncio.wait_for(asyncio.sleep(0), timeout=10)
        return n

    res = _timed(loop, main())
    assert res["result"] == n
    return res


def bench_timeout(loop, scale, extra):
    """50k `async with asyncio.timeout(10): await sleep(0)` in a row."""
    n = n_of(50_000, scale)
    sleep = asyncio.sleep

    async def main():
        for _ in range(n):
            async with asyncio.timeout(10):
                await sleep(0)
        return n

    res = _timed(loop, main())
    assert res["result"] == n
    return res


IO_SLEEP = 0.002


async def _io_tree(depth: int) -> int:
    if depth == 0:
        await asyncio.sleep(IO_SLEEP)
        return 1
    return sum(await asyncio.gather(*[_io_tree(depth - 1) for _ in range(BRANCHES)]))


def bench_tree_io(loop, scale, extra):
    """gather tree, 5 levels x 6 branches; every leaf sleeps 2 ms (7,776 timers)."""
    levels = _levels(scale) - 1
    res = _timed(loop, _io_tree(levels))
    assert res["result"] == BRANCHES**levels
    return res


def bench_tree_memo(loop, scale, extra):
    """gather tree, 6 x 6; leaves look a key up in a memo (1 in 50 misses: 2 ms sleep)."""
    levels = _levels(scale)
    rng = random.Random(20261207)
    keys = iter([rng.randrange(BRANCHES**levels // 50) for _ in range(BRANCHES**levels)])
    memo: dict[int, asyncio.Future] = {}

    async def compute(k):
        await asyncio.sleep(IO_SLEEP)
        return 1

    async def leaf():
        k = next(keys)
        fut = memo.get(k)
        if fut is None:
            fut = memo[k] = loop.create_task(compute(k))
        return await fut

    async def node(depth):
        if depth == 0:
            return await leaf()
        return sum(await asyncio.gather(*[node(depth - 1) for _ in range(BRANCHES)]))

    res = _timed(loop, node(levels))
    assert res["result"] == BRANCHES**levels
    return res


WORKS = {
    w.name: w
    for w in (
        Work("gather", "gather of {n} coroutines", bench_gather, 50_000),
        Work("create_task", "create_task + sleep(0), {n}", bench_create_task, 50_000),
        Work("tree", "gather tree 6x6, no I/O", bench_tree, 1),
        Work("taskgroup_tree", "TaskGroup tree 6x6, no I/O", bench_taskgroup_tree, 1),
        Work("eager_tree", "gather tree 6x6, eager tasks", bench_eager_tree, 1),
        Work("asyncgen", "async generators {n} x 10 items", bench_asyncgen, 20_000),
        Work("queue", "Queue ping-pong {n}", bench_queue, 50_000),
        Work("event", "Event ping-pong {n}", bench_event, 50_000),
        Work("lock", "Lock, 4 tasks, {n} acquires", bench_lock, 50_000),
        Work("semaphore", "Semaphore(2), 8 tasks, {n} acquires", bench_semaphore, 50_000),
        Work("wait_for", "wait_for(sleep(0), 10) x {n}", bench_wait_for, 20_000),
        Work("timeout", "asyncio.timeout() + sleep(0) x {n}", bench_timeout, 50_000),
        Work("tree_io", "gather tree 5x6, 2 ms sleeps", bench_tree_io, 1),
        Work("tree_memo", "gather tree 6x6, memo + sleeps", bench_tree_memo, 1),
    )
}


if __name__ == "__main__":
    sys.exit(
        main(
            script=Path(__file__).resolve(),
            tag="tasks",
            description="task-heavy asyncio code: ringline vs asyncio vs uvloop",
            works=WORKS,
        )
    )
