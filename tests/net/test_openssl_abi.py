"""ringline._net.openssl: the OpenSSL both TLS layers call directly.

It must be the very library the ``ssl`` module runs on (same version, same
files as ``_ssl``'s dependencies), CPython's private layouts must pass the
probes on the interpreter under test (run this file under 3.11 and 3.13),
and ``RINGLINE_TLS_DIRECT=0`` must turn every direct use off, on both faces.
"""

from __future__ import annotations

import _ssl
import ctypes
import os
import shutil
import ssl
import subprocess
import sys
import textwrap

import pytest

from tests.support import paths

openssl = pytest.importorskip("ringline._net.openssl")


@pytest.fixture
def fresh(monkeypatch):
    """info() decided again from a clean environment, and again afterwards."""
    monkeypatch.delenv("RINGLINE_TLS_DIRECT", raising=False)
    yield openssl.info(refresh=True)
    monkeypatch.delenv("RINGLINE_TLS_DIRECT", raising=False)
    openssl.info(refresh=True)


def _mapped_files() -> set[str]:
    with open("/proc/self/maps") as fh:
        return {os.path.realpath(parts[5].strip()) for parts in (line.split(None, 5) for line in fh)
                if len(parts) == 6 and parts[5].startswith("/")}


def _ldd(path: str) -> set[str]:
    out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30).stdout
    return {os.path.realpath(line.split("=>")[1].split("(")[0].strip())
            for line in out.splitlines() if "=>" in line and "/" in line.split("=>")[1]}


def test_resolves_the_ssl_modules_openssl(fresh) -> None:
    assert fresh["lib"], fresh["why"]
    assert fresh["version"] == ssl.OPENSSL_VERSION_NUMBER
    crypto, libssl = fresh["libcrypto"], fresh["libssl"]
    assert "libcrypto" in os.path.basename(crypto) and "libssl" in os.path.basename(libssl)
    # Mapped already (found, not loaded), and what _ssl itself links to.
    real = {os.path.realpath(crypto), os.path.realpath(libssl)}
    assert real <= _mapped_files()
    if shutil.which("ldd"):
        assert real <= _ldd(_ssl.__file__)
    # An independent look at the same file agrees on the version.
    lib = ctypes.CDLL(crypto, mode=os.RTLD_NOLOAD)
    lib.OpenSSL_version_num.restype = ctypes.c_ulong
    assert lib.OpenSSL_version_num() == ssl.OPENSSL_VERSION_NUMBER


def test_layout_probes_pass_on_this_cpython(fresh) -> None:
    # CPython 3.8 to 3.14 with an _ssl extension: every group is usable.
    assert sys.implementation.name == "cpython"
    assert (fresh["membio"], fresh["sslobj"], fresh["bio_meth"]) == (True, True, True), fresh
    assert fresh["why"] == "all on"


def test_env_switch_turns_it_off_in_process(fresh, monkeypatch) -> None:
    from ringline.native import tls
    assert fresh["membio"]
    monkeypatch.setenv("RINGLINE_TLS_DIRECT", "0")
    off = openssl.info(refresh=True)
    assert off == {"lib": False, "membio": False, "sslobj": False, "bio_meth": False,
                   "version": None, "libcrypto": None, "libssl": None,
                   "why": "off: RINGLINE_TLS_DIRECT=0"}
    try:
        assert tls.ring_bio(True) is False
    finally:
        monkeypatch.delenv("RINGLINE_TLS_DIRECT")
        openssl.info(refresh=True)
        tls.ring_bio(True)
    # Any other value leaves it on.
    monkeypatch.setenv("RINGLINE_TLS_DIRECT", "1")
    assert openssl.info(refresh=True)["membio"]


@pytest.mark.parametrize("value", ["0", ""])
def test_env_switch_at_start(value: str) -> None:
    # As a user sets it: before the interpreter starts, on both faces.
    # The asyncio face joins in once aio/tls.pyx takes its switch from
    # _net/openssl (its _set_bio_direct); until then it is left out.
    code = textwrap.dedent("""
        import ringline
        from ringline._net import openssl
        from ringline.aio import tls as aio_tls
        from ringline.native import tls
        i = openssl.info()
        faces = [tls.ring_bio()]
        if hasattr(aio_tls, "_set_bio_direct"):
            faces.append(aio_tls._set_bio_direct(True))
        print(i["lib"], i["membio"], i["sslobj"], i["bio_meth"], *faces)
        """)
    env = dict(os.environ, RINGLINE_TLS_DIRECT=value, PYTHONPATH=str(paths.SRC))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    want = "False" if value == "0" else "True"
    got = proc.stdout.split()
    assert len(got) >= 5 and got == [want] * len(got), proc.stdout
