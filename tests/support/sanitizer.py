"""The sanitizer run (``make asan``, ``RINGLINE_ASAN=1``) as the tests see it.

``make asan`` preloads ASan's runtime into the test process, and every
child inherits it.  Peer programs (servers the tests talk to) are not what
is under test and some do not run under it at all: PostgreSQL's ``initdb``
hangs with libasan preloaded.  ``peer_env()`` is the environment to start
such a program with."""

from __future__ import annotations

import os

__all__ = ["peer_env"]

_SANITIZER_VARS = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC")


def peer_env() -> dict[str, str]:
    """This process's environment without the sanitizer runtime and its options."""
    return {k: v for k, v in os.environ.items() if k not in _SANITIZER_VARS}
