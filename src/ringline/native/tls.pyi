"""Type stubs for the native face's TLS layer (native/tls.pyx).

A ``TLSLayer`` sits in a native ``Connection`` made by ``serve(ssl=...)`` or
``connect(ssl=...)``: OpenSSL reads ciphertext straight from the ring's
receive buffers and writes records straight into the ``bytes`` objects
queued for sending (the "ring BIOs"; an ``ssl.MemoryBIO`` pair where those
cannot work), and decrypts into the connection's receive accumulator.
"""

import ssl
from typing import Any

from ringline._net.stream import Stream
from ringline._tls import TLSInfo

def ring_bio(enable: bool | None = None) -> bool:
    """Whether new native TLS connections use the ring BIOs; ``enable``
    False turns them off, True back on where they can work."""

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
