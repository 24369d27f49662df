"""Helpers shared by the test modules (no test module imports another).

* ``running``: :func:`run` (a fresh ringline loop) and :func:`run_on` (a loop
  the test already has, e.g. the ``loop`` fixture);
* ``net``: loopback sockets, byte patterns, the echo handler, ``conn_pair``,
  ``serve_and_run``;
* ``aio``: the transport tests' recording protocol, listeners and both ends;
* ``loops``: the loop factories and the every-loop fixtures (``loop`` ...);
* ``loop_errors``: the autouse check that no loop reported a failed handler;
* ``paths``: ROOT, SRC, EXAMPLES;
* ``backends``: the native API's backends (uring, portable on asyncio and uvloop);
* ``lifetime``: whether a closed loop is freed without the collector;
* ``seccomp``: a seccomp filter that makes one syscall fail (stdlib only, so a
  child interpreter can import it before anything else).
"""

from tests.support.net import (
    HOST,
    IO_TIMEOUT,
    SMALL,
    client_socket,
    conn_pair,
    dead_port,
    echo,
    echo_once,
    echo_queued,
    need_fds,
    open_fd_count,
    pattern,
    recv_exactly,
    recv_until_eof,
    rst_close,
    serve_and_run,
    slow_reader,
    until,
)
from tests.support.running import run, run_on

__all__ = [
    "HOST",
    "IO_TIMEOUT",
    "SMALL",
    "client_socket",
    "conn_pair",
    "dead_port",
    "echo",
    "echo_once",
    "echo_queued",
    "need_fds",
    "open_fd_count",
    "pattern",
    "recv_exactly",
    "recv_until_eof",
    "rst_close",
    "run",
    "run_on",
    "serve_and_run",
    "slow_reader",
    "until",
]
