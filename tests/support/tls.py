"""Throwaway TLS certificates for the tests: one self-signed certificate for
localhost / 127.0.0.1, made by the ``openssl`` program (a real peer's
tool), and the SSL contexts that trust it."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

from tests.support import loops

__all__ = ["Certs", "make_certs"]


class Certs:
    """A key and a self-signed certificate in one directory."""

    def __init__(self, d: Path) -> None:
        self.key = str(d / "key.pem")
        self.cert = str(d / "cert.pem")

    def server_ctx(self, require_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.cert)
        return ctx

    def client_ctx(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cert)


def make_certs(d: Path, key: str = "ec") -> Certs:
    """Make them in ``d``: ``key`` "ec" (P-256, fast) or "rsa" (2048 bit).
    Without ``openssl`` the test is skipped (failed under CI)."""
    exe = loops.require_program("openssl", "openssl")
    c = Certs(d)
    newkey = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if key == "ec"
              else ["-newkey", "rsa:2048"])
    subprocess.run(
        [exe, "req", "-x509", *newkey, "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", c.key, "-out", c.cert],
        check=True, capture_output=True, timeout=60)
    return c
