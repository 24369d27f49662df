# ringline — `make test` and `make bench` set everything up on a fresh machine.
#
#   make test      venv + release and debug builds + system peers: the whole suite on the
#                  release build, its ringline-loop tests on the debug build (the asyncio,
#                  uvloop and portable-backend runs of a test run once), the pure install's
#                  suite, then a one-minute soak (test-soak)
#   make bench     venv + release build + C tools, every benchmark (echo first: the headline)
#   make test-all  `make test` on CPython 3.11, 3.12 and 3.13
#   make debug     debug build only (RINGLINE_DEBUG: invariant asserts, linetrace)
#   make test-pure the pure-Python install (RINGLINE_PURE=1, no extension) and its suite
#   make lint      ruff + mypy + cython-lint
#   make asan      the extension under AddressSanitizer + UBSan (RINGLINE_SANITIZE=1, -g) in
#                  its own tree, whole suite with the sanitizer runtime preloaded; tests that
#                  cannot run under it are marked no_asan (slow: plan on half an hour or more)
#   make soak SECONDS=300  churn/resets/half-closes/slow readers against both faces, each
#                  server in its own process (bench/soak.py): bytes, fds, connection
#                  counts back to baseline, RSS flat in the second half
#   make conformance  third-party asyncio suites, unchanged, on asyncio/uvloop/ringline
#                     (long; not part of `make test`; CONFORMANCE_ARGS="--suite uvloop --quick")

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
VPY    := $(VENV)/bin/python
PYTEST_ARGS ?=
DEBUG_LIB := build/debug-lib-$(notdir $(VENV))
PURE_LIB  := build/pure-lib-$(notdir $(VENV))
ASAN_LIB  := build/asan-lib-$(notdir $(VENV))
# What runs on a pure-Python install: the portable backend's suite and the
# modules that need no extension (the rest import compiled modules).
PURE_TESTS ?= tests/portable tests/test_pure.py tests/test_config.py tests/test_errors.py \
              tests/test_diagnose.py

SOURCES := $(shell find src/ringline -name '*.pyx' -o -name '*.pxd' -o -name '*.h') setup.py

.PHONY: all venv build debug pure test test-release test-release-aio test-release-rest test-debug test-pure test-all lint bench \
        bench-echo deps clean conformance asan test-asan soak test-soak

all: build

$(VENV)/.stamp: requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.stamp

# Release build, in place: `PYTHONPATH=src` imports it.
$(VENV)/.stamp-build: $(VENV)/.stamp $(SOURCES)
	RINGLINE_DEBUG=0 $(VPY) setup.py -q build_ext --inplace --build-temp build/tmp-release-$(notdir $(VENV))
	touch $@

build: $(VENV)/.stamp-build

# Debug build into its own tree (python sources copied beside the extensions).
$(VENV)/.stamp-debug: $(VENV)/.stamp $(SOURCES) $(shell find src/ringline -name '*.py')
	rm -rf $(DEBUG_LIB)
	RINGLINE_DEBUG=1 $(VPY) setup.py -q build --build-base build/debug-$(notdir $(VENV)) --build-lib $(DEBUG_LIB)
	touch $@

debug: $(VENV)/.stamp-debug

# Sanitizer build into its own tree, like the debug build (setup.py:
# RINGLINE_SANITIZE adds -fsanitize=address,undefined -fno-omit-frame-pointer -g -O1).
$(VENV)/.stamp-asan: $(VENV)/.stamp $(SOURCES) $(shell find src/ringline -name '*.py')
	rm -rf $(ASAN_LIB)
	RINGLINE_SANITIZE=1 $(VPY) setup.py -q build --build-base build/asan-$(notdir $(VENV)) --build-lib $(ASAN_LIB)
	touch $@

# The interpreter is not instrumented, so ASan's runtime is preloaded (it
# must come first).  CPython frees little at exit by design: no leak check.
# PYTHONMALLOC=malloc puts Python objects on ASan's heap, so an overrun of
# an object's buffer is caught too.  Sanitizer reports go to stderr; add
# log_path=... to the options to keep them in files instead.
ASAN_RUNTIME ?= $(shell gcc -print-file-name=libasan.so)
ASAN_ENV = LD_PRELOAD=$(ASAN_RUNTIME) ASAN_OPTIONS=detect_leaks=0 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 PYTHONMALLOC=malloc \
           RINGLINE_ASAN=1 PYTHONPATH=$(ASAN_LIB)

asan: $(VENV)/.stamp-asan deps
	$(MAKE) --no-print-directory test-asan

# --timeout 600: the suite's 120 s per test is too tight for the instrumented build.
test-asan:
	@echo "=== ringline test suite: AddressSanitizer + UBSan build (RINGLINE_SANITIZE) ==="
	$(ASAN_ENV) $(VPY) -m pytest -q --timeout 600 $(PYTEST_ARGS)

# The pure-Python install, the way pip makes it where the extension cannot
# be built (RINGLINE_PURE=1 forces that on Linux): installed into its own
# tree.  pip builds in build/lib: cleared first so that no stale extension
# module from another build can be packed into the wheel.
$(VENV)/.stamp-pure: $(VENV)/.stamp setup.py pyproject.toml MANIFEST.in buildsys/ringline_build.py \
                     $(shell find src/ringline -name '*.py')
	rm -rf $(PURE_LIB) build/lib build/bdist.*
	RINGLINE_PURE=1 $(VPY) -m pip install -q --no-build-isolation --no-deps --no-index \
		--target $(PURE_LIB) .
	touch $@

pure: $(VENV)/.stamp-pure

deps:
	bash scripts/install-deps.sh

# The release pass (in two halves: the asyncio face, the rest) and the debug
# pass run side by side (their tests mostly wait on sockets and timers, so
# two cores carry all three), each one's output printed whole when it ends;
# then the pure install's suite and the soak.
test: build debug pure deps
	$(MAKE) --no-print-directory -j3 --output-sync=target test-release-aio test-release-rest \
		test-debug
	$(MAKE) --no-print-directory test-pure test-soak

test-release-aio:
	@echo "=== ringline test suite: release build, tests/aio ==="
	PYTHONPATH=src $(VPY) -m pytest -q $(PYTEST_ARGS) tests/aio

test-release-rest:
	@echo "=== ringline test suite: release build, all but tests/aio ==="
	PYTHONPATH=src $(VPY) -m pytest -q $(PYTEST_ARGS) --ignore=tests/aio

test-release:
	@echo "=== ringline test suite: release build ==="
	PYTHONPATH=src $(VPY) -m pytest -q $(PYTEST_ARGS)

test-debug:
	@echo "=== ringline test suite: debug build (RINGLINE_DEBUG) ==="
	PYTHONPATH=$(DEBUG_LIB) RINGLINE_EXPECT_DEBUG=1 RINGLINE_TEST_RINGLINE_ONLY=1 \
		$(VPY) -m pytest -q $(PYTEST_ARGS)

test-pure: pure
	@echo "=== ringline test suite: pure-Python install (RINGLINE_PURE) ==="
	PYTHONPATH=$(PURE_LIB) RINGLINE_EXPECT_PURE=1 $(VPY) -m pytest -q $(PYTEST_ARGS) $(PURE_TESTS)

# Soak (bench/soak.py): SECONDS in all, split between the two faces.
SECONDS ?= 300
soak: build
	PYTHONPATH=src $(VPY) bench/soak.py --seconds $(SECONDS)

# The short soak of `make test`: about a minute, both faces.
test-soak: build
	@echo "=== ringline soak: 60 s, both faces ==="
	PYTHONPATH=src $(VPY) bench/soak.py --seconds 60

# pyenv's interpreters when present, else whatever is on PATH.
PYTHON312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12))
PYTHON313 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) $(shell command -v python3.13))

# Every interpreter's suite runs, both builds each (-k), even after a failure;
# the target fails if any of them failed.
test-all:
	@test -n "$(PYTHON312)" || { echo "test-all: no python3.12 (pyenv install 3.12, or set PYTHON312=)" >&2; exit 2; }
	@test -n "$(PYTHON313)" || { echo "test-all: no python3.13 (pyenv install 3.13, or set PYTHON313=)" >&2; exit 2; }
	@rc=0; \
	$(MAKE) --no-print-directory -k test || rc=1; \
	$(MAKE) --no-print-directory -k test VENV=.venv312 PYTHON=$(PYTHON312) || rc=1; \
	$(MAKE) --no-print-directory -k test VENV=.venv313 PYTHON=$(PYTHON313) || rc=1; \
	exit $$rc

lint: venv
	$(VENV)/bin/ruff check src tests bench examples conformance
	$(VENV)/bin/mypy src/ringline
	PATH=$(VENV)/bin:$$PATH $(VENV)/bin/cython-lint $(shell find src/ringline -name '*.pyx' -o -name '*.pxd')

bench: build deps
	$(MAKE) -C bench/c
	PYTHONPATH=src $(VPY) bench/run.py

bench-echo: build deps
	$(MAKE) -C bench/c
	PYTHONPATH=src $(VPY) bench/run.py --echo

# Test-only dependencies of the third-party suites go into the same venv.
$(VENV)/.stamp-conformance: $(VENV)/.stamp conformance/requirements.txt
	$(VPY) -m pip install -q -r conformance/requirements.txt
	touch $@

CONFORMANCE_ARGS ?=
conformance: build $(VENV)/.stamp-conformance
	PYTHONPATH=src $(VPY) conformance/run.py $(CONFORMANCE_ARGS)

clean:
	rm -rf build .venv*/.stamp-* bench/c/build
	find src/ringline -name '*.so' -delete
