"""Loud misuse from other threads: the asyncio methods ``EventLoop`` inherits
in Python raise RuntimeError when called from a thread other than the one
running the loop (the compiled ones, call_soon/call_later/call_at/create_task
and the native API, test the same typed field in C).

asyncio checks only call_soon/call_at, and only in debug mode; elsewhere a
call from another thread races with the loop and may do nothing visible (a
registration the loop never sees until something else wakes it).  The
thread-safe entry points stay unchecked: ``call_soon_threadsafe``,
``asyncio.run_coroutine_threadsafe`` (which uses it), ``stop``, ``time``,
``is_running``, ``is_closed``, ``get_debug``, and ``run_in_executor`` (its
result reaches the loop through call_soon_threadsafe; documented as working
from any thread in docs/asyncio-differences.md).

A coroutine method is checked when its body starts, in the thread that awaits
it: creating ``loop.create_connection(...)`` in another thread and handing it
to ``asyncio.run_coroutine_threadsafe`` is correct use.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

__all__ = ["CHECKED", "install"]

#: Python-level loop methods that must run on the loop's thread.
CHECKED = (
    # readiness and executors (plain methods)
    "add_reader", "remove_reader", "add_writer", "remove_writer",
    "add_signal_handler", "remove_signal_handler", "set_default_executor",
    # coroutine methods: sockets, servers, connections, pipes, processes, DNS
    "sock_recv", "sock_recv_into", "sock_recvfrom", "sock_recvfrom_into",
    "sock_sendall", "sock_sendto", "sock_connect", "sock_accept", "sock_sendfile",
    "create_connection", "create_server", "create_unix_connection",
    "create_unix_server", "create_datagram_endpoint", "connect_accepted_socket",
    "connect_read_pipe", "connect_write_pipe", "subprocess_exec", "subprocess_shell",
    "sendfile", "start_tls", "getaddrinfo", "getnameinfo",
)


def _guard(cls: type, name: str, fn: Any) -> Any:
    # A method the class inherits is looked up in its bases at each call, not
    # bound here: code (and test suites: asyncssh's) that patches
    # asyncio.BaseEventLoop.create_connection then reaches this loop too, as
    # it reaches asyncio's own subclasses.
    own = name in cls.__dict__

    def impl(self: Any) -> Any:
        return fn.__get__(self) if own else getattr(super(cls, self), name)

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def checked_coro(self: Any, *args: Any, **kwargs: Any) -> Any:
            self._require_loop_thread(name)
            return await impl(self)(*args, **kwargs)
        return checked_coro

    @functools.wraps(fn)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._require_loop_thread(name)
        return impl(self)(*args, **kwargs)
    return checked


def install(cls: type) -> None:
    """Replace each method of ``CHECKED`` on ``cls`` by a checked wrapper."""
    for name in CHECKED:
        fn = getattr(cls, name, None)
        if fn is not None:
            setattr(cls, name, _guard(cls, name, fn))
