"""Build the compiled core.  RINGLINE_DEBUG=1 builds the debug flavour:
C asserts on the loop's invariants (RL_DEBUG) and Cython linetrace."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("RINGLINE_DEBUG", "") not in ("", "0")
ABI = os.path.join("src", "ringline", "_core", "abi")

macros = [("RL_DEBUG_BUILD", "1" if DEBUG else "0")]
cflags = ["-O2", "-g0" if not DEBUG else "-g", "-Wno-unused-function"]
if DEBUG:
    macros.append(("CYTHON_TRACE_NOGIL", "1"))
else:
    macros.append(("NDEBUG", "1"))

# Every .pyx under src/ringline is one extension module.
MODULES = sorted(
    os.path.relpath(os.path.join(d, f), os.path.join("src", "ringline"))[:-4].replace(os.sep, ".")
    for d, _, files in os.walk(os.path.join("src", "ringline"))
    for f in files
    if f.endswith(".pyx")
)

extensions = [
    Extension(
        f"ringline.{name}",
        [os.path.join("src", "ringline", *name.split(".")) + ".pyx"],
        include_dirs=[ABI],
        define_macros=macros,
        extra_compile_args=cflags,
    )
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "embedsignature": True,
            "linetrace": DEBUG,
            "boundscheck": False,
            "wraparound": False,
        },
        include_path=["src"],
        build_dir="build/cython-debug" if DEBUG else "build/cython",
    ),
)
