"""Unchanged applications on each loop, against real peers over loopback.

Every test runs on asyncio's loop, uvloop and ringline (the ``loop`` fixture):

* websockets (its asyncio implementation): server and client echo text,
  1 MiB binary frames, pings and a close code;
* aiohttp client and server over TLS: a certificate made here by ``openssl
  req``, verified by the client; GET, a 1 MiB POST echo, and a ``wss://``
  websocket;
* asyncpg against a real PostgreSQL: a throwaway cluster that a module
  fixture initialises (``initdb``) and starts (``pg_ctl``) in a temp dir, on a
  loopback port and a unix socket, stopped at teardown.  ``initdb`` refuses
  root, so under root the cluster runs as ``nobody``.

In CI (``CI=true``) a missing peer program or library is a failure.
(redis-py against ``redis-server`` is in ``test_apps.py``.)
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import importlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile

import pytest

from tests.support import loops, run_on
from tests.support.sanitizer import peer_env

pytestmark = pytest.mark.timeout(120)

LOCAL = "127.0.0.1"
IO_TIMEOUT = 10.0
MIB = 1 << 20


def require_module(name):
    """Import ``name``; skip without it (fail under CI=true)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        msg = f"needs the Python package {name!r} ({exc})"
        if loops.IN_CI:
            pytest.fail(f"{msg}; CI=true, so this is a failure", pytrace=False)
        pytest.skip(msg)


def missing_peer(msg):
    if loops.IN_CI:
        pytest.fail(f"{msg}; CI=true, so this is a failure", pytrace=False)
    pytest.skip(msg)


def free_port():
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


def running_on(loop_name):
    """Name the class of the running loop the way ``loop_name`` does."""
    loop = asyncio.get_running_loop()
    if loop_name == "ringline":
        return isinstance(loop, loops.require_ringline().EventLoop)
    if loop_name == "uvloop":
        return type(loop).__module__.startswith("uvloop")
    return isinstance(loop, asyncio.SelectorEventLoop)


# ---------------------------------------------------------------------------
# websockets
# ---------------------------------------------------------------------------


def test_websockets_echo(loop, loop_name):
    """websockets' server and client (``websockets.asyncio``) on the loop
    under test: text and 1 MiB binary echoes, a ping, a close code."""
    require_module("websockets")
    try:
        from websockets.asyncio.client import connect
        from websockets.asyncio.server import serve
    except ImportError:  # websockets < 13
        missing_peer("needs websockets >= 13 (websockets.asyncio)")
    from websockets.exceptions import ConnectionClosedOK

    async def echo(ws):
        try:
            async for message in ws:
                await ws.send(message)
        except ConnectionClosedOK:
            pass

    async def main():
        assert running_on(loop_name)
        async with serve(echo, LOCAL, 0, max_size=4 * MIB) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://{LOCAL}:{port}/", max_size=4 * MIB) as ws:
                for i in range(50):
                    await ws.send(f"message {i}")
                    assert await asyncio.wait_for(ws.recv(), IO_TIMEOUT) == f"message {i}"
                data = os.urandom(MIB)
                await ws.send(data)
                assert await asyncio.wait_for(ws.recv(), IO_TIMEOUT) == data
                pong = await ws.ping(b"p")
                await asyncio.wait_for(pong, IO_TIMEOUT)
                await ws.close(code=4001, reason="done")
            assert ws.close_code == 4001 and ws.close_reason == "done"

    run_on(loop, main(), timeout=60)


# ---------------------------------------------------------------------------
# aiohttp over TLS
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cert():
    """(cert, key) PEM paths for 127.0.0.1/localhost, made by ``openssl req``."""
    openssl = loops.require_program("openssl", "openssl")
    d = tempfile.mkdtemp(prefix="ringline-tls-")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    try:
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", key, "-out", cert, "-subj", "/CN=localhost",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
            check=True, capture_output=True, timeout=60)
        yield cert, key
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_aiohttp_over_tls(loop, loop_name, tls_cert):
    """aiohttp's server with an SSL context and aiohttp's client verifying the
    certificate: GET, a 1 MiB POST echoed back, and a ``wss://`` echo."""
    aiohttp = require_module("aiohttp")
    from aiohttp import web
    cert, key = tls_cert
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=cert)

    async def hello(request):
        return web.json_response({"tls": request.secure,
                                  "cipher": request.transport.get_extra_info("cipher")[0]})

    async def echo(request):
        body = await request.read()
        return web.Response(body=body, headers={"x-sha": hashlib.sha256(body).hexdigest()})

    async def ws_echo(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data.upper())
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def main():
        assert running_on(loop_name)
        app = web.Application(client_max_size=4 * MIB)
        app.router.add_get("/", hello)
        app.router.add_post("/echo", echo)
        app.router.add_get("/ws", ws_echo)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        site = web.TCPSite(runner, LOCAL, port, ssl_context=server_ctx)
        await site.start()
        try:
            timeout = aiohttp.ClientTimeout(total=IO_TIMEOUT * 3)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                base = f"https://localhost:{port}"
                async with session.get(base + "/", ssl=client_ctx) as resp:
                    assert resp.status == 200
                    info = await resp.json()
                assert info["tls"] is True and info["cipher"]
                body = os.urandom(MIB)
                for _ in range(3):  # the pooled TLS connection is reused
                    async with session.post(base + "/echo", data=body, ssl=client_ctx) as resp:
                        assert resp.status == 200
                        assert await resp.read() == body
                        assert resp.headers["x-sha"] == hashlib.sha256(body).hexdigest()
                async with session.ws_connect(f"wss://localhost:{port}/ws",
                                              ssl=client_ctx) as ws:
                    await ws.send_str("shout")
                    assert (await ws.receive(timeout=IO_TIMEOUT)).data == "SHOUT"
                    blob = os.urandom(256 * 1024)
                    await ws.send_bytes(blob)
                    assert (await ws.receive(timeout=IO_TIMEOUT)).data == blob
                # An unverifiable peer is refused: the default context does not
                # trust the self-signed certificate.
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    async with session.get(base + "/", ssl=ssl.create_default_context()):
                        pass
        finally:
            await runner.cleanup()

    run_on(loop, main(), timeout=60)


# ---------------------------------------------------------------------------
# asyncpg against a real PostgreSQL
# ---------------------------------------------------------------------------


def _pg_bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    return shutil.which(name)


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster: ``{"host", "port", "socket_dir"}``.

    ``initdb`` into a temp dir (trust auth, no fsync), ``pg_ctl start`` on a
    free loopback port and a unix socket in that dir; stopped (immediate
    mode) and removed at teardown.  Every step is bounded in time."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        missing_peer("needs PostgreSQL's initdb and pg_ctl (Debian package postgresql)")
    base = tempfile.mkdtemp(prefix="ringline-pg-")
    data = os.path.join(base, "data")
    prefix = []
    if os.geteuid() == 0:
        # initdb and postgres refuse to run as root.
        runuser = shutil.which("runuser")
        if runuser is None:
            missing_peer("running PostgreSQL as root needs runuser (util-linux)")
        shutil.chown(base, "nobody")
        prefix = [runuser, "-u", "nobody", "--"]
    log = os.path.join(base, "server.log")
    started = False
    try:
        subprocess.run(
            [*prefix, initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync",
             "-E", "UTF8", "--locale=C"],
            check=True, capture_output=True, timeout=120, cwd=base, env=peer_env())
        for attempt in range(3):  # the free port may be taken before postgres binds it
            port = free_port()
            opts = (f"-p {port} -c listen_addresses={LOCAL} -k {base} -F "
                    "-c max_connections=50 -c shared_buffers=16MB")
            try:
                subprocess.run(
                    [*prefix, pg_ctl, "-D", data, "-o", opts, "-l", log, "-w", "-t", "60",
                     "start"], check=True, capture_output=True, timeout=90, cwd=base,
                    env=peer_env())
                break
            except subprocess.CalledProcessError:
                if attempt == 2:
                    raise
        started = True
        yield {"host": LOCAL, "port": port, "socket_dir": base}
    except subprocess.CalledProcessError as exc:
        tail = ""
        if os.path.exists(log):
            with open(log) as f:
                tail = f.read()[-2000:]
        pytest.fail(f"PostgreSQL did not start: {exc.stderr!r} {tail}", pytrace=False)
    finally:
        if started:
            subprocess.run([*prefix, pg_ctl, "-D", data, "-m", "immediate", "-w", "-t", "30",
                            "stop"], capture_output=True, timeout=60, cwd=base, env=peer_env())
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_asyncpg_queries(loop, loop_name, postgres, via):
    """asyncpg, unchanged, on the loop under test against the real server:
    DDL, ``executemany``, prepared statements, a rolled-back transaction,
    a 4 MiB ``bytea`` round trip, ``COPY``, LISTEN/NOTIFY and a pool of 8
    connections running queries concurrently."""
    asyncpg = require_module("asyncpg")
    host = postgres["host"] if via == "tcp" else postgres["socket_dir"]
    params = {"host": host, "port": postgres["port"], "user": "postgres",
              "database": "postgres", "timeout": IO_TIMEOUT}
    table = f"t_{loop_name}_{via}"

    async def main():
        assert running_on(loop_name)
        conn = await asyncpg.connect(**params)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
            await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name text, data bytea)")
            await conn.executemany(f"INSERT INTO {table} (id, name) VALUES ($1, $2)",
                                   [(i, f"row {i}") for i in range(1000)])
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 1000
            stmt = await conn.prepare(f"SELECT name FROM {table} WHERE id = $1")
            assert [await stmt.fetchval(i) for i in (0, 500, 999)] == \
                ["row 0", "row 500", "row 999"]
            with pytest.raises(ZeroDivisionError):
                async with conn.transaction():
                    await conn.execute(f"DELETE FROM {table}")
                    raise ZeroDivisionError
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 1000
            big = os.urandom(4 * MIB)
            await conn.execute(f"UPDATE {table} SET data = $1 WHERE id = 7", big)
            assert await conn.fetchval(f"SELECT data FROM {table} WHERE id = 7") == big
            rows = [(i, f"copied {i}", None) for i in range(1000, 6000)]
            await conn.copy_records_to_table(table, records=rows)
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 6000

            got = asyncio.get_running_loop().create_future()
            await conn.add_listener("chan", lambda *args: got.done() or got.set_result(args[3]))
            notifier = await asyncpg.connect(**params)
            try:
                await notifier.execute("NOTIFY chan, 'hello'")
            finally:
                await notifier.close()
            assert await asyncio.wait_for(got, IO_TIMEOUT) == "hello"

            async with asyncpg.create_pool(**params, min_size=2, max_size=8) as pool:
                async def sum_range(lo):
                    return await pool.fetchval(
                        f"SELECT sum(id) FROM {table} WHERE id >= $1 AND id < $2", lo, lo + 100)
                sums = await asyncio.gather(*(sum_range(lo) for lo in range(0, 6000, 100)))
                assert sums == [sum(range(lo, lo + 100)) for lo in range(0, 6000, 100)]
            await conn.execute(f"DROP TABLE {table}")
        finally:
            await conn.close()

    run_on(loop, main(), timeout=90)
