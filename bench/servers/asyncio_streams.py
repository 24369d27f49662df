"""Echo server on asyncio streams: read / write / drain in a coroutine.

    python bench/servers/asyncio_streams.py --port 0 --loop asyncio|uvloop|ringline

The idiomatic high-level API: adds the StreamReader buffer, a coroutine
resume per read and a drain() per write on top of the protocol path.
"""

from __future__ import annotations

import asyncio

from _common import loop_factory, parse_args, run_server


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass  # the load generator just closes its sockets at the end
    finally:
        writer.close()


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    factory = loop_factory(args.loop)

    async def start() -> asyncio.AbstractServer:
        return await asyncio.start_server(echo, args.host, args.port)

    return run_server(factory, start)


if __name__ == "__main__":
    raise SystemExit(main())
