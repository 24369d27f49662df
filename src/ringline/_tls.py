"""TLS pieces both backends of the native API share (pure Python).

``TLSInfo`` is what ``Connection.tls_info()`` returns, built from the
``ssl.SSLObject`` of the connection by :func:`info_from` on the io_uring
backend (``native/tls.pyx``) and on the portable one (asyncio's or uvloop's
SSL transport also runs an ``SSLObject``).  The server's view of the SNI
name needs a hook on the ``SSLContext`` (:func:`record_sni`), since the
``ssl`` module has no getter for it on the serving side.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from typing import Any

from ringline.errors import TLSCertificateError, TLSHandshakeError, TLSHandshakeTimeout

__all__ = ["TLSInfo", "info_from", "logger", "record_sni", "typed_handshake_error"]

#: Where a serving side's failed handshakes are logged (INFO: port scanners
#: and plaintext clients are routine on a public TLS port; the count is in
#: ``NetState.tls_handshake_failures`` / ``metrics.snapshot``).
logger = logging.getLogger("ringline.tls")

_SNI_ATTR = "_ringline_sni"


@dataclasses.dataclass(frozen=True)
class TLSInfo:
    """The negotiated parameters of a TLS connection.

    ``version``: ``"TLSv1.3"``, ``"TLSv1.2"``...; ``cipher``: the OpenSSL
    cipher suite name; ``alpn``: the protocol ALPN selected, or None;
    ``sni``: the server name the client asked for (on either side; None when
    the client sent none); ``server_side``: this end accepted the
    connection; ``peer_cert``: the peer's certificate as
    ``SSLObject.getpeercert()`` gives it (a dict; empty or None when the
    peer sent none or it was not verified).
    """

    version: str | None
    cipher: str | None
    alpn: str | None
    sni: str | None
    server_side: bool
    peer_cert: dict[str, Any] | None = None


def info_from(sslobj: Any) -> TLSInfo:
    """TLSInfo of a finished handshake's ``ssl.SSLObject``."""
    cipher = sslobj.cipher()
    server_side = bool(sslobj.server_side)
    sni = getattr(sslobj, _SNI_ATTR, None) if server_side else sslobj.server_hostname
    try:
        cert = sslobj.getpeercert()
    except (ValueError, ssl.SSLError):
        cert = None
    return TLSInfo(version=sslobj.version(), cipher=cipher[0] if cipher else None,
                   alpn=sslobj.selected_alpn_protocol(), sni=sni,
                   server_side=server_side, peer_cert=cert)


def record_sni(ctx: ssl.SSLContext) -> None:
    """Make ``ctx`` note the SNI name each server handshake receives on its
    SSLObject (read by :func:`info_from`).  Wraps a ``sni_callback`` the
    application set (called as before, its answer returned); done once per
    context."""
    user = ctx.sni_callback
    if getattr(user, "_ringline_records_sni", False):
        return

    def _note(sslobj: Any, name: str | None, c: ssl.SSLContext) -> Any:
        try:
            setattr(sslobj, _SNI_ATTR, name)
        except AttributeError:
            pass
        return user(sslobj, name, c) if user is not None else None  # type: ignore[arg-type]

    _note._ringline_records_sni = True  # type: ignore[attr-defined]
    ctx.sni_callback = _note


def typed_handshake_error(exc: BaseException) -> TLSHandshakeError:
    """The error a failed client handshake raises: ``TLSCertificateError``
    for a certificate that did not verify, ``TLSHandshakeTimeout``, else
    ``TLSHandshakeError``; all ``ssl.SSLError``, ``exc`` as the cause."""
    if isinstance(exc, TLSHandshakeError):
        return exc
    new: TLSHandshakeError
    if isinstance(exc, TimeoutError) or "handshake is taking longer" in str(exc):
        new = TLSHandshakeTimeout(str(exc))
    elif isinstance(exc, (ssl.SSLCertVerificationError, ssl.CertificateError)):
        cert = TLSCertificateError(f"TLS certificate verification failed: {exc}")
        cert.verify_code = getattr(exc, "verify_code", None)  # type: ignore[assignment]
        cert.verify_message = getattr(exc, "verify_message", None)  # type: ignore[assignment]
        new = cert
    else:
        new = TLSHandshakeError(f"TLS handshake failed: {exc}")
    for name in ("reason", "library"):
        if getattr(exc, name, None) is not None:
            setattr(new, name, getattr(exc, name))
    new.__cause__ = exc
    return new
