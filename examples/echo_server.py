"""An echo server on ringline's native API.

    python examples/echo_server.py --port 7878

Prints ``listening on HOST:PORT`` once it accepts connections (``--port 0``
picks a free port and prints it), echoes every byte it receives, and stops
cleanly on SIGINT (Ctrl-C) or SIGTERM: it stops accepting, lets queued
replies drain, closes every connection and exits with status 0.
"""

from __future__ import annotations

import argparse
import sys
import threading

import ringline


class Echo(ringline.Handler):
    """One instance per worker; ``on_accept`` runs once per connection."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose

    async def on_accept(self, conn: ringline.Connection) -> None:
        peer = conn.peer_addr
        if self.verbose:
            print(f"accepted {peer}", file=sys.stderr, flush=True)
        total = 0
        try:
            # recv() returns b"" at end of stream; send_nowait() queues the
            # reply in order, drain() waits if the peer reads slower than it
            # writes.
            while data := await conn.recv():
                conn.send_nowait(data)
                await conn.drain()
                total += len(data)
        except ConnectionError as exc:
            if self.verbose:
                print(f"{peer}: {exc}", file=sys.stderr, flush=True)
        finally:
            if self.verbose:
                print(f"closed {peer} after {total} bytes", file=sys.stderr, flush=True)
        # Returning closes the connection gracefully (queued bytes, then FIN).


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ringline echo server")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7878, help="port to bind; 0 picks a free one")
    parser.add_argument("--shutdown-timeout", type=float, default=5.0,
                        help="seconds a shutdown lets connections finish (default 5)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log connections to stderr")
    args = parser.parse_args(argv)
    config = ringline.Config(shutdown_timeout=args.shutdown_timeout)

    handle = ringline.ShutdownHandle()

    def announce() -> None:
        if handle.wait_ready() and handle.bound is not None:
            host, port = handle.bound
            print(f"listening on {host}:{port}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    # Blocks until SIGINT/SIGTERM (launch installs the handlers when called
    # from the main thread) or handle.shutdown(); then returns.
    ringline.launch(Echo(args.verbose), bind=(args.host, args.port), config=config,
                    shutdown=handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
