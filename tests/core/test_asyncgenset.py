"""AsyncGenSet: the loop's compiled stand-in for asyncio's WeakSet of live
async generators (BaseEventLoop._asyncgens)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from tests.support import loops

_loop = pytest.importorskip("ringline._core.loop")


async def _agen(k):
    for i in range(k):
        yield i


def test_weak_membership_follows_the_generators_lives():
    s = _loop.AsyncGenSet()
    gens = [_agen(3) for _ in range(5)]
    for g in gens:
        s.add(g)
    s.add(gens[0])                          # the same one twice: one entry
    assert len(s) == 5
    assert set(map(id, s)) == set(map(id, gens))
    assert gens[2] in s and _agen(1) not in s and 42 not in s
    s.discard(gens[1])
    s.discard(_agen(1))                     # never added: no error
    assert len(s) == 4 and gens[1] not in s
    del gens[3]                             # freed: gone without a discard
    gc.collect()
    assert len(s) == 3
    snapshot = list(s)                      # iteration: a snapshot of the live ones
    assert len(snapshot) == 3
    del gens[:], snapshot, g               # (g: the last one added)
    gc.collect()
    assert len(s) == 0 and list(s) == []
    s.clear()
    assert len(s) == 0


def test_loop_uses_it_and_shutdown_asyncgens_closes_the_live_ones():
    ringline = loops.require_ringline()
    loop = ringline.new_event_loop()
    closed = []

    async def held(tag):
        try:
            yield tag
            yield tag
        finally:
            closed.append(tag)

    async def main():
        assert type(loop._asyncgens) is _loop.AsyncGenSet
        # Many short generators run to the end: none stays registered.
        for _ in range(1000):
            async for _x in _agen(3):
                pass
        keep = [held(i) for i in range(3)]
        for g in keep:
            await g.__anext__()
        gc.collect()
        assert len(loop._asyncgens) == 3
        await loop.shutdown_asyncgens()
        return keep

    try:
        keep = loop.run_until_complete(main())
    finally:
        loop.close()
    assert sorted(closed) == [0, 1, 2]
    assert all(g.ag_frame is None for g in keep)


def test_finalizer_hook_discards_and_closes_an_abandoned_generator():
    ringline = loops.require_ringline()
    loop = ringline.new_event_loop()
    closed = asyncio.Event()

    async def abandoned():
        try:
            yield 1
            yield 2
        finally:
            closed.set()

    async def main():
        g = abandoned()
        await g.__anext__()
        assert len(loop._asyncgens) == 1
        del g                               # the finalizer hook schedules aclose()
        gc.collect()
        await asyncio.wait_for(closed.wait(), 5)
        assert len(loop._asyncgens) == 0

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
