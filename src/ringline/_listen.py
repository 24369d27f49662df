"""Listening sockets for ``serve()``, shared by the io_uring path
(native/serve.py) and the portable backend (portable/serve.py).  Pure Python:
the portable backend must import it without the compiled extension."""

from __future__ import annotations

import errno
import socket
from typing import Any

from ringline.config import Config

__all__ = ["given_socket", "listen_sockets"]


def listen_sockets(host: str | None, port: int, config: Config) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for ``host:port``: one per
    unique address getaddrinfo gives; port 0 picks one port for all."""
    infos: list[tuple[Any, ...]] = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    # Unique addresses in getaddrinfo's order.
    addrs: list[tuple[Any, ...]] = []
    for family, type_, proto, _, addr in infos:
        if (family, addr) not in [(a[0], a[3]) for a in addrs]:
            addrs.append((family, type_, proto, addr))
    if port != 0 or len(addrs) == 1:
        return _bind_all(addrs, config)
    # Port 0 with several addresses (host None: IPv4 and IPv6): the kernel's
    # pick for the first socket may be taken on another family; then start
    # over with a fresh pick, a few times.
    for attempt in range(8):
        first = _bind_all(addrs[:1], config)
        chosen = first[0].getsockname()[1]
        rest = [(f, t, p, (a[0], chosen, *a[2:])) for f, t, p, a in addrs[1:]]
        try:
            return first + _bind_all(rest, config)
        except OSError as exc:
            first[0].close()
            if exc.errno != errno.EADDRINUSE or attempt == 7:
                raise
    raise AssertionError("unreachable")


def _bind_all(addrs: list[tuple[Any, ...]], config: Config) -> list[socket.socket]:
    socks: list[socket.socket] = []
    try:
        for family, type_, proto, addr in addrs:
            s = socket.socket(family, type_, proto)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if config.reuse_port:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if config.tcp_nodelay and family in (socket.AF_INET, socket.AF_INET6):
                # Linux copies TCP_NODELAY to accepted sockets, so a direct
                # descriptor (no process fd for setsockopt) gets it too.
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.bind(addr)
            s.listen(config.backlog)
            s.setblocking(False)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def given_socket(sock: socket.socket, host: str | None, port: int) -> socket.socket:
    """Check a socket passed as ``serve(sock=...)``: a listening TCP or Unix
    stream socket, and no host or port beside it (asyncio's rule)."""
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
    if host is not None or port:
        raise ValueError("host and port cannot be given together with sock")
    if sock.type != socket.SOCK_STREAM:
        raise ValueError(f"sock must be a SOCK_STREAM socket, got {sock.type!r}")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ValueError("sock must be listening (call listen() first)")
    sock.setblocking(False)
    return sock
