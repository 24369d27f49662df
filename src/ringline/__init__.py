"""ringline: an io_uring-native async I/O runtime and asyncio event loop for Linux."""

from ringline import errors
from ringline._abc import Connection
from ringline.aio.eventloop import EventLoop, install, new_event_loop, run
from ringline.backends import backend
from ringline.config import Config
from ringline.native.launcher import Handler, ShutdownHandle, launch
from ringline.native.serve import Server, connect, serve
from ringline.native.udp import DatagramSocket, bind_udp, connect_udp
from ringline.native.unix import connect_unix, serve_unix

__all__ = [
    "Config",
    "Connection",
    "DatagramSocket",
    "Handler",
    "Server",
    "ShutdownHandle",
    "backend",
    "bind_udp",
    "connect",
    "connect_udp",
    "connect_unix",
    "launch",
    "serve",
    "serve_unix",
    "EventLoop",
    "EventLoopPolicy",
    "errors",
    "install",
    "new_event_loop",
    "run",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # EventLoopPolicy is built on first use (aio/eventloop.py): the policy API
    # warns from 3.14 and is gone in 3.16, so importing ringline never touches it.
    if name == "EventLoopPolicy":
        from ringline.aio import eventloop
        return eventloop.EventLoopPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
