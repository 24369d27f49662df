"""A TLS echo server and client on ringline's native API.

    python examples/tls_echo.py serve --port 8443 [--cert cert.pem --key key.pem]
    python examples/tls_echo.py connect --port 8443 --cafile cert.pem -m hello

``serve`` prints ``listening on HOST:PORT`` once it accepts connections,
then ``certificate FILE`` (the certificate clients should trust: the one
given, or a throwaway self-signed one for localhost made with the
``openssl`` program when ``--cert`` is left out).  Each connection gets a
greeting line with its negotiated TLS version, cipher and ALPN, then every
byte it sends echoed back.  SIGINT/SIGTERM stop it cleanly (each client
gets close_notify).

``connect`` opens one verified TLS connection, reads the greeting, sends
each ``-m`` message and prints the echo, and exits 1 with the reason if
the handshake fails (an untrusted certificate, say).
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import ringline
from ringline.errors import TLSHandshakeError


class TLSEcho(ringline.Handler):
    async def on_accept(self, conn: ringline.Connection) -> None:
        # The handshake is done before on_accept runs: tls_info() is known.
        info = conn.tls_info()
        conn.send_nowait(f"hello over {info.version} {info.cipher} alpn={info.alpn}\n".encode())
        while data := await conn.recv():
            conn.send_nowait(data)
            await conn.drain()
        # Returning closes the connection: close_notify, then FIN.


def make_self_signed(d: Path) -> tuple[str, str]:
    """A self-signed certificate for localhost/127.0.0.1, by ``openssl``."""
    exe = shutil.which("openssl")
    if exe is None:
        raise SystemExit("--cert not given and no 'openssl' program to make one")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run([exe, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def serve(args: argparse.Namespace) -> int:
    tmp = None
    if args.cert is None:
        tmp = tempfile.TemporaryDirectory()
        args.cert, args.key = make_self_signed(Path(tmp.name))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["echo/1", "http/1.1"])
    handle = ringline.ShutdownHandle()

    def announce() -> None:
        handle.wait_ready()
        if handle.bound is not None:
            host, port = handle.bound
            print(f"listening on {host}:{port}", flush=True)
            print(f"certificate {args.cert}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        ringline.launch(TLSEcho, bind=(args.host, args.port), shutdown=handle, ssl=ctx)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


async def connect(args: argparse.Namespace) -> int:
    ctx = ssl.create_default_context(cafile=args.cafile)
    ctx.set_alpn_protocols(["echo/1"])
    try:
        conn = await ringline.connect(args.host, args.port, ssl=ctx,
                                      server_hostname=args.server_hostname, timeout=10)
    except (TLSHandshakeError, OSError) as exc:
        print(f"cannot connect: {exc}", file=sys.stderr)
        return 1
    try:
        greeting = b""
        while not greeting.endswith(b"\n"):
            greeting += await conn.recv()
        print(greeting.decode().rstrip("\n"))
        for msg in args.message or ["hello"]:
            data = msg.encode()
            await conn.send(data)
            print((await conn.recv_exactly(len(data))).decode())
    finally:
        conn.close()
        await conn.wait_closed()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="ringline native TLS echo")
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve", help="run the TLS echo server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    s.add_argument("--cert", default=None, help="certificate chain (PEM); default: make one")
    s.add_argument("--key", default=None, help="private key (PEM)")
    c = sub.add_parser("connect", help="talk to a TLS echo server")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=8443)
    c.add_argument("--cafile", default=None, help="certificate to trust (default: system CAs)")
    c.add_argument("--server-hostname", default="localhost")
    c.add_argument("-m", "--message", action="append", help="a message to send (repeatable)")
    args = p.parse_args(argv)
    if args.mode == "serve":
        if (args.cert is None) != (args.key is None):
            p.error("--cert and --key go together")
        return serve(args)
    return ringline.run(connect(args))


if __name__ == "__main__":
    sys.exit(main())
