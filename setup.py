"""Build the compiled core.  RINGLINE_DEBUG=1 builds the debug flavour:
C asserts on the loop's invariants (RL_DEBUG) and Cython linetrace.

The extension (io_uring) is built on Linux only.  Elsewhere (macOS, Windows),
or on Linux with RINGLINE_PURE=1, the install is pure Python: no compiler and
no Cython are needed, and ringline runs its native API and files on the
portable backend (any asyncio loop; see ringline/backends.py).  The build
requirements follow the same rule (buildsys/backend.py asks for Cython only
when the extension is built)."""
import os
import sys

from setuptools import Extension, setup


def build_extension() -> bool:
    """Whether this build compiles the extension (kept in step with
    buildsys/backend.py's copy)."""
    pure = os.environ.get("RINGLINE_PURE", "") not in ("", "0")
    return sys.platform.startswith("linux") and not pure


def extensions() -> list[Extension]:
    """Every .pyx under src/ringline, cythonized (Cython imported only here)."""
    from Cython.Build import cythonize

    debug = os.environ.get("RINGLINE_DEBUG", "") not in ("", "0")
    abi = os.path.join("src", "ringline", "_core", "abi")
    macros = [("RL_DEBUG_BUILD", "1" if debug else "0")]
    cflags = ["-O2", "-g0" if not debug else "-g", "-Wno-unused-function"]
    if debug:
        macros.append(("CYTHON_TRACE_NOGIL", "1"))
    else:
        macros.append(("NDEBUG", "1"))

    # Every .pyx under src/ringline is one extension module.
    modules = sorted(
        os.path.relpath(os.path.join(d, f), os.path.join("src", "ringline"))[:-4].replace(os.sep, ".")
        for d, _, files in os.walk(os.path.join("src", "ringline"))
        for f in files
        if f.endswith(".pyx")
    )
    exts = [
        Extension(
            f"ringline.{name}",
            [os.path.join("src", "ringline", *name.split(".")) + ".pyx"],
            include_dirs=[abi],
            define_macros=macros,
            extra_compile_args=cflags,
        )
        for name in modules
    ]
    return cythonize(
        exts,
        compiler_directives={
            "language_level": "3",
            "embedsignature": True,
            "linetrace": debug,
            "boundscheck": False,
            "wraparound": False,
        },
        include_path=["src"],
        build_dir="build/cython-debug" if debug else "build/cython",
    )


setup(ext_modules=extensions() if build_extension() else [])
