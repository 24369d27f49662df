"""Frameworks that take a loop factory, each run for real with ringline's.

* pytest-asyncio >= 1.4: ``@pytest.mark.asyncio(loop_factories=["ringline"])``
  through ringline's pytest plugin (``ringline.pytest_plugin``), loaded with
  ``-p`` and through a ``pytest11`` entry point in installed metadata;
* anyio's pytest plugin: an ``anyio_backend`` fixture returning
  ``("asyncio", {"loop_factory": ringline.new_event_loop})``;
* hypercorn: ``asyncio.Runner(loop_factory=ringline.new_event_loop)`` running
  ``hypercorn.asyncio.serve`` for a plain ASGI app, hit over loopback;
* granian: its loop registry (``granian.loops``) takes a builder by name
  (the Python API; the ``--loop`` CLI option only takes granian's own names);
* uvicorn: ``--loop ringline:new_event_loop --workers 2`` (worker processes;
  the single-process CLI, ``Config(loop=...)`` and ``anyio.run(...,
  backend_options={"loop_factory": ...})`` are in ``test_apps.py``);
* no policy: loop factories work under ``-W error -X dev`` and never create
  asyncio's policy object.

Generated test files run in a child pytest in a temp dir (its own ini, so
this suite's conftest is not loaded), bounded in time.  In CI (``CI=true``)
a missing framework is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import tomllib

import pytest

from tests.support import loops
from tests.support.paths import ROOT

pytestmark = pytest.mark.timeout(120)

LOCAL = "127.0.0.1"
IO_TIMEOUT = 10.0
CHILD_TIMEOUT = 90


def require_module(name):
    """Import ``name``; skip without it (fail under CI=true)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        msg = f"needs the Python package {name!r} ({exc})"
        if loops.IN_CI:
            pytest.fail(f"{msg}; CI=true, so this is a failure", pytrace=False)
        pytest.skip(msg)


def ringline_path():
    """The directory the ringline under test was imported from (the release
    build in ``src`` or the debug build's lib dir), for a child's PYTHONPATH."""
    return os.path.dirname(os.path.dirname(loops.require_ringline().__file__))


def plugin_option():
    """``-p`` argument that loads ringline's plugin: its module name from a
    checkout; once ringline is installed, pytest already loaded it under the
    entry point's name, and naming the module too would register it twice."""
    installed = importlib.metadata.entry_points(group="pytest11")
    return "ringline" if any(ep.name == "ringline" for ep in installed) else \
        "ringline.pytest_plugin"


def child_pytest(tmp_path, source, *args, extra_path=()):
    """Run ``source`` as a test file in a fresh pytest; return (rc, output)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n"
                                         "asyncio_default_fixture_loop_scope = function\n")
    (tmp_path / "test_generated.py").write_text(textwrap.dedent(source))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, extra_path), ringline_path()])
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-rA", "-p", "no:randomly", *args,
         "test_generated.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    return proc.returncode, proc.stdout + proc.stderr


def outcomes(output):
    """``{test id: "PASSED"/"FAILED"/...}`` from ``pytest -v`` output."""
    found = {}
    for line in output.splitlines():
        if line.startswith("test_generated.py::") and " " in line:
            node, _, rest = line.partition(" ")
            found[node.split("::", 1)[1]] = rest.split()[0]
    return found


# ---------------------------------------------------------------------------
# pytest-asyncio 1.x
# ---------------------------------------------------------------------------

PYTEST_ASYNCIO_TESTS = """
    import asyncio
    import pytest
    import pytest_asyncio
    import ringline

    async def echo_round_trip():
        async def handle(reader, writer):
            writer.write(await reader.readexactly(5))
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        got = await asyncio.wait_for(reader.readexactly(5), 10)
        writer.close()
        server.close()
        await server.wait_closed()
        return got

    @pytest_asyncio.fixture
    async def loop_kind():
        # An async fixture runs on the same loop as the test.
        return type(asyncio.get_running_loop()).__module__

    @pytest.mark.asyncio(loop_factories=["ringline"])
    async def test_on_ringline(loop_kind):
        loop = asyncio.get_running_loop()
        assert isinstance(loop, ringline.EventLoop), type(loop)
        assert loop_kind == type(loop).__module__
        assert await echo_round_trip() == b"hello"

    @pytest.mark.asyncio(loop_factories=["asyncio", "ringline"])
    async def test_both(request):
        loop = asyncio.get_running_loop()
        on_ringline = isinstance(loop, ringline.EventLoop)
        assert on_ringline == request.node.name.endswith("[ringline]"), request.node.name
        assert await echo_round_trip() == b"hello"

    @pytest.mark.asyncio
    async def test_unmarked_keeps_the_default_loop():
        assert not isinstance(asyncio.get_running_loop(), ringline.EventLoop)
"""

EXPECTED_PYTEST_ASYNCIO = {
    "test_on_ringline": "PASSED",
    "test_both[asyncio]": "PASSED",
    "test_both[ringline]": "PASSED",
    "test_unmarked_keeps_the_default_loop": "PASSED",
}


def _require_pytest_asyncio_1():
    mod = require_module("pytest_asyncio")
    plugin = importlib.import_module("pytest_asyncio.plugin")
    if not hasattr(getattr(plugin, "PytestAsyncioSpecs", None),
                   "pytest_asyncio_loop_factories"):
        msg = f"pytest-asyncio {mod.__version__} has no pytest_asyncio_loop_factories hook"
        if loops.IN_CI:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def test_pytest_asyncio_loop_factories_with_p_option(tmp_path):
    """``pytest -p ringline.pytest_plugin``: "ringline" names ringline's loop,
    "asyncio" the standard one, and an unmarked test keeps the default."""
    loops.require_ringline()
    _require_pytest_asyncio_1()
    rc, out = child_pytest(tmp_path, PYTEST_ASYNCIO_TESTS, "-p", plugin_option())
    assert outcomes(out) == EXPECTED_PYTEST_ASYNCIO, out
    assert rc == 0, out


CONFTEST_WITH_OWN_FACTORIES = """
    import asyncio

    class Custom(asyncio.SelectorEventLoop):
        pass

    def pytest_asyncio_loop_factories(config, item):
        return {"custom": Custom}
"""

OWN_FACTORY_TESTS = """
    import asyncio
    import pytest
    import ringline

    @pytest.mark.asyncio(loop_factories=["custom", "ringline"])
    async def test_named(request):
        loop = asyncio.get_running_loop()
        if request.node.name.endswith("[ringline]"):
            assert isinstance(loop, ringline.EventLoop), type(loop)
        else:
            assert type(loop).__name__ == "Custom", type(loop)

    @pytest.mark.asyncio
    async def test_unmarked_gets_only_the_projects_factory():
        assert type(asyncio.get_running_loop()).__name__ == "Custom"
"""


def test_pytest_asyncio_next_to_a_projects_own_factories(tmp_path):
    """A project's conftest that implements the hook itself keeps its mapping:
    ringline's plugin adds "ringline" only for a test that names it."""
    loops.require_ringline()
    _require_pytest_asyncio_1()
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST_WITH_OWN_FACTORIES))
    rc, out = child_pytest(tmp_path, OWN_FACTORY_TESTS, "-p", plugin_option())
    assert outcomes(out) == {
        "test_named[custom]": "PASSED",
        "test_named[ringline]": "PASSED",
        "test_unmarked_gets_only_the_projects_factory": "PASSED",
    }, out
    assert rc == 0, out


def test_pytest_asyncio_without_the_plugin_refuses_the_name(tmp_path):
    """The control: without ringline's plugin, pytest-asyncio does not know
    "ringline" (so the test above really goes through the plugin)."""
    loops.require_ringline()
    _require_pytest_asyncio_1()
    rc, out = child_pytest(tmp_path, PYTEST_ASYNCIO_TESTS, "-p", "no:ringline")
    assert rc != 0, out
    assert "requires at least one pytest_asyncio_loop_factories hook" in out, out


def test_pytest_asyncio_through_the_declared_entry_point(tmp_path):
    """The ``pytest11`` entry point that pyproject.toml declares, found by
    pytest in installed metadata (a ``.dist-info`` on the child's path, as
    ``pip install`` writes it), with no ``-p``."""
    loops.require_ringline()
    _require_pytest_asyncio_1()
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    entry_points = project["entry-points"]["pytest11"]
    assert entry_points == {"ringline": "ringline.pytest_plugin"}
    site = tmp_path / "site"
    dist = site / "ringline-0.0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ringline\nVersion: 0.0.0\n")
    (dist / "entry_points.txt").write_text(
        "[pytest11]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rc, out = child_pytest(run_dir, PYTEST_ASYNCIO_TESTS, extra_path=[site])
    assert outcomes(out) == EXPECTED_PYTEST_ASYNCIO, out
    assert rc == 0, out


# ---------------------------------------------------------------------------
# anyio's pytest plugin
# ---------------------------------------------------------------------------

ANYIO_TESTS = """
    import asyncio
    import anyio
    import pytest
    import ringline
    from anyio.abc import SocketAttribute

    @pytest.fixture(params=["asyncio", "ringline"])
    def anyio_backend(request):
        if request.param == "ringline":
            return "asyncio", {"loop_factory": ringline.new_event_loop}
        return "asyncio"

    @pytest.mark.anyio
    async def test_echo(anyio_backend):
        loop = asyncio.get_running_loop()
        expect = not isinstance(anyio_backend, str)
        assert isinstance(loop, ringline.EventLoop) == expect, type(loop)

        async def handle(stream):
            async with stream:
                async for chunk in stream:
                    await stream.send(chunk)

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            with anyio.fail_after(10):
                async with await anyio.connect_tcp("127.0.0.1", port) as c:
                    await c.send(b"x" * 1000)
                    got = b""
                    while len(got) < 1000:
                        got += await c.receive()
            assert got == b"x" * 1000
            tg.cancel_scope.cancel()
"""


def test_anyio_pytest_plugin_backend_options(tmp_path):
    """anyio's pytest plugin with ``anyio_backend`` =
    ``("asyncio", {"loop_factory": ringline.new_event_loop})``."""
    loops.require_ringline()
    require_module("anyio")
    rc, out = child_pytest(tmp_path, ANYIO_TESTS)
    assert outcomes(out) == {"test_echo[asyncio]": "PASSED", "test_echo[ringline]": "PASSED"}, out
    assert rc == 0, out


# ---------------------------------------------------------------------------
# hypercorn
# ---------------------------------------------------------------------------


async def _asgi_app(scope, receive, send):
    """Echo the request body back, with the loop's class in a header."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    cls = type(asyncio.get_running_loop())
    info = json.dumps({"loop": f"{cls.__module__}.{cls.__qualname__}",
                       "path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"x-info", info)]})
    await send({"type": "http.response.body", "body": body})


def _http_post(port, path, body):
    """A blocking HTTP/1.1 POST (the standard library's client, in a thread)."""
    import http.client
    conn = http.client.HTTPConnection(LOCAL, port, timeout=IO_TIMEOUT)
    try:
        conn.request("POST", path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.getheader("x-info"), resp.read()
    finally:
        conn.close()


def test_hypercorn_on_a_ringline_runner():
    """``asyncio.Runner(loop_factory=ringline.new_event_loop)`` runs
    ``hypercorn.asyncio.serve``; a blocking client in a thread posts bodies
    (small and 1 MiB) and gets them back, served on ringline's loop."""
    ringline = loops.require_ringline()
    require_module("hypercorn")
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    with socket.socket() as probe:
        probe.bind((LOCAL, 0))
        port = probe.getsockname()[1]
    config = Config()
    config.bind = [f"{LOCAL}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 1.0
    results = {}

    async def main():
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        assert isinstance(loop, ringline.EventLoop)

        def client():
            try:
                import time
                deadline = time.monotonic() + IO_TIMEOUT
                while True:  # wait until hypercorn listens
                    try:
                        socket.create_connection((LOCAL, port), timeout=1).close()
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
                results["small"] = _http_post(port, "/small", b"ping")
                big = os.urandom(1 << 20)
                results["big"] = _http_post(port, "/big", big), big
            except BaseException as exc:  # reported by the assertions below
                results["error"] = repr(exc)
            finally:
                loop.call_soon_threadsafe(shutdown.set)

        th = threading.Thread(target=client, daemon=True)
        th.start()
        await asyncio.wait_for(serve(_asgi_app, config, shutdown_trigger=shutdown.wait),
                               timeout=60)
        th.join(IO_TIMEOUT)

    with asyncio.Runner(loop_factory=ringline.new_event_loop) as runner:
        runner.run(main())
    assert "error" not in results, results
    status, info, body = results["small"]
    assert status == 200 and body == b"ping"
    assert json.loads(info) == {"loop": "ringline.aio.eventloop.EventLoop", "path": "/small"}
    (status, info, body), big = results["big"]
    assert status == 200 and body == big


# ---------------------------------------------------------------------------
# granian
# ---------------------------------------------------------------------------

GRANIAN_APP = """
    import asyncio


    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        cls = type(asyncio.get_running_loop())
        loop = f"{cls.__module__}.{cls.__qualname__}".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-info", loop)]})
        await send({"type": "http.response.body", "body": body})
"""

GRANIAN_SERVE = """
    import asyncio
    import sys

    import granian
    import ringline
    from granian.constants import Interfaces


    @granian.loops.register("ringline")
    def build_ringline_loop():
        # Granian's own builders also make the new loop the thread's current one.
        loop = ringline.new_event_loop()
        asyncio.set_event_loop(loop)
        return loop


    granian.Granian("granian_app:app", address="127.0.0.1", port=int(sys.argv[1]),
                    interface=Interfaces.ASGI, loop="ringline", workers=1).serve()
"""


def test_granian_loop_registry(tmp_path):
    """``granian.loops.register("ringline")`` with a builder calling
    ``ringline.new_event_loop()``, then ``Granian(..., loop="ringline")``:
    the ASGI app runs on ringline in granian's worker process (started with
    ``fork``, so the registration made at startup is inherited); stopped
    with SIGINT."""
    loops.require_ringline()
    require_module("granian")
    (tmp_path / "granian_app.py").write_text(textwrap.dedent(GRANIAN_APP))
    (tmp_path / "serve.py").write_text(textwrap.dedent(GRANIAN_SERVE))
    with socket.socket() as probe:
        probe.bind((LOCAL, 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), ringline_path()]))
    proc = subprocess.Popen([sys.executable, "serve.py", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        import time
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((LOCAL, port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "granian did not listen"
                time.sleep(0.1)
        big = os.urandom(1 << 20)
        status, info, body = _http_post(port, "/", big)
        assert (status, info) == (200, "ringline.aio.eventloop.EventLoop")
        assert body == big
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out


# ---------------------------------------------------------------------------
# no policy needed
# ---------------------------------------------------------------------------

NO_POLICY_SCRIPT = """
    import asyncio
    import sys
    import warnings

    import ringline

    async def main():
        async def handle(reader, writer):
            writer.write(await reader.readexactly(5))
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        got = await asyncio.wait_for(reader.readexactly(5), 10)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        assert isinstance(asyncio.get_running_loop(), ringline.EventLoop)
        return got

    results = [ringline.run(main())]
    with asyncio.Runner(loop_factory=ringline.new_event_loop) as runner:
        results.append(runner.run(main()))
    if sys.version_info >= (3, 12):
        results.append(asyncio.run(main(), loop_factory=ringline.new_event_loop))
    assert set(results) == {b"hello"}, results
    # Nothing above created asyncio's global policy object.
    assert asyncio.events._event_loop_policy is None
    print("ok", len(results))
"""


def test_loop_factories_need_no_policy_and_warn_nothing(tmp_path):
    """``ringline.run``, ``asyncio.Runner(loop_factory=ringline.new_event_loop)``
    and (3.12+) ``asyncio.run(..., loop_factory=...)`` under ``-W error`` and
    ``-X dev``: no DeprecationWarning (the policy API is deprecated from
    3.14), and asyncio's global policy is never even created."""
    loops.require_ringline()
    script = tmp_path / "no_policy.py"
    script.write_text(textwrap.dedent(NO_POLICY_SCRIPT))
    env = dict(os.environ, PYTHONPATH=ringline_path())
    proc = subprocess.run([sys.executable, "-W", "error", "-X", "dev", str(script)],
                          env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    expected = 3 if sys.version_info >= (3, 12) else 2
    assert (proc.returncode, proc.stdout.strip()) == (0, f"ok {expected}"), proc.stderr


# ---------------------------------------------------------------------------
# uvicorn with worker processes
# ---------------------------------------------------------------------------

UVICORN_APP = """
    import asyncio
    import json
    import os


    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        cls = type(asyncio.get_running_loop())
        body = json.dumps({"loop": f"{cls.__module__}.{cls.__qualname__}",
                           "pid": os.getpid()}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
"""


def test_uvicorn_cli_loop_option_in_worker_processes(tmp_path):
    """``uvicorn mod:app --loop ringline:new_event_loop --workers 2``: the
    import string reaches the spawned worker processes, whose apps run on
    ringline; SIGTERM stops the supervisor and its workers."""
    loops.require_ringline()
    uvicorn = require_module("uvicorn")
    if not hasattr(uvicorn.Config, "get_loop_factory"):
        pytest.skip(f"uvicorn {uvicorn.__version__} predates loop import strings (0.36)")
    import http.client
    import time
    (tmp_path / "uvicorn_app.py").write_text(textwrap.dedent(UVICORN_APP))
    with socket.socket() as probe:
        probe.bind((LOCAL, 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), ringline_path()]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "uvicorn_app:app", "--loop", "ringline:new_event_loop",
         "--workers", "2", "--host", LOCAL, "--port", str(port), "--lifespan", "off",
         "--no-access-log"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    answers = []
    try:
        deadline = time.monotonic() + 60
        while len(answers) < 20:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, answers
            conn = http.client.HTTPConnection(LOCAL, port, timeout=IO_TIMEOUT)
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                answers.append((resp.status, json.loads(resp.read())))
            except OSError:
                time.sleep(0.1)  # not listening yet
            finally:
                conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            err = proc.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            err = proc.communicate()[1]
    assert {status for status, _ in answers} == {200}
    assert {a["loop"] for _, a in answers} == {"ringline.aio.eventloop.EventLoop"}
    assert proc.pid not in {a["pid"] for _, a in answers}, "served by the supervisor?"
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Traceback" not in err, err
