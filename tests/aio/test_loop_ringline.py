"""The ringline loop beyond asyncio's API: the idle loop stays asleep
(strace), ringline's entry points (run, install, new_event_loop), and
malloc tuning.

Every test runs against each loop of ``tests.support.loops.LOOP_FACTORIES``
(asyncio's SelectorEventLoop, uvloop, ringline) so that the expectations are
validated against the reference implementations before ringline exists.
The ringline parameter is skipped (failed under CI=true) while
``import ringline`` does not work.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.support import loops, paths

pytestmark = pytest.mark.timeout(30)

# ---------------------------------------------------------------------------
# The idle loop stays asleep (strace)
# ---------------------------------------------------------------------------

WAIT_SYSCALLS = ("io_uring_enter", "epoll_wait", "epoll_pwait", "epoll_pwait2")

IDLE_SCRIPT = """
import importlib, sys
module_name, _, attr = sys.argv[1].partition(":")
loop = getattr(importlib.import_module(module_name), attr)()
loop.call_later(1.0, loop.stop)
loop.run_forever()
loop.close()
"""


def _require_strace():
    strace = shutil.which("strace")
    reason = None
    if strace is None:
        reason = "strace is not installed"
    else:
        probe = subprocess.run(
            [strace, "-f", "-c", "-o", os.devnull, "true"], capture_output=True, text=True
        )
        if probe.returncode != 0:
            reason = f"strace does not work here: {probe.stderr.strip()[:200]}"
    if reason is not None:
        if loops.IN_CI:
            pytest.fail(f"{reason} (CI=true, so this is a failure)", pytrace=False)
        pytest.skip(reason)
    return strace


def _parse_strace_summary(text):
    counts = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[-1] in WAIT_SYSCALLS and fields[3].isdigit():
            counts[fields[-1]] = int(fields[3])
    return counts


def test_idle_loop_stays_asleep(loop_name, tmp_path):
    strace = _require_strace()
    out_file = tmp_path / "strace.txt"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            strace,
            "-f",
            "-c",
            "-e",
            "trace=" + ",".join(WAIT_SYSCALLS),
            "-o",
            str(out_file),
            sys.executable,
            "-c",
            IDLE_SCRIPT,
            loops.LOOP_FACTORY_SPECS[loop_name],
        ],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert elapsed >= 1.0
    counts = _parse_strace_summary(out_file.read_text())
    # asyncio blocks in epoll_wait, ringline in io_uring_enter; uvloop (libuv)
    # uses epoll_pwait plus one io_uring_enter.  Whatever the mechanism, an idle
    # second with a single timer must cost only a handful of wait syscalls.
    primary = {
        "asyncio": ("epoll_wait", "epoll_pwait", "epoll_pwait2"),
        "ringline": ("io_uring_enter",),
    }.get(loop_name, WAIT_SYSCALLS)
    assert sum(counts.get(name, 0) for name in primary) >= 1, counts  # it did wait
    assert sum(counts.values()) <= 5, counts


# ---------------------------------------------------------------------------
# ringline-specific entry points
# ---------------------------------------------------------------------------


@pytest.fixture
def ringline():
    return loops.require_ringline()


def test_ringline_event_loop_class(ringline):
    lp = ringline.new_event_loop()
    try:
        assert isinstance(lp, ringline.EventLoop)
        assert isinstance(lp, asyncio.AbstractEventLoop)
    finally:
        lp.close()


def test_ringline_run_returns_value(ringline):
    async def main(x):
        await asyncio.sleep(0.01)
        lp = asyncio.get_running_loop()
        return x + 1, lp, lp.get_debug()

    value, lp, debug = ringline.run(main(41))
    assert value == 42
    assert isinstance(lp, ringline.EventLoop)
    assert lp.is_closed()
    assert ringline.run(main(0), debug=True)[2] is True

    async def fail():
        raise ArithmeticError("from ringline.run")

    with pytest.raises(ArithmeticError):
        ringline.run(fail())


def test_ringline_install(ringline):
    saved = asyncio.get_event_loop_policy()
    try:
        ringline.install()
        lp = asyncio.new_event_loop()
        try:
            assert isinstance(lp, ringline.EventLoop)
        finally:
            lp.close()

        async def main():
            return asyncio.get_running_loop()

        assert isinstance(asyncio.run(main()), ringline.EventLoop)
    finally:
        asyncio.set_event_loop_policy(saved)
    assert asyncio.get_event_loop_policy() is saved


def test_ringline_event_loop_policy(ringline):
    policy = ringline.EventLoopPolicy()
    assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
    lp = policy.new_event_loop()
    try:
        assert isinstance(lp, ringline.EventLoop)
        assert lp.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
    finally:
        lp.close()


def test_ringline_with_asyncio_runner(ringline):
    async def main():
        return asyncio.get_running_loop()

    with asyncio.Runner(loop_factory=ringline.new_event_loop) as runner:
        lp = runner.run(main())
        assert isinstance(lp, ringline.EventLoop)
    assert lp.is_closed()


# ---------------------------------------------------------------------------
# malloc tuning (Config.malloc_trim_threshold): process-wide, so each case
# runs in a fresh interpreter.
# ---------------------------------------------------------------------------

_MALLOC_PROBE = r"""
import os, resource, sys
sys.path.insert(0, {src!r})
import ringline
from ringline.aio import eventloop as rl_loop
loop = ringline.new_event_loop({config})
def churn():
    # Many 64 KiB objects alive at once, then all freed, then allocated
    # again: what glibc trims unless told otherwise.
    live = [bytes(65536) for _ in range(64)]
    del live
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    live = [bytes(65536) for _ in range(64)]
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
churn()
print(rl_loop.malloc_tuning.split(':')[0].replace(' ', '_'), min(churn() for _ in range(5)))
loop.close()
"""


def _malloc_probe(trim: int | None, env_extra: dict[str, str] | None = None) -> tuple[str, int]:
    """(malloc_tuning's first word, page faults of a 4 MiB re-allocation) in
    a fresh interpreter whose loop has Config(malloc_trim_threshold=trim),
    or the default Config when trim is None."""
    import platform
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    src = str(paths.SRC)
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("MALLOC_") or k == "GLIBC_TUNABLES")}
    env.update(env_extra or {})
    config = "" if trim is None else f"ringline.Config(malloc_trim_threshold={trim})"
    out = subprocess.run([sys.executable, "-c", _MALLOC_PROBE.format(src=src, config=config)],
                         capture_output=True, text=True, timeout=60, env=env, check=True)
    tuned, faults = out.stdout.split()
    return tuned, int(faults)


@pytest.mark.no_asan(reason="counts the page faults of glibc malloc's trimming; ASan replaces malloc")
def test_malloc_is_left_alone_by_default():
    # A library does not retune the process's allocator unless asked.
    state, faults_default = _malloc_probe(None)
    assert state == "untried"
    assert faults_default > 500     # glibc's own trimming is in force
    state, _ = _malloc_probe(0)
    assert state == "untried"


@pytest.mark.no_asan(reason="counts the page faults of glibc malloc's trimming; ASan replaces malloc")
def test_malloc_tuning_opt_in_keeps_freed_heap_top_for_reuse():
    state, faults_tuned = _malloc_probe(32 << 20)
    assert state == "tuned"
    # 64 x 64 KiB = 4 MiB re-allocated: ~1,000 pages faulted in again with
    # glibc's defaults (the freed top was trimmed, see the test above), next
    # to none when tuned.
    assert faults_tuned < 50


@pytest.mark.no_asan(reason="counts the page faults of glibc malloc's trimming; ASan replaces malloc")
def test_malloc_tuning_defers_to_the_environment():
    # glibc's default value, set explicitly: the user's choice stands.
    state, faults = _malloc_probe(32 << 20, {"MALLOC_TRIM_THRESHOLD_": "131072"})
    assert state == "left_alone"
    assert faults > 500      # glibc still trims
