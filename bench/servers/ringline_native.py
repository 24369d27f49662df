"""Echo server on ringline's native API: a coroutine per connection.

    python bench/servers/ringline_native.py --port 0 [--backend portable]

Each connection's coroutine waits for bytes with ``recv`` and queues them
back with ``send_nowait`` (bytes objects are sent from themselves, no copy).
"""

from __future__ import annotations

from _common import loop_factory, parse_args, run_server


async def echo(conn) -> None:
    recv = conn.recv
    send = conn.send_nowait
    while True:
        data = await recv(65536)
        if not data:
            return
        send(data)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], with_loop=False, with_backend=True)
    factory = loop_factory("ringline", args.backend)

    async def start():
        import asyncio
        import os

        import ringline

        if os.environ.get("RINGLINE_BENCH_HISTOGRAMS") == "1":
            # What `python -m ringline serve --metrics` turns on (overhead runs).
            asyncio.get_running_loop().enable_histograms()
        return await ringline.serve(echo, args.host, args.port)

    return run_server(factory, start)


if __name__ == "__main__":
    raise SystemExit(main())
