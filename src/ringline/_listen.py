"""Listening sockets for ``serve()``, shared by the io_uring path
(native/serve.py) and the portable backend (portable/serve.py).  Pure Python:
the portable backend must import it without the compiled extension."""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import Any

from ringline.config import Config

__all__ = ["UnixServerMixin", "given_socket", "listen_sockets", "listen_unix", "unlink_unix"]


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


def listen_unix(path: str | bytes,
                config: Config) -> tuple[socket.socket, tuple[int, int] | None]:
    """A bound, listening, non-blocking Unix stream socket at ``path``, and
    the (st_dev, st_ino) of its file (None in the abstract namespace: a path
    starting with NUL).  A file already at ``path`` is removed only when it
    is a socket nobody listens on (a stale one); anything else there is an
    OSError(EADDRINUSE), and so is a socket a server still listens on."""
    abstract = path[:1] in ("\0", b"\0")
    if not abstract:
        _remove_stale(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
        s.listen(config.backlog)
        s.setblocking(False)
        ident = None
        if not abstract:
            st = os.lstat(path)
            ident = (st.st_dev, st.st_ino)
    except BaseException:
        s.close()
        raise
    return s, ident


def _remove_stale(path: str | bytes) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EADDRINUSE, f"{path!r} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        err = probe.connect_ex(path)
    finally:
        probe.close()
    if err in (0, errno.EAGAIN, errno.EINPROGRESS):
        raise OSError(errno.EADDRINUSE, f"{path!r}: a server is listening on this socket")
    if err == errno.ECONNREFUSED:
        os.unlink(path)         # nobody listens: a leftover of an earlier server


def unlink_unix(path: str | bytes, ident: tuple[int, int] | None) -> None:
    """Remove the socket file a Unix server made, if it is still that file
    (another server may have replaced it since)."""
    if ident is None:
        return
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == ident:
            os.unlink(path)
    except OSError:
        pass


class UnixServerMixin:
    """What a Unix-domain server adds to either backend's ``Server``: its
    path, no port, and removing its socket file on close (the path and the
    file's identity from :func:`listen_unix` are set by ``__init__``)."""

    _path: str
    _ident: tuple[int, int] | None
    _socks: list[socket.socket]

    def _set_unix(self, path: str, ident: tuple[int, int] | None) -> None:
        self._path = path
        self._ident = ident

    @property
    def path(self) -> str:
        """The socket's path."""
        return self._path

    @property
    def port(self) -> int:
        """0: a Unix socket has no port (see :attr:`path`)."""
        return 0

    def close(self) -> None:
        """Stop accepting, close the listening socket and remove its file."""
        listening = bool(self._socks)
        super().close()  # type: ignore[misc]
        if listening:
            unlink_unix(self._path, self._ident)
            self._ident = None
