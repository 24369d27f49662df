"""``python -m ringline serve``: its flags, their checks, and the run."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["add_serve_parser", "serve_command"]


def _host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT`` (all IPv4 interfaces)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8000)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n


def _seconds(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not s >= 0 or s == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
    return s


def _target(text: str) -> str:
    module, sep, name = text.partition(":")
    if not sep or not module or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not MODULE:NAME (e.g. app:handler)")
    return text


def add_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` sub-command to ``python -m ringline``."""
    p = sub.add_parser(
        "serve", help="serve an application with one worker per core",
        description="Run an application on ringline with a supervisor: one worker process "
                    "per core (SO_REUSEPORT), restarts of crashed workers, graceful stop on "
                    "SIGTERM/SIGINT, zero-downtime restart on SIGHUP, Prometheus metrics.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("handler", nargs="?", type=_target, metavar="MODULE:HANDLER",
                      help="a ringline.Handler subclass or an async def on_accept(conn)")
    what.add_argument("--asgi", type=_target, metavar="MODULE:APP",
                      help="an ASGI application, served by uvicorn on ringline's loop")
    what.add_argument("--asyncio", type=_target, metavar="MODULE:FACTORY",
                      help="a protocol factory for loop.create_server on ringline's loop")
    p.add_argument("--bind", type=_host_port, default=("127.0.0.1", 8000),
                   metavar="HOST:PORT", help="where to listen (default 127.0.0.1:8000)")
    p.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="worker processes (default: one per CPU this process may use)")
    p.add_argument("--pin", action="store_true", help="pin worker i to the i-th allowed CPU")
    p.add_argument("--graceful-timeout", type=_seconds, default=10.0, metavar="SECONDS",
                   help="how long in-flight work may take after SIGTERM (default 10)")
    p.add_argument("--metrics", type=_host_port, default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics "
                        "(needs ringline[metrics])")
    p.add_argument("--udp", type=_host_port, default=None, metavar="HOST:PORT",
                   help="also serve UDP: each worker binds HOST:PORT (SO_REUSEPORT) and runs "
                        "the handler module's async def on_udp(sock) (native handlers)")
    p.add_argument("--ssl-cert", default=None, metavar="FILE", help="TLS certificate chain (PEM)")
    p.add_argument("--ssl-key", default=None, metavar="FILE", help="TLS private key (PEM)")
    p.add_argument("--backend", choices=("auto", "uring", "portable"), default="auto",
                   help="io_uring, the portable backend, or auto (default)")
    p.set_defaults(func=serve_command)


def _check(args: argparse.Namespace) -> str | None:
    """The error message for a bad combination of flags, or None."""
    if args.udp is not None and not args.handler:
        return "--udp needs a native handler (MODULE:HANDLER), not --asgi/--asyncio"
    if args.ssl_key and not args.ssl_cert:
        return "--ssl-key needs --ssl-cert"
    for flag in ("ssl_cert", "ssl_key"):
        path = getattr(args, flag)
        if path and not os.path.isfile(path):
            return f"--{flag.replace('_', '-')}: {path}: no such file"
    if args.ssl_cert:
        import ssl
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                args.ssl_cert, args.ssl_key)
        except (OSError, ssl.SSLError) as exc:
            return f"--ssl-cert/--ssl-key: cannot load the certificate and key: {exc}"
    if args.metrics is not None:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            return "--metrics needs prometheus_client: pip install 'ringline[metrics]'"
        if tuple(args.metrics) == tuple(args.bind) and args.bind[1] != 0:
            return "--metrics must differ from --bind"
    if args.asgi:
        try:
            import uvicorn  # noqa: F401
        except ImportError:
            return "--asgi needs uvicorn: pip install uvicorn"
    return None


def serve_command(args: argparse.Namespace) -> int:
    from ringline.ops.supervisor import Supervisor

    problem = _check(args)
    if problem is not None:
        sys.stderr.write(f"python -m ringline serve: error: {problem}\n")
        return 2
    kind, target = (("asgi", args.asgi) if args.asgi else
                    ("asyncio", args.asyncio) if args.asyncio else ("native", args.handler))
    workers = args.workers or len(os.sched_getaffinity(0))
    sup = Supervisor(kind, target, args.bind[0], args.bind[1], workers=workers, pin=args.pin,
                     graceful_timeout=args.graceful_timeout, metrics_bind=args.metrics,
                     ssl_cert=args.ssl_cert, ssl_key=args.ssl_key, backend=args.backend,
                     udp=args.udp)
    try:
        sup.bind()
    except OSError as exc:
        sys.stderr.write(f"python -m ringline serve: error: cannot listen on "
                         f"{args.bind[0]}:{args.bind[1]}: {exc.strerror or exc}\n")
        return 1
    # Make sure workers import the application the way this process would.
    sys.path.insert(0, os.getcwd())
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return sup.run()
