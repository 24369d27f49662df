"""A UDP echo server on ringline's native API.

    python examples/udp_echo.py --port 7879

Prints ``listening on HOST:PORT`` once it receives (``--port 0`` picks a
free port and prints it), sends every datagram back to its sender, and
stops cleanly on SIGINT (Ctrl-C) or SIGTERM: queued replies drain, the
socket closes, and it prints its counters and exits with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import ringline


async def serve(host: str, port: int) -> None:
    sock = await ringline.bind_udp(host, port)
    h, p = sock.local_addr[:2]
    print(f"listening on {h}:{p}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def echo() -> None:
        while True:
            # Everything that has arrived, at most 64 at a time; each reply
            # is queued (several sends in flight, in order).
            for data, addr in await sock.recv_batch(64):
                sock.send_to(data, addr)

    task = asyncio.ensure_future(echo())
    await stop.wait()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    await sock.drain()
    stats = sock.statistics()
    sock.close()
    await sock.wait_closed()
    print(f"echoed {stats['datagrams_out']} of {stats['datagrams_in']} datagrams "
          f"({stats['dropped']} dropped)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ringline UDP echo server")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7879, help="port to bind; 0 picks a free one")
    args = parser.parse_args(argv)
    ringline.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
