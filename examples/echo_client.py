"""An echo client on ringline's native API.

    python examples/echo_client.py --port 7878 --message hello --count 3
    printf 'one\\ntwo\\n' | python examples/echo_client.py --port 7878

Sends each message (``--message``, repeatable, else every line of stdin),
``--count`` times over one connection, waits for the echo of each and prints
it, one reply per line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import ringline


async def run(host: str, port: int, messages: list[bytes], count: int, timeout: float) -> int:
    conn = await ringline.connect(host, port, timeout=timeout)
    try:
        for _ in range(count):
            for msg in messages:
                await conn.send(msg + b"\n")
                # The echo is exactly what we sent: read that many bytes.
                reply = await asyncio.wait_for(conn.recv_exactly(len(msg) + 1), timeout)
                sys.stdout.write(reply.decode(errors="replace"))
                sys.stdout.flush()
    except asyncio.IncompleteReadError as exc:
        print(f"server closed the connection after {len(exc.partial)} bytes of a reply",
              file=sys.stderr)
        return 1
    finally:
        conn.close()
        await conn.wait_closed()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ringline echo client")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7878)
    parser.add_argument("-m", "--message", action="append",
                        help="message to send (repeatable); default: lines of stdin")
    parser.add_argument("-n", "--count", type=int, default=1,
                        help="send the messages this many times (default 1)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds to wait for the connection and for each reply")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")

    if args.message is not None:
        messages = [m.encode() for m in args.message]
    else:
        messages = [line.rstrip("\r\n").encode() for line in sys.stdin]
    if not messages:
        return 0
    try:
        return ringline.run(run(args.host, args.port, messages, args.count, args.timeout))
    except (OSError, TimeoutError) as exc:
        print(f"echo_client: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
