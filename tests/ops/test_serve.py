"""``python -m ringline serve``: flags, workers, restarts, signals, metrics.

Each test runs the real command in a subprocess (a supervisor and its worker
processes) with an application module written to a temp directory, and
talks to it over loopback.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ringline

# The tree ringline was imported from (src, or the debug build's).
_LIB = str(Path(ringline.__file__).resolve().parent.parent)

ECHO_APP = """
import os
import ringline

VERSION = {version!r}

async def echo(conn):
    while data := await conn.recv():
        if data == b"crash":
            os._exit(7)
        if data == b"version":
            conn.send_nowait(VERSION.encode())
            continue
        conn.send_nowait(data)

async def slow(conn):
    # One request, answered after a pause: in flight when a stop comes.
    import asyncio
    data = await conn.recv_exactly(4)
    await asyncio.sleep(0.4)
    conn.send_nowait(data)

async def version(conn):
    data = await conn.recv_exactly(1)
    conn.send_nowait(VERSION.encode() + data)
"""


def _write_app(tmp: Path, version: str = "v1") -> None:
    (tmp / "opsapp.py").write_text(textwrap.dedent(ECHO_APP.format(version=version)))
    # A changed module must be re-read by new workers, whatever its mtime.
    for pyc in (tmp / "__pycache__").glob("opsapp.*") if (tmp / "__pycache__").exists() else []:
        pyc.unlink()


class Served:
    """A running ``python -m ringline serve`` and its log."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        with self._cond:
            while True:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line matching {pattern!r} in:\n"
                                         + "\n".join(self.lines))
                self._cond.wait(min(left, 0.2))

    def count(self, pattern: str) -> int:
        with self._cond:
            return sum(1 for line in self.lines if re.search(pattern, line))

    @property
    def port(self) -> int:
        return int(self.wait_for(r"serving .* on .*:(\d+) with").group(1))

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(5)
        return code


def _serve(tmp: Path, *args: str) -> Served:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp), _LIB]))
    proc = subprocess.Popen([sys.executable, "-m", "ringline", "serve", *args],
                            cwd=tmp, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    return Served(proc)


@pytest.fixture
def app_dir(tmp_path: Path) -> Iterator[Path]:
    _write_app(tmp_path)
    yield tmp_path


def _roundtrip(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# -- flags ---------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["opsapp:echo", "--bind", "nonsense"], "is not HOST:PORT"),
    (["opsapp:echo", "--bind", "127.0.0.1:70000"], "is not HOST:PORT"),
    (["opsapp:echo", "--workers", "0"], "must be at least 1"),
    (["opsapp:echo", "--workers", "two"], "is not a whole number"),
    (["opsapp:echo", "--graceful-timeout", "-1"], "must be a finite number"),
    (["opsapp"], "is not MODULE:NAME"),
    ([], "one of the arguments"),
    (["opsapp:echo", "--asgi", "opsapp:app"], "not allowed with"),
    (["--asgi", "opsapp:app", "--udp", "127.0.0.1:0"], "--udp needs a native handler"),
    (["opsapp:echo", "--ssl-key", "k.pem"], "--ssl-key needs --ssl-cert"),
    (["opsapp:echo", "--ssl-cert", "missing.pem"], "missing.pem: no such file"),
    (["opsapp:echo", "--backend", "fast"], "invalid choice"),
])
def test_bad_flags_are_clear_errors(app_dir: Path, args: list[str], message: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(app_dir), _LIB]))
    r = subprocess.run([sys.executable, "-m", "ringline", "serve", *args], cwd=app_dir,
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_port_in_use_is_a_clear_error(app_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(app_dir), _LIB]))
        r = subprocess.run([sys.executable, "-m", "ringline", "serve", "opsapp:echo",
                            "--bind", f"127.0.0.1:{port}", "--workers", "1"], cwd=app_dir,
                           env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "in use" in r.stderr


def test_a_target_that_does_not_import_stops_with_its_error(app_dir: Path) -> None:
    served = _serve(app_dir, "nosuchmodule:echo", "--bind", "127.0.0.1:0", "--workers", "2")
    code = served.proc.wait(60)
    served._reader.join(5)
    assert code == 3
    assert any("cannot start: ModuleNotFoundError" in line for line in served.lines), served.lines


# -- serving -------------------------------------------------------------------

def test_workers_serve_and_stop_gracefully(app_dir: Path) -> None:
    served = _serve(app_dir, "opsapp:echo", "--bind", "127.0.0.1:0", "--workers", "2")
    try:
        port = served.port
        assert served.count(r"worker \d ready") == 2
        for i in range(40):
            payload = os.urandom(1000 + i * 997)
            assert _roundtrip(port, payload) == payload
    finally:
        code = served.stop()
    assert code == 0
    assert served.count(r"stopped, exit status 0") == 2


def test_crashed_worker_is_restarted(app_dir: Path) -> None:
    served = _serve(app_dir, "opsapp:echo", "--bind", "127.0.0.1:0", "--workers", "1")
    try:
        port = served.port
        first_pid = int(served.wait_for(r"worker 0 ready \(pid (\d+)").group(1))
        assert _roundtrip(port, b"crash") == b""
        served.wait_for(r"worker 0 \(pid \d+\) died \(exit status 7\).*restarting in 0\.1s")
        served.wait_for(rf"worker 0 ready \(pid (?!{first_pid}\b)\d+")
        # The listening socket outlived the worker: connections queued while
        # it was down are served by the new one.
        assert _roundtrip(port, b"after the crash") == b"after the crash"
    finally:
        assert served.stop() == 0


def test_sigterm_finishes_requests_in_flight(app_dir: Path) -> None:
    served = _serve(app_dir, "opsapp:slow", "--bind", "127.0.0.1:0", "--workers", "2",
                    "--graceful-timeout", "5")
    port = served.port
    socks = []
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"%04d" % i)
        socks.append(s)
    time.sleep(0.1)      # the requests reach the workers; the answers take 0.4 s
    served.proc.send_signal(signal.SIGTERM)
    for i, s in enumerate(socks):
        with s:
            assert s.recv(16) == b"%04d" % i
    assert served.stop() == 0


def _load(port: int, stop: threading.Event, results: dict[str, int]) -> None:
    """New connection per request, as a client behind a restart sees it."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"?")
                got = b""
                while len(got) < 3:
                    chunk = s.recv(16)
                    if not chunk:
                        break
                    got += chunk
            if got in (b"v1?", b"v2?"):
                results[got.decode()[:2]] = results.get(got.decode()[:2], 0) + 1
            else:
                results["failed"] = results.get("failed", 0) + 1
                results[f"got {got!r}"] = results.get(f"got {got!r}", 0) + 1
        except OSError as exc:
            results["failed"] = results.get("failed", 0) + 1
            results[repr(exc)] = results.get(repr(exc), 0) + 1


def test_sighup_restarts_with_new_code_and_no_failed_request(app_dir: Path) -> None:
    served = _serve(app_dir, "opsapp:version", "--bind", "127.0.0.1:0", "--workers", "2")
    try:
        port = served.port
        stop = threading.Event()
        results: dict[str, int] = {}
        clients = [threading.Thread(target=_load, args=(port, stop, results)) for _ in range(4)]
        for c in clients:
            c.start()
        time.sleep(0.5)
        _write_app(app_dir, "v2")
        served.proc.send_signal(signal.SIGHUP)
        served.wait_for(r"generation 1 serving")
        deadline = time.monotonic() + 20
        while results.get("v2", 0) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for c in clients:
            c.join(30)
        assert results.get("failed", 0) == 0, results
        assert results.get("v1", 0) > 0 and results.get("v2", 0) >= 50, results
        assert served.count(r"generation 0\)") == 2 and served.count(r"generation 1\)") == 2
        # The old generation drained and exited cleanly.
        deadline = time.monotonic() + 20
        while served.count(r"stopped, exit status 0") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert served.count(r"stopped, exit status 0") == 2
    finally:
        assert served.stop() == 0


def test_sighup_with_broken_code_keeps_the_old_workers(app_dir: Path) -> None:
    served = _serve(app_dir, "opsapp:version", "--bind", "127.0.0.1:0", "--workers", "1")
    try:
        port = served.port
        (app_dir / "opsapp.py").write_text("raise ImportError('broken deploy')\n")
        served.proc.send_signal(signal.SIGHUP)
        served.wait_for(r"restart failed \(ImportError: broken deploy\)")
        assert _roundtrip(port, b"?") == b"v1?"
    finally:
        assert served.stop() == 0


def test_metrics_scrape_parses_and_counts(app_dir: Path) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    served = _serve(app_dir, "opsapp:echo", "--bind", "127.0.0.1:0", "--workers", "2",
                    "--metrics", "127.0.0.1:0")
    try:
        port = served.port
        mport = int(served.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
        for _ in range(30):
            assert _roundtrip(port, b"ping") == b"ping"
        deadline = time.monotonic() + 10
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", mport, timeout=5)
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            body = resp.read().decode()
            conn.close()
            assert resp.status == 200
            fams = {f.name: f for f in text_string_to_metric_families(body)}
            accepted = sum(s.value for s in fams["ringline_connections_accepted"].samples)
            if accepted >= 30 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert accepted == 30
        received = sum(s.value for s in fams["ringline_received_bytes"].samples)
        sent = sum(s.value for s in fams["ringline_sent_bytes"].samples)
        assert received == sent == 30 * 4
        steps = fams["ringline_handler_step_seconds"]
        assert steps.type == "histogram"
        counts = [s.value for s in steps.samples if s.name.endswith("_count")]
        assert sum(counts) >= 30            # each handler steps at least once
        iters = [s for s in fams["ringline_loop_iteration_seconds"].samples
                 if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"]
        assert len(iters) == 2 and all(s.value > 0 for s in iters)
        workers = {s.labels["worker"] for s in fams["ringline_cqes"].samples}
        assert workers == {"0", "1"}
        assert fams["ringline_workers"].samples[0].value == 2
        assert fams["ringline_connections_active"].type == "gauge"
    finally:
        assert served.stop() == 0


# -- other kinds of application ----------------------------------------------

ASGI_APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    import asyncio
    loop = type(asyncio.get_running_loop()).__module__
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": loop.encode()})

import asyncio

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)
"""


def test_asgi_app_through_uvicorn(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    (tmp_path / "asgiapp.py").write_text(ASGI_APP)
    served = _serve(tmp_path, "--asgi", "asgiapp:app", "--bind", "127.0.0.1:0",
                    "--workers", "2")
    try:
        port = served.port
        for _ in range(10):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/")
            resp = conn.getresponse()
            assert resp.status == 200
            body = resp.read().decode()
            conn.close()
            assert body.startswith("ringline")     # the app ran on ringline's loop
    finally:
        assert served.stop() == 0


def test_asyncio_protocol_factory(tmp_path: Path) -> None:
    (tmp_path / "asgiapp.py").write_text(ASGI_APP)
    served = _serve(tmp_path, "--asyncio", "asgiapp:Echo", "--bind", "127.0.0.1:0",
                    "--workers", "1")
    try:
        payload = os.urandom(200_000)
        assert _roundtrip(served.port, payload) == payload
    finally:
        assert served.stop() == 0
