"""Type stubs for the native face's TLS layer (native/tls.pyx).

A ``TLSLayer`` sits in a native ``Connection`` made by ``serve(ssl=...)`` or
``connect(ssl=...)``: ciphertext from the ring's receive buffers goes
through an ``ssl.MemoryBIO`` pair, plaintext into the connection's receive
accumulator; sends are encrypted into one queued ``bytes`` per write.
"""

import ssl
from typing import Any

from ringline._net.stream import Stream
from ringline._tls import TLSInfo

class TLSLayer:
    """The TLS state of one native connection (not for direct use)."""

    @property
    def sslobj(self) -> ssl.SSLObject: ...
    @property
    def state(self) -> int: ...
    @property
    def server_side(self) -> bool: ...
    @property
    def handshake(self) -> Any:
        """Future: done with None once the handshake completed, or with a
        ``TLSHandshakeError``."""
    def __init__(self, conn: Stream, ctx: ssl.SSLContext, server_side: bool,
                 server_hostname: str | None, handshake_timeout: float,
                 close_timeout: float) -> None: ...
    def tls_info(self) -> TLSInfo | None: ...
