"""ringline: an io_uring-native async I/O runtime and asyncio event loop for Linux."""

from ringline import errors
from ringline._abc import Connection
from ringline.aio.eventloop import EventLoop, EventLoopPolicy, install, new_event_loop, run
from ringline.backends import backend
from ringline.config import Config
from ringline.native.launcher import Handler, ShutdownHandle, launch
from ringline.native.serve import Server, connect, serve

__all__ = [
    "Config",
    "Connection",
    "Handler",
    "Server",
    "ShutdownHandle",
    "backend",
    "connect",
    "launch",
    "serve",
    "EventLoop",
    "EventLoopPolicy",
    "errors",
    "install",
    "new_event_loop",
    "run",
]

__version__ = "0.1.0"
