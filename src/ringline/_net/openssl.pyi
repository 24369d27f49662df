"""Type stubs for ringline._net.openssl: the one place that decides whether
ringline's TLS layers may call the ``ssl`` module's OpenSSL directly
(library, version, CPython's private layouts checked on probes;
``RINGLINE_TLS_DIRECT=0`` turns it off).  The functions themselves are C
level only (openssl.pxd)."""

from typing import Any

def info(refresh: bool = False) -> dict[str, Any]:
    """``lib``/``membio``/``sslobj``/``bio_meth``: what is usable;
    ``version``, ``libcrypto``, ``libssl``: what was found; ``why``: what is
    off, and why.  ``refresh`` decides again (re-reads the environment)."""
