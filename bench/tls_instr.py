"""TLS instructions per request / per MB under callgrind: ringline vs asyncio vs uvloop.

    python bench/tls_instr.py                      # rr and bulk, every loop
    python bench/tls_instr.py --work rr --loops ringline,uvloop
    python bench/tls_instr.py --child LOOP WORK N  # (internal) one measured run

Wall-clock figures on a shared machine swing by tens of percent; instruction
counts do not.  Each figure is a difference of two runs of the same program
under ``valgrind --tool=callgrind`` that differ only in the amount of work
(N short, N long), so start-up, imports and the TLS handshakes cancel out:

* ``rr``: 50 TLS connections (client and server in one loop, asyncio
  streams), each doing N 64-byte request/response round trips in turn with
  the others; instructions per request (both ends counted).
* ``bulk``: one TLS connection, the client writes N MB in 10 MB writes
  (``write`` + ``drain``), the server ``read(256 KiB)``s them; instructions
  per MB (both ends: encryption and decryption included).
* ``aiohttp`` (not in the default set; needs aiohttp): an ``aiohttp.web``
  "hello" app over TLS and 50 streams clients each sending N keep-alive
  ``GET /`` in turn; instructions per request (both ends).

Loop ``ringline-sslproto`` is ringline with asyncio's pure-Python sslproto
(``RINGLINE_TLS=asyncio``), the lead's comparison point.  Needs the
``openssl`` command (a self-signed certificate per run) and valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
LOOPS = ("asyncio", "uvloop", "ringline", "ringline-sslproto")
CONNS = 50
MB = 1_000_000
WORKS = {"rr": (40, 120, "request"), "bulk": (40, 120, "MB"), "aiohttp": (20, 60, "request")}


def _contexts(cert: str, key: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert)
    return server, client


async def _rr(n: int, cert: str, key: str) -> int:
    server_ctx, client_ctx = _contexts(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(64):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    pairs = [await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                           server_hostname="localhost") for _ in range(CONNS)]

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        msg = b"x" * 64
        for _ in range(n):
            writer.write(msg)
            got = 0
            while got < 64:
                got += len(await reader.read(64 - got))

    await asyncio.gather(*(client(r, w) for r, w in pairs))
    for _, w in pairs:
        w.close()
    server.close()
    return n * CONNS


async def _bulk(n: int, cert: str, key: str) -> int:
    server_ctx, client_ctx = _contexts(cert, key)
    total = n * MB
    done = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = 0
        while got < total:
            data = await reader.read(256 * 1024)
            if not data:
                break
            got += len(data)
        writer.write(b"!")
        await writer.drain()
        done.set_result(got)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                   server_hostname="localhost")
    payload = b"\x5a" * (10 * MB)
    left = total
    while left > 0:
        writer.write(payload[:left] if left < len(payload) else payload)
        left -= len(payload)
        await writer.drain()
    assert await reader.read(1) == b"!"
    assert await done == total
    writer.close()
    server.close()
    return n


async def _aiohttp(n: int, cert: str, key: str) -> int:
    from aiohttp import web

    server_ctx, client_ctx = _contexts(cert, key)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, World!")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    pairs = [await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                           server_hostname="localhost") for _ in range(CONNS)]

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(n):
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            i = head.lower().index(b"content-length:")
            await reader.readexactly(int(head[i + 15:head.index(b"\r\n", i)]))

    await asyncio.gather(*(client(r, w) for r, w in pairs))
    for _, w in pairs:
        w.close()
    await runner.cleanup()
    return n * CONNS


def child(loop_name: str, work: str, n: int, cert: str, key: str) -> None:
    if loop_name == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    elif loop_name.startswith("ringline"):
        import ringline
        loop = ringline.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    fn = {"rr": _rr, "bulk": _bulk, "aiohttp": _aiohttp}[work]
    try:
        loop.run_until_complete(fn(n, cert, key))
    finally:
        loop.close()


def _cert(tmp: str) -> tuple[str, str]:
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def _count(loop_name: str, work: str, n: int, cert: str, key: str, tmp: str) -> int:
    out = os.path.join(tmp, f"cg.{loop_name}.{work}.{n}")
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(SRC)) if p)
    if loop_name == "ringline-sslproto":
        env["RINGLINE_TLS"] = "asyncio"
    else:
        env.pop("RINGLINE_TLS", None)
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    sys.executable, __file__, "--child", loop_name, work, str(n), cert, key],
                   env=env, check=True, capture_output=True)
    total = 0
    for f in glob.glob(out + "*"):
        with open(f) as fh:
            for line in fh:
                if line.startswith("summary:") or line.startswith("totals:"):
                    total = max(total, int(line.split()[1]))
        os.unlink(f)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", default=",".join(LOOPS))
    ap.add_argument("--work", default="rr,bulk")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        loop_name, work, n, cert, key = args.child
        child(loop_name, work, int(n), cert, key)
        return 0
    if shutil.which("valgrind") is None or shutil.which("openssl") is None:
        print("needs valgrind and openssl")
        return 1
    loops = args.loops.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = _cert(tmp)
        for work in args.work.split(","):
            short, long, unit = WORKS[work]
            per: dict[str, float] = {}
            for name in loops:
                i1 = _count(name, work, short, cert, key, tmp)
                i2 = _count(name, work, long, cert, key, tmp)
                units = (long - short) * (1 if work == "bulk" else CONNS)
                per[name] = (i2 - i1) / units
                print(f"{work:5} {name:18} {per[name]:14,.0f} instr/{unit}", flush=True)
            if "ringline" in per:
                for other in ("uvloop", "asyncio", "ringline-sslproto"):
                    if other in per:
                        print(f"{work:5} ringline vs {other:18} "
                              f"{per[other] / per['ringline']:.2f}x fewer instructions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
