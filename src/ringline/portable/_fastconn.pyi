"""Type stub of the compiled per-message path of the portable Connection
(``_fastconn.pyx``; see ``ringline/portable/connection.py``)."""

from typing import Any

class Core:
    """Compiled base of ``ringline.portable.Connection``: the per-message
    state and ``data_received``, ``recv``, ``send_nowait``."""

    _loop: Any
    _transport: Any
    _head: bytes | None
    _acc: bytearray
    _waiter: Any
    _done: Any
    _park: Any
    _park_aw: Any
    _error: BaseException | None
    _limit: int
    _state: int
    _paused_reading: bool
    _eof: bool
    _send_failed: bool
    _shut_requested: bool

    def data_received(self, data: bytes) -> None: ...
    def recv(self, max_bytes: int = 65536) -> Any: ...
    def send_nowait(self, data: Any) -> None: ...
