"""Build the compiled core.  RINGLINE_DEBUG=1 builds the debug flavour:
C asserts on the loop's invariants (RL_DEBUG) and Cython linetrace.
RINGLINE_SANITIZE=1 builds the release flavour under AddressSanitizer and
UndefinedBehaviorSanitizer, with symbols (`make asan`; the interpreter is not
instrumented, so the runtime must be preloaded: see the Makefile).

The extension (io_uring) is built on Linux only.  Elsewhere (macOS, Windows),
or on Linux with RINGLINE_PURE=1, the install is pure Python: no compiler and
no Cython are needed, and ringline runs its native API and files on the
portable backend (any asyncio loop; see ringline/backends.py).  The build
requirements follow the same rule (buildsys/ringline_build.py asks for Cython only
when the extension is built)."""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext


def build_extension() -> bool:
    """Whether this build compiles the extension (kept in step with
    buildsys/ringline_build.py's copy)."""
    pure = os.environ.get("RINGLINE_PURE", "") not in ("", "0")
    return sys.platform.startswith("linux") and not pure


DEBUG = os.environ.get("RINGLINE_DEBUG", "") not in ("", "0")
SANITIZE = os.environ.get("RINGLINE_SANITIZE", "") not in ("", "0")
# -O1 keeps the reports' stacks readable; the frame pointer gives ASan's
# fast unwinder whole stacks.  Whether UBSan stops at a finding is the
# runtime's choice (UBSAN_OPTIONS halt_on_error=1 in `make asan`).
SANITIZE_FLAGS = ["-fsanitize=address,undefined",
                  "-fno-omit-frame-pointer", "-g", "-O1"]


def extensions() -> list[Extension]:
    """Every .pyx under src/ringline is one extension module (not yet cythonized)."""
    abi = os.path.join("src", "ringline", "_core", "abi")
    macros = [("RL_DEBUG_BUILD", "1" if DEBUG else "0")]
    cflags = ["-O2", "-g0" if not DEBUG else "-g", "-Wno-unused-function"]
    if DEBUG:
        macros.append(("CYTHON_TRACE_NOGIL", "1"))
    else:
        macros.append(("NDEBUG", "1"))
    if SANITIZE:
        cflags = [f for f in cflags if f not in ("-O2", "-g0")] + SANITIZE_FLAGS
    modules = sorted(
        os.path.relpath(os.path.join(d, f), os.path.join("src", "ringline"))[:-4].replace(os.sep, ".")
        for d, _, files in os.walk(os.path.join("src", "ringline"))
        for f in files
        if f.endswith(".pyx")
    )
    return [
        Extension(
            f"ringline.{name}",
            [os.path.join("src", "ringline", *name.split(".")) + ".pyx"],
            include_dirs=[abi],
            define_macros=macros,
            extra_compile_args=cflags,
            extra_link_args=SANITIZE_FLAGS[:2] if SANITIZE else [],
        )
        for name in modules
    ]


class build_ext(_build_ext):
    """Cythonizes when the extension is really built, so Cython is imported
    here only: pip's get_requires_for_build_* and the sdist run this file
    (and finalize build_ext to list sources) before Cython is installed."""

    def run(self) -> None:
        from Cython.Build import cythonize

        built = {ext.name: ext for ext in cythonize(
            self.extensions,
            compiler_directives={
                "language_level": "3",
                "embedsignature": True,
                "linetrace": DEBUG,
                "boundscheck": False,
                "wraparound": False,
            },
            include_path=["src"],
            build_dir="build/cython-debug" if DEBUG else "build/cython",
        )}
        # The .c files in place of the .pyx, on the Extension objects that
        # finalize_options already prepared.
        for ext in self.extensions:
            ext.sources = built[ext.name].sources
        super().run()


setup(
    ext_modules=extensions() if build_extension() else [],
    cmdclass={"build_ext": build_ext},
)
