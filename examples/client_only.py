"""A client-only program on ringline's native API: connect, exchange, exit.

    python examples/client_only.py --port 7878            # against echo_server.py
    python examples/client_only.py --spawn-echo           # starts a stdlib echo server
    python examples/client_only.py --spawn-echo --unix /tmp/echo.sock

No ``serve()``, no ``launch()``: ``ringline.run`` runs one coroutine that
connects (TCP, or a Unix socket with ``--unix``), sends ``--rounds``
requests, each as a linked send chain (a 4-byte length header and the
payload, one SQE each, no copy), reads each echo back with
``recv_exactly``, checks it, prints one summary line and exits 0 (1 on a
mismatch or a closed connection).  ``--spawn-echo`` starts a plain
``socketserver`` echo server in a thread first, so the program runs alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socketserver
import struct
import sys
import threading
import time

import ringline


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


def spawn_echo(unix_path: str | None) -> tuple[socketserver.BaseServer, int]:
    """A stdlib echo server in a daemon thread; returns it and its TCP port
    (0 for a Unix socket)."""
    server: socketserver.BaseServer
    if unix_path is not None:
        if os.path.exists(unix_path):
            os.unlink(unix_path)
        server = socketserver.ThreadingUnixStreamServer(unix_path, _Echo)
        port = 0
    else:
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
        port = server.server_address[1]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


async def exchange(host: str, port: int, unix_path: str | None, rounds: int, size: int,
                   timeout: float) -> int:
    if unix_path is not None:
        conn = await ringline.connect_unix(unix_path, timeout=timeout)
    else:
        conn = await ringline.connect(host, port, timeout=timeout)
    payload = bytearray(os.urandom(size))
    sent = 0
    start = time.perf_counter()
    try:
        for i in range(rounds):
            payload[:4] = i.to_bytes(4, "big")
            header = struct.pack("!I", len(payload))
            # The future resolves once the kernel is done with ``payload``:
            # only then is it changed for the next round.
            sent += await conn.send_chain([header, payload])
            reply = await asyncio.wait_for(conn.recv_exactly(4 + len(payload)), timeout)
            if reply[:4] != header or reply[4:] != payload:
                print(f"round {i}: the echo differs from what was sent", file=sys.stderr)
                return 1
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        print(f"connection ended early: {exc!r}", file=sys.stderr)
        return 1
    finally:
        conn.close()
        await conn.wait_closed()
    elapsed = time.perf_counter() - start
    where = unix_path if unix_path is not None else f"{host}:{port}"
    print(f"ok: {rounds} round trips of {size + 4} bytes with {where}, "
          f"{sent} bytes sent, {elapsed * 1e3:.1f} ms")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ringline client-only example")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7878)
    parser.add_argument("--unix", metavar="PATH", help="connect to this Unix socket instead")
    parser.add_argument("--spawn-echo", action="store_true",
                        help="start a stdlib echo server first and talk to it")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--size", type=int, default=100_000, help="payload bytes per round")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    server = None
    port = args.port
    if args.spawn_echo:
        server, port = spawn_echo(args.unix)
    try:
        return ringline.run(exchange(args.host, port, args.unix, args.rounds,
                                     max(args.size, 4), args.timeout))
    except OSError as exc:
        print(f"cannot connect: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
            if args.unix is not None and os.path.exists(args.unix):
                os.unlink(args.unix)


if __name__ == "__main__":
    sys.exit(main())
