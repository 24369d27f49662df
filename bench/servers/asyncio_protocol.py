"""Echo server on the asyncio Protocol API: echo straight from data_received.

    python bench/servers/asyncio_protocol.py --port 0 --loop asyncio|uvloop|ringline

This is the cheapest path an asyncio loop offers (no coroutine per read),
so it measures the loop's transport machinery itself.
"""

from __future__ import annotations

import asyncio
import socket

from _common import loop_factory, parse_args, run_server


class EchoProtocol(asyncio.Protocol):
    # Not asserted to be an asyncio.Transport: uvloop's transports only
    # duck-type it.
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Small latency-bound replies: make sure Nagle never delays them
        # (asyncio and uvloop already do this; be explicit for any loop).
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    factory = loop_factory(args.loop)

    async def start() -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_server(EchoProtocol, args.host, args.port)

    return run_server(factory, start)


if __name__ == "__main__":
    raise SystemExit(main())
