"""asyncio streams over loopback, plain and TLS: ringline vs asyncio vs uvloop.

    python bench/streams_bench.py                  # 3 rounds, 256 MB per bulk run
    python bench/streams_bench.py --total-mb 1024  # the 1 GB shape of issue 18
    python bench/streams_bench.py --quick          # smoke run: 1 round, 1/10 sizes
    python bench/streams_bench.py --bench tls_bulk_1c,tls_rr_50c

Client and server run in the same process and loop (``asyncio.start_server``
and ``asyncio.open_connection``), as a user's test or proxy would:

* ``bulk_1c``: one connection, the client writes 10 MB buffers (``write`` +
  ``drain``), the server ``read(256 KiB)``s until it has them all, then
  answers one byte; MB/s of payload.
* ``bulk_10c``: 10 connections at once, 64 KiB writes each.
* ``tls_*``: the same over TLS (``tls_bulk_1c_cpu`` scored per CPU second) (a self-signed certificate made with
  ``openssl req`` into a temporary directory at start-up; TLS 1.3).
* ``tls_rr_50c``: 50 TLS connections, each doing 64-byte request / 64-byte
  response round trips in a closed loop; requests/s (handshakes excluded).

Bulk rows also record the process's CPU seconds (``cpu_s``, ``sys_s``) and
minor page faults (``minflt``) over the transfer in the JSON.  The
``*_cpu`` rows run the same transfers again and score them by MB per CPU
second of the process (user + system, every thread, so the ring's kernel
work is in it): on a shared host, where a pinned run spends most of its
wall time waiting for the CPU, that ratio holds steady while MB/s does not.

Method and output as in loop_bench.py (see bench/_harness.py); bulk runs have
no warm-up pass (each is long enough by itself). JSON goes to
``bench/results/streams-<timestamp>.json`` unless ``--json PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Skip, Work, main, n_of  # noqa: E402

now = time.perf_counter
MB = 1_000_000
BIG_WRITE = 10 * MB
CHUNK = 64 * 1024
READ_SIZE = 256 * 1024


def _contexts(extra: dict) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    if not extra.get("cert"):
        raise Skip(extra.get("cert_error") or "no certificate")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(extra["cert"], extra["key"])
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(extra["cert"])
    return server, client


def _bulk(loop, total: int, conns: int, write_size: int, tls: bool, extra: dict) -> dict:
    """Push ``total`` bytes (split over ``conns`` connections) client -> server."""
    per_conn = max(write_size, total // conns // write_size * write_size)
    payload = b"\x5a" * write_size
    server_ctx = client_ctx = None
    if tls:
        server_ctx, client_ctx = _contexts(extra)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = 0
        while got < per_conn:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            got += len(data)
        writer.write(b"k" if got == per_conn else b"!")
        await writer.drain()
        writer.close()

    async def client(port: int):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost" if tls else None
        )
        return reader, writer

    async def push(reader, writer) -> bool:
        for _ in range(per_conn // write_size):
            writer.write(payload)
            await writer.drain()
        ok = await reader.read(1) == b"k"
        writer.close()
        return ok

    async def run() -> dict:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        # Connect (and for TLS, handshake) before the clock starts.
        pairs = await asyncio.gather(*[client(port) for _ in range(conns)])
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = now()
        oks = await asyncio.gather(*[push(r, w) for r, w in pairs])
        dt = now() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        server.close()
        await server.wait_closed()
        assert all(oks), oks
        # CPU time and page faults of the process over the transfer: steadier
        # than MB/s on a shared host (the JSON keeps them).
        cpu = ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime
        return {"mb_per_s": per_conn * conns / dt / MB, "time_s": dt, "bytes": per_conn * conns,
                "cpu_s": cpu, "sys_s": ru1.ru_stime - ru0.ru_stime,
                "mb_per_cpu_s": per_conn * conns / max(cpu, 1e-6) / MB,
                "minflt": ru1.ru_minflt - ru0.ru_minflt}

    return loop.run_until_complete(run())


def _total(scale: float, extra: dict) -> int:
    return max(BIG_WRITE, int(extra.get("total_mb", 256) * MB * scale))


def bench_bulk_1c(loop, scale, extra):
    """One connection, 10 MB writes; MB/s."""
    return _bulk(loop, _total(scale, extra), 1, BIG_WRITE, False, extra)


def bench_bulk_10c(loop, scale, extra):
    """10 connections, 64 KiB writes; MB/s."""
    return _bulk(loop, _total(scale, extra), 10, CHUNK, False, extra)


def bench_bulk_1c_cpu(loop, scale, extra):
    """bulk_1c again, scored by MB per CPU second of the process."""
    return bench_bulk_1c(loop, scale, extra)


def bench_bulk_10c_cpu(loop, scale, extra):
    """bulk_10c again, scored by MB per CPU second of the process."""
    return bench_bulk_10c(loop, scale, extra)


def bench_tls_bulk_1c(loop, scale, extra):
    """TLS, one connection, 10 MB writes; MB/s."""
    return _bulk(loop, _total(scale, extra), 1, BIG_WRITE, True, extra)


def bench_tls_bulk_10c(loop, scale, extra):
    """TLS, 10 connections, 64 KiB writes; MB/s."""
    return _bulk(loop, _total(scale, extra), 10, CHUNK, True, extra)


def bench_tls_bulk_1c_cpu(loop, scale, extra):
    """tls_bulk_1c again, scored by MB per CPU second of the process."""
    return bench_tls_bulk_1c(loop, scale, extra)


def bench_tls_rr_50c(loop, scale, extra):
    """TLS, 50 connections, 64 B request/response round trips; requests/s."""
    conns, per_conn = 50, n_of(400, scale)
    server_ctx, client_ctx = _contexts(extra)
    request = b"q" * 64

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.readexactly(64)
                writer.write(data)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    async def connect(port: int):
        return await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )

    async def client(reader, writer) -> int:
        done = 0
        for _ in range(per_conn):
            writer.write(request)
            if await reader.readexactly(64) == request:
                done += 1
        writer.close()
        return done

    async def run() -> dict:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        pairs = await asyncio.gather(*[connect(port) for _ in range(conns)])
        t0 = now()
        done = await asyncio.gather(*[client(r, w) for r, w in pairs])
        dt = now() - t0
        server.close()
        await server.wait_closed()
        assert sum(done) == conns * per_conn, sum(done)
        return {"req_per_s": conns * per_conn / dt, "time_s": dt}

    return loop.run_until_complete(run())


WORKS = {
    w.name: w
    for w in (
        Work(
            "bulk_1c",
            "bulk, 1 conn, 10 MB writes",
            bench_bulk_1c,
            1,
            "mb_per_s",
            True,
            "MB/s",
            warmup=False,
        ),
        Work(
            "bulk_10c",
            "bulk, 10 conns, 64 KiB writes",
            bench_bulk_10c,
            1,
            "mb_per_s",
            True,
            "MB/s",
            warmup=False,
        ),
        Work(
            "bulk_1c_cpu",
            "bulk, 1 conn, 10 MB writes, MB per CPU s",
            bench_bulk_1c_cpu,
            1,
            "mb_per_cpu_s",
            True,
            "MB/s",
            warmup=False,
        ),
        Work(
            "bulk_10c_cpu",
            "bulk, 10 conns, 64 KiB writes, MB per CPU s",
            bench_bulk_10c_cpu,
            1,
            "mb_per_cpu_s",
            True,
            "MB/s",
            warmup=False,
        ),
        Work(
            "tls_bulk_1c",
            "TLS bulk, 1 conn, 10 MB writes",
            bench_tls_bulk_1c,
            1,
            "mb_per_s",
            True,
            "MB/s",
            warmup=False,
        ),
        Work(
            "tls_bulk_1c_cpu",
            "TLS bulk, 1 conn, 10 MB writes, MB per CPU s",
            bench_tls_bulk_1c_cpu,
            1,
            "mb_per_cpu_s",
            True,
            "MB/s",
            warmup=False,
        ),
        Work(
            "tls_bulk_10c",
            "TLS bulk, 10 conns, 64 KiB writes",
            bench_tls_bulk_10c,
            1,
            "mb_per_s",
            True,
            "MB/s",
            warmup=False,
        ),
        Work(
            "tls_rr_50c",
            "TLS 64 B req/resp, 50 conns x {n}",
            bench_tls_rr_50c,
            400,
            "req_per_s",
            True,
            "/s",
        ),
    )
}


def _add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--total-mb",
        type=float,
        default=256.0,
        help="payload per bulk run in MB, before --scale (default 256)",
    )


def _prepare(args: argparse.Namespace, tmp: Path) -> dict:
    """Make a throw-away self-signed certificate for the TLS rows."""
    extra: dict = {"total_mb": args.total_mb}
    openssl = shutil.which("openssl")
    if openssl is None:
        extra["cert_error"] = "the openssl command is not installed"
        return extra
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    proc = subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        extra["cert_error"] = f"openssl req failed: {proc.stderr.strip()[-200:]}"
        return extra
    extra.update(cert=str(cert), key=str(key))
    return extra


if __name__ == "__main__":
    sys.exit(
        main(
            script=Path(__file__).resolve(),
            tag="streams",
            description="asyncio streams, plain and TLS: ringline vs asyncio vs uvloop",
            works=WORKS,
            add_args=_add_args,
            prepare=_prepare,
        )
    )
