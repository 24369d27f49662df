"""HTTP/1.1 keep-alive "hello world" server on the asyncio Protocol API.

    python bench/servers/http_hello.py --port 0 --loop asyncio|uvloop|ringline

A deliberately minimal parser (what a tiny framework does per request, and
little else, so the loop's own cost shows): split the byte stream at the end
of each header block, honour ``Content-Length`` bodies and
``Connection: close``, and answer every complete request -- pipelined ones
included -- with one constant 200 response written in a single
``transport.write``.  Prints ``READY <port>``; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import socket

from _common import loop_factory, parse_args, run_server

BODY = b"Hello, World!"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"Server: ringline-bench\r\n"
    b"\r\n" + BODY
)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_HEADER = 64 * 1024


class HelloProtocol(asyncio.Protocol):
    __slots__ = ("transport", "buf")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos = 0
        n = 0
        close = False
        while True:
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                break
            head = buf[pos:end]
            nxt = end + 4
            lower = head.lower()
            if b"content-length:" in lower or b"connection:" in lower:
                for line in lower.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name == b"content-length":
                        try:
                            nxt += int(value)
                        except ValueError:
                            self._fail()
                            return
                    elif name == b"connection" and b"close" in value:
                        close = True
                if nxt > len(buf):        # body not complete yet
                    break
            n += 1
            pos = nxt
            if close:
                break
        self.buf = buf[pos:]
        if len(self.buf) > MAX_HEADER:
            self._fail()
            return
        if n:
            self.transport.write(RESPONSE * n if n > 1 else RESPONSE)
        if close:
            self.transport.close()

    def _fail(self) -> None:
        self.transport.write(BAD_REQUEST)
        self.transport.close()


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    factory = loop_factory(args.loop)

    async def start() -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_server(HelloProtocol, args.host, args.port, backlog=1024)

    return run_server(factory, start)


if __name__ == "__main__":
    raise SystemExit(main())
