"""aiohttp "hello" over TLS: a one-route ``aiohttp.web`` app behind an SSL context.

    python bench/servers/aiohttp_tls.py --port 0 --loop L --cert CERT --key KEY

``GET /`` answers ``Hello, World!`` (text/plain); keep-alive as aiohttp does
by default.  The TLS layer is whatever the loop gives ``create_server(ssl=)``
(asyncio's sslproto on asyncio and ringline unless ringline has its own,
uvloop's compiled one).  Prints ``READY <port>``; SIGTERM stops it.  Exit 3
if aiohttp or the loop is not available.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl

from _common import _install_stop_handlers, loop_factory, unavailable


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "ringline"), default="asyncio")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    try:
        from aiohttp import web
    except Exception as exc:
        unavailable(f"cannot import aiohttp: {exc!r}")
    factory = loop_factory(args.loop)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, World!")

    async def serve() -> None:
        stop = asyncio.Event()
        _install_stop_handlers(asyncio.get_running_loop(), stop)
        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port, ssl_context=ctx, backlog=1024)
        await site.start()
        print(f"READY {runner.addresses[0][1]}", flush=True)
        await stop.wait()
        await runner.cleanup()

    try:
        loop = factory()
    except Exception as exc:
        unavailable(f"cannot create the event loop: {exc!r}")
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
