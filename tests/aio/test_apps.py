"""Real applications on each event loop, against real peers on loopback.

Every test runs on asyncio's loop, uvloop and ringline (``tests.support.loops``)
unless it says otherwise, and fails on any unexpected call of the loop's
exception handler.  The peers are real programs or independent stacks: an
aiohttp server and client (and the standard library's blocking
``http.client`` / ``http.server`` in threads, which share nothing with the
loop under test), uvicorn serving a plain ASGI app, redis-py against a real
``redis-server`` started here, anyio's asyncio backend, and 1,000 concurrent
asyncio streams clients.

How uvicorn takes a custom loop (checked here against the installed uvicorn):

* uvicorn >= 0.36: ``uvicorn.Config(app, loop="ringline:new_event_loop")``, or
  on the command line ``uvicorn mod:app --loop ringline:new_event_loop``.  A
  ``loop`` value that is not one of the built-in names ("auto", "asyncio",
  "uvloop", "none") is an import string naming a zero-argument loop factory;
  ``Config.get_loop_factory()`` returns it as is and ``Server.run()`` hands
  it to ``asyncio.Runner(loop_factory=...)``.  (The built-in names map to
  factory *makers* called with ``use_subprocess=``; a custom string is the
  factory itself.)
* any version: ``ringline.run(uvicorn.Server(config).serve())`` --
  ``Server.serve()`` runs on whatever loop is running.
* ``loop="none"`` makes uvicorn create no factory, so asyncio's policy
  decides: after ``ringline.install()`` that is a ringline loop.

In CI (``CI=true``) a missing peer (``redis-server``) or library is a
failure, not a skip.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import http.server
import importlib
import json
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tests.support import loops, run_on

pytestmark = pytest.mark.timeout(90)

LOCAL = "127.0.0.1"
IO_TIMEOUT = 10.0


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------




def require_module(name):
    """Import ``name``; skip without it (fail under CI=true)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        msg = f"needs the Python package {name!r} ({exc})"
        if loops.IN_CI:
            pytest.fail(f"{msg}; CI=true, so this is a failure", pytrace=False)
        pytest.skip(msg)


require_program = loops.require_program


def expected_loop_class(name):
    if name == "ringline":
        return loops.require_ringline().EventLoop
    if name == "uvloop":
        return importlib.import_module("uvloop").Loop
    return asyncio.SelectorEventLoop


def assert_running_on(name):
    running = asyncio.get_running_loop()
    assert isinstance(running, expected_loop_class(name)), (name, type(running))


def loop_label():
    cls = type(asyncio.get_running_loop())
    return f"{cls.__module__}.{cls.__qualname__}"


def blob(n, seed):
    return random.Random(seed).randbytes(n)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def free_port():
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


def wait_port(port, timeout=IO_TIMEOUT, proc=None):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((LOCAL, port), timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"peer exited with status {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need and (hard == resource.RLIM_INFINITY or hard >= need):
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        return soft
    if soft < need:
        pytest.skip(f"needs {need} file descriptors (hard limit {hard})")
    return None


@pytest.fixture(autouse=True)
def _stdin_fd_is_open():
    """Guard against a closed fd 0 (see test_refused_ring_construction_leaves_fd_0_alone):
    with fd 0 free, the next socket or pipe gets it, and libuv (uvloop) aborts
    the whole process when it later closes an fd <= 2."""
    ensure_fd0_open()
    yield


def ensure_fd0_open():
    try:
        os.fstat(0)
    except OSError:
        fd = os.open(os.devnull, os.O_RDONLY)
        if fd != 0:
            os.dup2(fd, 0)
            os.close(fd)


# ---------------------------------------------------------------------------
# The transport behaviour the applications below lean on
# ---------------------------------------------------------------------------


class _Counter(asyncio.Protocol):
    def __init__(self):
        self.received = bytearray()
        self.event = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.received += data
        self.event.set()


def test_pause_and_resume_reading_in_the_same_tick(loop):
    """anyio (so httpx) pauses after every receive and resumes before the next
    one; a resume that comes before the pause has taken effect must still
    leave the transport reading."""

    class Replier(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(b"r" * 10)

    async def main():
        server = await loop.create_server(Replier, LOCAL, 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            t, p = await loop.create_connection(_Counter, LOCAL, port)
            for i in range(20):
                p.event.clear()
                t.pause_reading()
                t.resume_reading()
                assert t.is_reading()
                t.write(b"q")
                await asyncio.wait_for(p.event.wait(), 5)
                while len(p.received) < 10 * (i + 1):
                    p.event.clear()
                    await asyncio.wait_for(p.event.wait(), 5)
            t.close()
        await server.wait_closed()

    run_on(loop, main())


def test_streams_readexactly_above_the_pause_threshold(loop):
    """StreamReader pauses the transport above 2 x limit and resumes it in
    _wait_for_data() *before* it creates its waiter: data must not be fed
    from inside resume_reading() (redis-py's large GET, aiohttp bodies)."""
    size = 1 << 20
    data = blob(size, 1)
    ls = socket.create_server((LOCAL, 0))
    port = ls.getsockname()[1]

    def peer():
        conn, _ = ls.accept()
        with conn:
            for _ in range(3):
                if conn.recv(16) != b"go":
                    return
                conn.sendall(data)

    th = threading.Thread(target=peer, daemon=True)
    th.start()

    async def main():
        reader, writer = await asyncio.open_connection(LOCAL, port, limit=1 << 16)
        for _ in range(3):
            writer.write(b"go")
            got = await asyncio.wait_for(reader.readexactly(size), 5)
            assert got == data
        writer.close()
        await writer.wait_closed()

    try:
        run_on(loop, main())
    finally:
        ls.close()
        th.join(5)


# ---------------------------------------------------------------------------
# aiohttp
# ---------------------------------------------------------------------------


def _aiohttp_app():
    web = require_module("aiohttp.web")
    aiohttp = require_module("aiohttp")

    async def hello(request):
        return web.json_response({"loop": loop_label(), "peer": request.remote})

    async def echo(request):
        body = await request.read()
        return web.Response(body=body, headers={"X-Sha256": sha(body)})

    async def stream(request):
        n = int(request.query.get("n", "100"))
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(n):
            await resp.write(b"chunk %d\n" % i)
            if i % 10 == 0:
                await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    async def ws(request):
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str(msg.data.upper())
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sock.send_bytes(msg.data[::-1])
        return sock

    app = web.Application(client_max_size=16 << 20)
    app.router.add_get("/", hello)
    app.router.add_post("/echo", echo)
    app.router.add_get("/stream", stream)
    app.router.add_get("/ws", ws)
    return app


async def _start_aiohttp(app):
    web = require_module("aiohttp.web")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOCAL, 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


def _blocking_http_session(port, requests):
    """Keep-alive HTTP/1.1 requests with the standard library (own thread)."""
    conn = http.client.HTTPConnection(LOCAL, port, timeout=IO_TIMEOUT)
    out = []
    try:
        for method, path, body in requests:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            out.append((resp.status, dict(resp.getheaders()), resp.read()))
    finally:
        conn.close()
    return out


def test_aiohttp_server_and_client(loop, loop_name):
    aiohttp = require_module("aiohttp")

    async def main():
        runner, port = await _start_aiohttp(_aiohttp_app())
        base = f"http://{LOCAL}:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(base + "/") as r:
                    assert r.status == 200
                    info = await r.json()
                assert info["loop"].endswith(expected_loop_class(loop_name).__qualname__)
                assert info["peer"] == LOCAL

                # POST bodies, small to larger than every pause threshold; the
                # connection is reused between them (keep-alive).
                for n in (0, 1, 100_000, 3 << 20):
                    body = blob(n, n)
                    async with session.post(base + "/echo", data=body) as r:
                        assert r.status == 200
                        got = await r.read()
                    assert r.headers["X-Sha256"] == sha(body)
                    assert got == body

                # A chunked streaming response, read as it arrives.
                lines = []
                async with session.get(base + "/stream", params={"n": "300"}) as r:
                    assert r.headers["Transfer-Encoding"] == "chunked"
                    async for line in r.content:
                        lines.append(line)
                assert lines == [b"chunk %d\n" % i for i in range(300)]

                # Websocket echo, text and binary, a few large frames.
                async with session.ws_connect(base + "/ws") as ws:
                    for i in range(50):
                        await ws.send_str(f"hello {i}")
                        assert await ws.receive_str() == f"HELLO {i}"
                        data = blob(10 if i % 10 else 200_000, i)
                        await ws.send_bytes(data)
                        assert await ws.receive_bytes() == data[::-1]
                    await ws.close()

                # Many requests in flight on a pool of connections.
                async def one(i):
                    body = b"%d" % i * (i + 1)
                    async with session.post(base + "/echo", data=body) as r:
                        return await r.read() == body

                assert all(await asyncio.gather(*(one(i) for i in range(200))))

            # A client that shares nothing with the loop: http.client in a thread.
            big = blob(1 << 20, 7)
            res = await asyncio.to_thread(_blocking_http_session, port, [
                ("GET", "/", None), ("POST", "/echo", big), ("GET", "/stream?n=5", None)])
            assert [s for s, _, _ in res] == [200, 200, 200]
            assert json.loads(res[0][2])["loop"].endswith(
                expected_loop_class(loop_name).__qualname__)
            assert res[1][2] == big
            assert res[2][2] == b"".join(b"chunk %d\n" % i for i in range(5))
        finally:
            await runner.cleanup()

    run_on(loop, main())


class _ThreadedHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, body, ctype="application/octet-stream"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        n = int(self.path.rsplit("/", 1)[-1] or 0)
        self._reply(blob(n, n))

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._reply(sha(body).encode(), "text/plain")


class _ThreadedHTTPServer(http.server.ThreadingHTTPServer):
    request_queue_size = 256    # listen backlog (default 5)
    daemon_threads = True


def test_aiohttp_client_against_threaded_http_server(loop):
    """The client side alone, against the standard library's server."""
    aiohttp = require_module("aiohttp")
    srv = _ThreadedHTTPServer((LOCAL, 0), _ThreadedHandler)
    port = srv.server_address[1]
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()

    async def main():
        base = f"http://{LOCAL}:{port}"
        async with aiohttp.ClientSession() as session:
            for n in (0, 5, 70_000, 2 << 20, 10):   # reused keep-alive connection
                async with session.get(f"{base}/{n}") as r:
                    assert await r.read() == blob(n, n)
            body = blob(3 << 20, 3)
            async with session.post(base + "/", data=body) as r:
                assert (await r.text()) == sha(body)

            async def one(i):
                async with session.get(f"{base}/{1000 + i}") as r:
                    return await r.read() == blob(1000 + i, 1000 + i)

            assert all(await asyncio.gather(*(one(i) for i in range(50))))

    try:
        run_on(loop, main())
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(5)


# ---------------------------------------------------------------------------
# uvicorn
# ---------------------------------------------------------------------------


async def asgi_app(scope, receive, send):
    """A plain ASGI app: lifespan, HTTP (echo, streaming, loop report), websocket echo."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()   # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") is not None:
                await send({"type": "websocket.send", "text": msg["text"][::-1]})
            else:
                await send({"type": "websocket.send", "bytes": msg["bytes"][::-1]})
    body = bytearray()
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    path = scope["path"]
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for i in range(100):
            await send({"type": "http.response.body", "body": b"part %d\n" % i,
                        "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/echo":
        out = bytes(body)
    else:
        out = json.dumps({"loop": loop_label(), "path": path}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


def _uvicorn_config(uvicorn, **kw):
    kw.setdefault("log_level", "warning")
    kw.setdefault("lifespan", "on")
    return uvicorn.Config(asgi_app, **kw)


@pytest.mark.parametrize("http_impl", ["h11", "httptools"])
def test_uvicorn_serve_on_the_running_loop(loop, loop_name, http_impl):
    """``uvicorn.Server(config).serve()`` inside the loop under test, hit by
    httpx (anyio streams on the same loop), aiohttp's websocket client and
    http.client from a thread."""
    uvicorn = require_module("uvicorn")
    httpx = require_module("httpx")
    aiohttp = require_module("aiohttp")
    if http_impl == "httptools":
        require_module("httptools")

    async def main():
        sock = socket.create_server((LOCAL, 0))
        port = sock.getsockname()[1]
        ws = "websockets-sansio"     # uvicorn's non-deprecated websockets binding
        if ws not in getattr(importlib.import_module("uvicorn.config"), "WS_PROTOCOLS", {}):
            ws = "auto"
        config = _uvicorn_config(uvicorn, http=http_impl, ws=ws)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                assert not task.done(), task
                await asyncio.sleep(0.01)
            base = f"http://{LOCAL}:{port}"
            async with httpx.AsyncClient(timeout=IO_TIMEOUT) as client:
                r = await client.get(base + "/info")
                assert r.json()["loop"].endswith(expected_loop_class(loop_name).__qualname__)
                for n in (0, 10, 200_000, 2 << 20):
                    body = blob(n, n)
                    r = await client.post(base + "/echo", content=body)
                    assert r.status_code == 200 and r.content == body
                r = await client.get(base + "/stream")
                assert r.text == "".join(f"part {i}\n" for i in range(100))
                rs = await asyncio.gather(*(client.get(f"{base}/c{i}") for i in range(50)))
                assert [x.json()["path"] for x in rs] == [f"/c{i}" for i in range(50)]

            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(base + "/ws") as ws:
                    for i in range(20):
                        await ws.send_str(f"abc{i}")
                        assert await ws.receive_str() == f"abc{i}"[::-1]
                        await ws.send_bytes(b"xyz" * (i + 1))
                        assert await ws.receive_bytes() == b"zyx" * (i + 1)
                    await ws.close()

            res = await asyncio.to_thread(_blocking_http_session, port, [
                ("POST", "/echo", b"q" * 100_000), ("GET", "/stream", None)])
            assert res[0][2] == b"q" * 100_000
            assert res[1][2].startswith(b"part 0\n") and res[1][2].endswith(b"part 99\n")
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, IO_TIMEOUT)
            sock.close()

    run_on(loop, main())


def test_uvicorn_config_loop_import_string():
    """``uvicorn.Config(loop="ringline:new_event_loop")`` + ``Server.run()``:
    uvicorn builds (and closes) the ringline loop itself."""
    ringline = loops.require_ringline()
    uvicorn = require_module("uvicorn")
    config = _uvicorn_config(uvicorn, loop="ringline:new_event_loop", http="h11")
    if not hasattr(config, "get_loop_factory"):
        pytest.skip(f"uvicorn {uvicorn.__version__} predates loop import strings (0.36)")
    assert config.get_loop_factory() is ringline.new_event_loop
    sock = socket.create_server((LOCAL, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(config)
    results = {}

    def client():
        try:
            deadline = time.monotonic() + IO_TIMEOUT
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.01)
            results["res"] = _blocking_http_session(port, [
                ("GET", "/info", None), ("POST", "/echo", b"e" * 300_000)])
        except BaseException as exc:  # reported below
            results["error"] = exc
        finally:
            server.should_exit = True

    th = threading.Thread(target=client)
    th.start()
    try:
        server.run(sockets=[sock])
    finally:
        server.should_exit = True
        th.join(IO_TIMEOUT)
        sock.close()
    assert "error" not in results, results
    info, echo = results["res"]
    assert json.loads(info[2])["loop"] == "ringline.aio.eventloop.EventLoop"
    assert echo[2] == b"e" * 300_000


def test_uvicorn_cli_loop_option(tmp_path):
    """``python -m uvicorn mod:app --loop ringline:new_event_loop``, as a user
    would start it; stopped with SIGTERM."""
    ringline = loops.require_ringline()
    uvicorn = require_module("uvicorn")
    if not hasattr(uvicorn.Config, "get_loop_factory"):
        pytest.skip(f"uvicorn {uvicorn.__version__} predates loop import strings (0.36)")
    (tmp_path / "asgi_mod.py").write_text(textwrap.dedent("""
        import asyncio, json

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            loop = type(asyncio.get_running_loop())
            body = json.dumps({"loop": f"{loop.__module__}.{loop.__qualname__}"}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
    """))
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(ringline.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "asgi_mod:app", "--app-dir", str(tmp_path),
         "--loop", "ringline:new_event_loop", "--host", LOCAL, "--port", "0",
         "--lifespan", "off", "--no-access-log", "--log-level", "info"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    lines = []
    try:
        port = None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"Uvicorn running on http://[\d.]+:(\d+)", line)
            if m:
                port = int(m.group(1))
        assert port, "".join(lines)
        (status, _, body), = _blocking_http_session(port, [("GET", "/", None)])
        assert status == 200
        assert json.loads(body)["loop"] == "ringline.aio.eventloop.EventLoop"
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=IO_TIMEOUT)[1]
        # uvicorn re-raises the captured SIGTERM after its graceful shutdown.
        assert proc.returncode in (0, -signal.SIGTERM), "".join(lines) + rest
        assert "Finished server process" in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# ---------------------------------------------------------------------------
# redis-py against a real redis-server
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    exe = require_program("redis-server", "redis-server")
    require_module("redis.asyncio")
    d = tmp_path_factory.mktemp("redis")
    for _ in range(3):
        port = free_port()
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", LOCAL, "--save", "", "--appendonly", "no",
             "--dir", str(d), "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, proc=proc)
            break
        except (OSError, RuntimeError):
            proc.kill()
            proc.wait()
    else:  # pragma: no cover
        pytest.fail("redis-server did not start")
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(IO_TIMEOUT)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


def test_redis_commands(loop, loop_name, redis_port):
    aioredis = require_module("redis.asyncio")
    k = f"rl:{loop_name}:"

    async def main():
        # Commands beyond 50 in flight wait for a pooled connection.
        pool = aioredis.BlockingConnectionPool(
            host=LOCAL, port=redis_port, socket_timeout=IO_TIMEOUT, max_connections=50,
            timeout=IO_TIMEOUT)
        r = aioredis.Redis(connection_pool=pool)
        try:
            assert await r.ping()
            await r.delete(*(k + x for x in ("s", "n", "h", "big", "l", "p", "t")))
            await r.set(k + "s", b"\x00value\xff")
            assert await r.get(k + "s") == b"\x00value\xff"
            assert await r.incrby(k + "n", 41) == 41
            assert await r.incr(k + "n") == 42
            await r.hset(k + "h", mapping={"a": "1", "b": "2"})
            assert await r.hgetall(k + "h") == {b"a": b"1", b"b": b"2"}
            # Values far above every read/pause threshold, both ways.
            for n in (70_000, 1 << 20, 5 << 20):
                big = blob(n, n)
                await r.set(k + "big", big)
                assert await r.get(k + "big") == big
                assert await r.strlen(k + "big") == n
            # A 1,000-command pipeline, and a MULTI/EXEC transaction.
            async with r.pipeline(transaction=False) as pipe:
                for _ in range(1000):
                    pipe.incr(k + "p")
                assert (await pipe.execute())[-1] == 1000
            async with r.pipeline(transaction=True) as pipe:
                pipe.set(k + "t", "x").append(k + "t", "yz").get(k + "t")
                assert await pipe.execute() == [True, 3, b"xyz"]
            # 300 commands in flight at once over the connection pool.
            vals = await asyncio.gather(*(r.echo(f"m{i}") for i in range(300)))
            assert vals == [f"m{i}".encode() for i in range(300)]
            # A blocking command released by another connection.
            popper = asyncio.create_task(r.blpop([k + "l"], timeout=5))
            await asyncio.sleep(0.05)
            assert not popper.done()
            await r.rpush(k + "l", "item")
            assert tuple(await asyncio.wait_for(popper, IO_TIMEOUT)) == ((k + "l").encode(), b"item")
        finally:
            await r.aclose()
            await pool.disconnect()

    run_on(loop, main())


def test_redis_pubsub(loop, loop_name, redis_port):
    aioredis = require_module("redis.asyncio")
    channel = f"rl:{loop_name}:chan"

    async def main():
        r = aioredis.Redis(host=LOCAL, port=redis_port, socket_timeout=IO_TIMEOUT)
        ps = r.pubsub()
        try:
            await ps.subscribe(channel)
            msg = await ps.get_message(timeout=IO_TIMEOUT)
            assert msg["type"] == "subscribe"
            payloads = [blob(i * 997 % 70_000, i) for i in range(200)]

            async def publish():
                for p in payloads:
                    assert await r.publish(channel, p) == 1

            pub = asyncio.create_task(publish())
            got = []
            while len(got) < len(payloads):
                msg = await ps.get_message(ignore_subscribe_messages=True, timeout=IO_TIMEOUT)
                assert msg is not None, f"only {len(got)} messages arrived"
                got.append(msg["data"])
            await pub
            assert got == payloads
            await ps.unsubscribe(channel)
        finally:
            await ps.aclose()
            await r.aclose()

    run_on(loop, main())


# ---------------------------------------------------------------------------
# websockets (its legacy protocol, as pyperformance's asyncio_websockets)
# ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_websockets_legacy_concurrent_sends(loop, loop_name):
    """pyperformance's ``asyncio_websockets``: 100 concurrent ``send()`` of
    1 MiB on one connection, compressed (permessage-deflate, the default).
    The legacy protocol allows one ``drain()`` waiter at a time (it asserts
    so): the kernel takes every compressed frame at once, so asyncio never
    pauses it, and ringline must not either (test_parity.py,
    ``test_burst_the_socket_takes_does_not_pause``)."""
    require_module("websockets")
    import websockets.client
    import websockets.server

    data = b"x" * (1 << 20)
    count = 100

    async def main():
        assert_running_on(loop_name)
        got = []
        done = asyncio.Event()

        async def handler(ws):
            for _ in range(count):
                got.append(len(await ws.recv()))
            done.set()

        async with websockets.server.serve(handler, LOCAL, 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            async with websockets.client.connect(f"ws://{LOCAL}:{port}") as ws:
                await asyncio.gather(*[ws.send(data) for _ in range(count)])
                await asyncio.wait_for(done.wait(), IO_TIMEOUT)
        return got

    assert run_on(loop, main()) == [len(data)] * count


# ---------------------------------------------------------------------------
# anyio on its asyncio backend
# ---------------------------------------------------------------------------


def test_anyio_tcp_echo(loop_factory, loop_name):
    """``anyio.run(main, backend="asyncio", backend_options={"loop_factory": f})``
    (anyio >= 4): a TCP echo with create_tcp_listener / connect_tcp."""
    anyio = require_module("anyio")
    from anyio.abc import SocketAttribute
    from anyio.streams.buffered import BufferedByteReceiveStream

    async def handle(stream):
        async with stream:
            try:
                async for chunk in stream:
                    await stream.send(chunk)
                await stream.send_eof()
            except anyio.BrokenResourceError:  # pragma: no cover
                pass

    async def main():
        assert_running_on(loop_name)
        listener = await anyio.create_tcp_listener(local_host=LOCAL, local_port=0)
        port = listener.extra(SocketAttribute.local_port)

        async def ping_pong(i, out):
            async with await anyio.connect_tcp(LOCAL, port) as c:
                buffered = BufferedByteReceiveStream(c)
                for j in range(20):
                    line = b"client %d message %d\n" % (i, j)
                    await c.send(line)
                    assert await buffered.receive_until(b"\n", 1000) == line[:-1]
            out.append(i)

        async def bulk(size, out):
            data = blob(size, size)
            async with await anyio.connect_tcp(LOCAL, port) as c:
                async def sender():
                    for off in range(0, size, 50_000):
                        await c.send(data[off:off + 50_000])
                    await c.send_eof()

                got = bytearray()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(sender)
                    async for chunk in c:
                        got += chunk
            assert bytes(got) == data
            out.append(size)

        done = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            with anyio.fail_after(20):
                async with anyio.create_task_group() as clients:
                    for i in range(20):
                        clients.start_soon(ping_pong, i, done)
                    for size in (1, 100_000, 4 << 20):
                        clients.start_soon(bulk, size, done)
                # threads and sleeps through anyio, on the same loop
                assert await anyio.to_thread.run_sync(lambda: 6 * 7) == 42
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        await listener.aclose()
        return len(done)

    assert anyio.run(main, backend="asyncio",
                     backend_options={"loop_factory": loop_factory}) == 23


# ---------------------------------------------------------------------------
# asyncio streams: 1,000 concurrent clients, byte-exact
# ---------------------------------------------------------------------------


def test_streams_echo_1000_concurrent_clients(loop):
    clients = 1000
    old = raise_nofile(4 * clients + 256)

    async def handle(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        finally:
            writer.close()
            await writer.wait_closed()

    def payload(i):
        # 1 B .. 48 KiB, a few of 512 KiB (above every pause threshold).
        n = 512 * 1024 if i % 250 == 0 else 1 + (i * 7919) % (48 * 1024)
        return hashlib.shake_128(b"%d" % i).digest(n)

    async def client(port, i):
        data = payload(i)
        reader, writer = await asyncio.open_connection(LOCAL, port)

        async def send():
            for off in range(0, len(data), 16384):
                writer.write(data[off:off + 16384])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        got = await reader.read()     # until EOF
        await sender
        writer.close()
        await writer.wait_closed()
        return got == data, len(data)

    async def main():
        server = await asyncio.start_server(handle, LOCAL, 0, backlog=clients * 2)
        port = server.sockets[0].getsockname()[1]
        async with server:
            t0 = time.monotonic()
            results = await asyncio.wait_for(
                asyncio.gather(*(client(port, i) for i in range(clients))), 15)
            elapsed = time.monotonic() - t0
        await server.wait_closed()
        bad = [i for i, (ok, _) in enumerate(results) if not ok]
        assert not bad, f"{len(bad)} clients got corrupted echoes: {bad[:10]}"
        assert elapsed < 15
        return sum(n for _, n in results)

    try:
        total = run_on(loop, main(), timeout=30)
        assert total > 20 << 20
    finally:
        if old is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (old, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
