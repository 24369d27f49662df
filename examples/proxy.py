"""A TCP proxy on ringline's native API.

    python examples/proxy.py --listen 127.0.0.1:8080 --target 127.0.0.1:7878

Every accepted connection opens an outbound connection to the target and
forwards bytes both ways on the same loop; a half-close (EOF) on one side
is passed on to the other.  Prints ``listening on HOST:PORT`` when ready
(port 0 picks a free port); stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading

import ringline


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def pump(src: ringline.Connection, dst: ringline.Connection) -> None:
    """Copy src to dst until src's end of stream, then half-close dst."""
    while data := await src.recv():
        dst.send_nowait(data)
        await dst.drain()          # backpressure: a slow dst slows the copy
    dst.shutdown_write()


class Proxy(ringline.Handler):
    def __init__(self, target: tuple[str, int], verbose: bool = False) -> None:
        self.target = target
        self.verbose = verbose

    async def on_accept(self, conn: ringline.Connection) -> None:
        try:
            upstream = await ringline.connect(*self.target, timeout=5.0)
        except (OSError, TimeoutError) as exc:
            if self.verbose:
                print(f"{conn.peer_addr}: cannot reach {self.target}: {exc}",
                      file=sys.stderr, flush=True)
            return                 # closes the client connection
        try:
            # Both directions at once; if one fails the other is cancelled.
            async with asyncio.TaskGroup() as tg:
                tg.create_task(pump(conn, upstream))
                tg.create_task(pump(upstream, conn))
        except* (ConnectionError, ringline.errors.ReceiveLimitExceeded) as eg:
            if self.verbose:
                print(f"{conn.peer_addr}: {eg.exceptions[0]}", file=sys.stderr, flush=True)
        finally:
            upstream.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ringline TCP proxy")
    parser.add_argument("--listen", type=host_port, default=("127.0.0.1", 8080),
                        help="HOST:PORT to accept on (default 127.0.0.1:8080)")
    parser.add_argument("--target", type=host_port, required=True,
                        help="HOST:PORT to forward to")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    handle = ringline.ShutdownHandle()

    def announce() -> None:
        if handle.wait_ready() and handle.bound is not None:
            host, port = handle.bound
            print(f"listening on {host}:{port}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    ringline.launch(Proxy(args.target, args.verbose), bind=args.listen, shutdown=handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
