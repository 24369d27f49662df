"""ringline.metrics: counters move with real work."""

import asyncio
import os
import signal
import socket

import ringline
import ringline.fs
from ringline import metrics


def test_snapshot_counts_stream_work():
    async def main():
        before = metrics.snapshot()

        async def echo(conn):
            while data := await conn.recv():
                conn.send_nowait(data)

        srv = await ringline.serve(echo, "127.0.0.1", 0)
        c = await ringline.connect("127.0.0.1", srv.port)
        # A whole 64 KiB buffer's worth echoed back while the receiver waits
        # (on a fresh ring, so it starts a buffer): handed over without a
        # copy (before 6.12, 16 KiB buffers: pieces of at least half one are).
        big = bytes(range(256)) * 256
        r = asyncio.ensure_future(c.recv_exactly(len(big)))
        await asyncio.sleep(0)
        await c.send(big)
        assert await r == big
        handed = metrics.snapshot().recv_buffers_handed_out
        for _ in range(10):
            await c.send(b"x" * 100)
            assert await c.recv_exactly(100) == b"x" * 100
        during = metrics.snapshot()
        c.close()
        await c.wait_closed()
        await srv.shutdown(1)
        return before, handed, during

    before, handed, during = ringline.run(main())
    assert during.sqes > before.sqes + 20      # 10 sends each way at least
    assert during.cqes > before.cqes + 20
    assert during.enters > before.enters
    assert during.streams == 2                 # the client and the accepted one
    assert during.syscalls_per(before, 20) > 0
    assert handed > before.recv_buffers_handed_out == 0
    assert during.recv_buffers_handed_out == handed     # small ones are copied
    # Both ends are on this loop: each byte counted once sent, once received.
    echoed = 2 * (256 * 256 + 10 * 100)
    assert during.bytes_out == during.bytes_in == echoed


def test_snapshot_on_the_portable_backend_has_the_same_fields():
    """Another asyncio loop is the portable backend: the same fields, the
    ring's counters 0, ``streams`` the native API's open connections."""
    import asyncio

    import ringline

    async def main():
        empty = metrics.snapshot()
        server = await ringline.serve(lambda conn: conn.recv(), "127.0.0.1", 0)
        conn = await ringline.connect("127.0.0.1", server.port)
        await asyncio.sleep(0.05)
        during = metrics.snapshot(asyncio.get_running_loop())
        conn.close()
        await server.shutdown(1.0)
        return empty, during

    empty, during = asyncio.run(main())
    assert isinstance(during, metrics.LoopStatistics)
    assert empty.streams == 0 and during.streams == 2
    assert during.sqes == during.enters == during.iterations == during.send_pool_free == 0


# -- the counters added for operations (issue 22) ------------------------------

def test_send_pool_exhausted_counts_refused_sends():
    """A copy that needs more send-pool slots than are free is refused with
    SendPoolExhausted, nothing queued, and counted (both send paths)."""
    import pytest

    from tests.support.net import conn_pair
    from tests.support.running import run

    async def main():
        async with conn_pair() as (srv, client):
            before = metrics.snapshot()
            client.send_nowait(bytearray(64))          # one slot: fits
            with pytest.raises(ringline.errors.SendPoolExhausted):
                client.send_nowait(bytearray(64 * 3))  # three slots of two
            with pytest.raises(ringline.errors.SendPoolExhausted):
                await client.send_parts([bytearray(64), bytearray(64), bytearray(64)])
            assert await srv.recv_exactly(64) == bytes(64)
            after = metrics.snapshot()
        return before, after

    config = ringline.Config(send_pool_slots=2, send_pool_slot_size=64)
    before, after = run(main, config=config)
    assert before.send_pool_exhausted == 0
    assert after.send_pool_exhausted == 2
    assert after.send_pool_free == 2       # the one that fitted was sent and given back


def _file_work(path):
    """Three file operations that succeed, then two that fail."""
    async def work():
        fd = await ringline.fs.openat(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            assert await ringline.fs.write(fd, b"metrics", 0) == 7
            assert await ringline.fs.read(fd, 7, 0) == b"metrics"
        finally:
            os.close(fd)
        for missing in ("a", "b"):
            try:
                await ringline.fs.stat(path + ".missing." + missing)
            except FileNotFoundError:
                pass
            else:
                raise AssertionError("stat of a missing file succeeded")
    return work


def test_file_ops_and_errors_count_on_the_ring(tmp_path):
    from tests.support.running import run

    async def main():
        before = metrics.snapshot()
        await _file_work(str(tmp_path / "f"))()
        return before, metrics.snapshot()

    before, after = run(main)
    assert after.file_ops - before.file_ops == 5     # openat, write, read, 2 x statx
    assert after.file_errors - before.file_errors == 2


def test_file_ops_and_errors_count_on_the_portable_backend(tmp_path):
    async def main():
        before = metrics.snapshot()
        await _file_work(str(tmp_path / "f"))()
        return before, metrics.snapshot()

    before, after = asyncio.run(main())
    assert (before.file_ops, before.file_errors) == (0, 0)
    assert (after.file_ops, after.file_errors) == (5, 2)


def test_submit_failures_count_interrupted_waits():
    """A signal that arrives while the loop blocks in io_uring_enter makes it
    fail with EINTR: handled (the loop goes on) and counted."""
    from tests.support.running import run

    hits = []
    old = signal.signal(signal.SIGALRM, lambda *_: hits.append(1))

    async def main():
        before = metrics.snapshot()
        signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
        try:
            for _ in range(10):
                await asyncio.sleep(0.05)        # the loop waits in the kernel
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
        return before, metrics.snapshot()

    try:
        before, after = run(main)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert len(hits) >= 5
    assert before.submit_failures == 0
    assert after.submit_failures >= 1
    assert after.waits > before.waits


def test_submit_failures_count_a_raised_enter_and_not_an_early_submit():
    """A full SQ submitted early to make room is no failure (counted apart);
    an io_uring_enter that fails and raises is.  (EBUSY, "reap the CQ
    overflow first", is handled the same way, but kernels since 5.19 no
    longer answer it to a full CQ, so it cannot be provoked here.)"""
    import errno

    import pytest

    from ringline._core import ring as _ring

    ring = _ring.Ring.open(8)
    try:
        for i in range(9):
            ring.prep_nop(i)          # the 9th submits the first 8
        assert ring.sq_full_submits == 1
        assert ring.submit_failures == 0
        ring.submit(wait_nr=9, timeout=5)
        assert len(ring.reap()) == 9
    finally:
        ring.close()
    # A ring made disabled (R_DISABLED) and never enabled refuses to enter.
    ring = _ring.Ring.open(8, flags=_ring.DEFAULT_FLAGS | _ring.SETUP_R_DISABLED)
    try:
        for i in range(8):
            ring.prep_nop(i)
        with pytest.raises(OSError) as info:
            ring.prep_nop(8)          # the SQ is full: submit, which fails
        assert info.value.errno == errno.EBADFD
        assert ring.submit_failures == 1
    finally:
        ring.close()


def test_a_scrape_shows_every_counter(tmp_path):
    """The served worker counts file operations, a refused send and closed
    connections; the supervisor's /metrics, parsed by prometheus_client,
    carries every counter of ringline.ops.export.METRICS."""
    import http.client
    import re
    import subprocess
    import sys
    import textwrap
    import time
    from pathlib import Path

    import pytest

    from ringline.ops.export import METRICS

    parser = pytest.importorskip("prometheus_client.parser")
    (tmp_path / "metricsapp.py").write_text(textwrap.dedent(f"""
        import os
        import ringline
        import ringline.fs

        async def handler(conn):
            data = await conn.recv()
            fd = await ringline.fs.openat({str(tmp_path / "data")!r},
                                          os.O_RDWR | os.O_CREAT, 0o600)
            await ringline.fs.write(fd, data, 0)
            os.close(fd)
            try:
                await ringline.fs.stat({str(tmp_path / "missing")!r})
            except FileNotFoundError:
                pass
            try:   # more than the default send pool (1024 x 16 KiB)
                conn.send_nowait(bytearray(17 << 20))
            except ringline.errors.SendPoolExhausted:
                conn.send_nowait(b"full:" + data)
    """))
    lib = str(Path(ringline.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), lib]))
    proc = subprocess.Popen([sys.executable, "-m", "ringline", "serve", "metricsapp:handler",
                             "--bind", "127.0.0.1:0", "--workers", "1",
                             "--metrics", "127.0.0.1:0"],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        log, ports = [], {}
        deadline = time.monotonic() + 60
        while len(ports) < 2 and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, "\n".join(log)
            log.append(line)
            if m := re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", line):
                ports["metrics"] = int(m.group(1))
            if m := re.search(r"on 127\.0\.0\.1:(\d+) with", line):
                ports["serve"] = int(m.group(1))
        for i in range(3):
            with socket.create_connection(("127.0.0.1", ports["serve"]), timeout=10) as s:
                s.sendall(b"req%d" % i)
                assert s.recv(100) == b"full:req%d" % i
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", ports["metrics"], timeout=5)
            conn.request("GET", "/metrics")
            body = conn.getresponse().read().decode()
            conn.close()
            fams = {f.name: f for f in parser.text_string_to_metric_families(body)}

            def value(name, fams=fams):
                samples = [s for s in fams[f"ringline_{name}"].samples
                           if not s.name.endswith("_created")]
                if not samples:
                    return None                       # no report from the worker yet
                (sample,) = samples
                assert sample.labels == {"worker": "0"}
                return sample.value

            if (value("connections_closed") or 0) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for _key, (name, _kind, _doc) in METRICS.items():
            assert value(name) is not None, name      # present, one worker
        assert value("connections_accepted") == value("connections_closed") == 3
        assert value("connections_active") == 0
        assert value("file_operations") >= 9          # openat, write, statx per request
        assert value("file_operation_errors") == 3
        assert value("send_pool_exhausted") == 3
        assert value("submit_failures") >= 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_histograms_bucket_a_known_step_and_skip_idle_time_between_runs():
    """A handler step of about 3 ms lands in the bucket of its duration as
    the handler measured it (integer bucketing of the tick counter); time
    between two runs of the loop is not an iteration's busy time."""
    import time

    loop = ringline.new_event_loop()
    try:
        loop.enable_histograms()
        took = []

        async def main():
            async def handler(conn):
                data = await conn.recv()
                t = time.perf_counter()                  # this step starts
                while time.perf_counter() - t < 0.003:   # busy, not a wait
                    pass
                conn.send_nowait(data)
                took.append(time.perf_counter() - t)

            srv = await ringline.serve(handler, "127.0.0.1", 0)
            c = await ringline.connect("127.0.0.1", srv.port)
            await c.send(b"x")
            assert await c.recv_exactly(1) == b"x"
            c.close()
            await c.wait_closed()
            await srv.shutdown(1)

        loop.run_until_complete(main())
        time.sleep(0.3)                        # idle, outside the loop
        loop.run_until_complete(asyncio.sleep(0))
        h = loop.histograms()
        bounds, counts, total = h["task_step"]
        (d,) = took        # wall time, so a busy machine may stretch it: no fixed bucket
        top = max(i for i, n in enumerate(counts) if n)
        assert bounds[top - 1] <= d * 1.2 + 1e-4 and d <= bounds[top]
        assert d <= total < d + 0.25
        bounds, counts, total = h["loop_busy"]
        top = max(i for i, n in enumerate(counts) if n)
        assert bounds[top] >= d
        assert total < d + 0.25                    # not the 0.3 s between the runs
    finally:
        loop.close()


def test_operations_doc_lists_every_exported_metric():
    from ringline.ops.export import HISTOGRAMS, METRICS
    from tests.support.paths import ROOT

    doc = (ROOT / "docs" / "operations.md").read_text()
    for name, kind, _ in METRICS.values():
        full = f"`ringline_{name}{'_total' if kind == 'counter' else ''}`"
        assert full in doc, full
    for name, _ in HISTOGRAMS.values():
        assert f"`ringline_{name}`" in doc, name
