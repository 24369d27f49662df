"""ringline's PEP 517 build backend: setuptools', asking for Cython only when
the compiled extension is built.

setup.py builds the io_uring extension on Linux unless RINGLINE_PURE=1;
anywhere else (macOS, Windows) the install is pure Python.  A static
``[build-system] requires`` cannot follow an environment variable, so Cython
is added here, per build, by the ``get_requires_for_build_*`` hooks pip calls
before building.  Everything else is setuptools.build_meta unchanged.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 - the rest of the PEP 517 hooks

CYTHON = "Cython>=3.0.10"


def build_extension() -> bool:
    """Whether the build compiles the extension (kept in step with setup.py's copy)."""
    pure = os.environ.get("RINGLINE_PURE", "") not in ("", "0")
    return sys.platform.startswith("linux") and not pure


def _with_cython(requires: list[str]) -> list[str]:
    return [*requires, CYTHON] if build_extension() else list(requires)


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _with_cython(_setuptools.get_requires_for_build_wheel(config_settings))


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None
                                    ) -> list[str]:
    return _with_cython(_setuptools.get_requires_for_build_editable(config_settings))


# get_requires_for_build_sdist is setuptools': an sdist ships the .pyx
# sources (MANIFEST.in) and cythonizes nothing.
