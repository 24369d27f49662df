"""The one ``Config`` of ringline: every knob, its default and its rule.

Each field is declared together with the rule that validates it (``_int``,
``_flag``, ``_seconds`` below), so a rule is written once and
``Config.__post_init__`` simply runs them all, then the few rules that relate
two fields. Any violation raises :class:`ringline.errors.ConfigError` naming
the field.

Kernel limits the bounds come from (``io_uring/io_uring.h``, ``rsrc.c``):
``IORING_MAX_ENTRIES`` = 32768 SQ entries, ``IORING_MAX_CQ_ENTRIES`` = 65536,
``IORING_MAX_FIXED_FILES`` = 2**20, ``IORING_MAX_REG_BUFFERS`` = 2**14 and at
most 1 GiB per registered buffer.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from .errors import ConfigError

__all__ = ["Config"]

_MAX_SQ_ENTRIES = 32768            # IORING_MAX_ENTRIES
_MAX_CQ_ENTRIES = 65536            # IORING_MAX_CQ_ENTRIES
_MAX_PBUF_ENTRIES = 32768          # buffer ring: power of two < 65536
_MAX_FIXED_FILES = 1 << 20         # IORING_MAX_FIXED_FILES
_MAX_REG_BUFFERS = 1 << 14         # IORING_MAX_REG_BUFFERS
_MAX_REG_BUFFER_SIZE = 1 << 30     # io_buffer_validate(): SZ_1G
_MAX_CONN_INDEX = (1 << 24) - 1    # a sanity bound; the fixed-file table (below) is the real one
_U16 = (1 << 16) - 1
_U32 = (1 << 32) - 1
_I32 = (1 << 31) - 1               # a CQE res is a signed 32-bit count
_MIN_RECV_LIMIT = 16384            # below it recv_exactly of ordinary messages fails


# --------------------------------------------------------------------------
# rules: one per kind of field
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _IntRule:
    """An int field (bools and floats rejected) within ``[lo, hi]``."""

    lo: int
    hi: int | None
    pow2: bool = False
    zero_is_auto: bool = False
    optional: bool = False
    multiple: int = 1

    def check(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            kind = "an int or None" if self.optional else "an int"
            raise ConfigError(name, f"must be {kind}", value)
        if value == 0 and self.zero_is_auto:
            return
        if value < self.lo or (self.hi is not None and value > self.hi):
            top = "" if self.hi is None else f"..{self.hi}"
            bounds = f"in {self.lo}{top}" if top else f">= {self.lo}"
            auto = " (or 0 for auto)" if self.zero_is_auto else ""
            raise ConfigError(name, f"must be {bounds}{auto}", value)
        if self.pow2 and value & (value - 1):
            raise ConfigError(name, "must be a power of two", value)
        if value % self.multiple:
            raise ConfigError(name, f"must be a multiple of {self.multiple}",
                              value)


@dataclasses.dataclass(frozen=True, slots=True)
class _BoolRule:
    """A bool field; ``optional`` admits None (= decided automatically)."""

    optional: bool = False

    def check(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        if not isinstance(value, bool):
            kind = "True, False or None" if self.optional else "True or False"
            raise ConfigError(name, f"must be {kind}", value)


@dataclasses.dataclass(frozen=True, slots=True)
class _SecondsRule:
    """A duration in seconds: a finite int or float > 0."""

    optional: bool = False

    def check(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value <= 0):
            alt = " or None" if self.optional else ""
            raise ConfigError(name, f"must be a finite number of seconds > 0"
                              f"{alt}", value)


@dataclasses.dataclass(frozen=True, slots=True)
class _ChoiceRule:
    """A str field that must be one of ``choices``."""

    choices: tuple[str, ...]

    def check(self, name: str, value: Any) -> None:
        if value not in self.choices:
            raise ConfigError(name, f"must be one of {', '.join(map(repr, self.choices))}",
                              value)


def _choice(default: str, choices: tuple[str, ...]) -> Any:
    return dataclasses.field(default=default, metadata={"rule": _ChoiceRule(choices)})


def _int(default: int | None, lo: int, hi: int | None, *, pow2: bool = False,
         zero_is_auto: bool = False, optional: bool = False,
         multiple: int = 1) -> Any:
    rule = _IntRule(lo, hi, pow2, zero_is_auto, optional, multiple)
    return dataclasses.field(default=default, metadata={"rule": rule})


def _flag(default: bool | None, *, optional: bool = False) -> Any:
    return dataclasses.field(default=default,
                             metadata={"rule": _BoolRule(optional)})


def _seconds(default: float | None, *, optional: bool = False) -> Any:
    return dataclasses.field(default=default,
                             metadata={"rule": _SecondsRule(optional)})


# --------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------

# Provided-buffer ring geometry when left to ringline (None): (count, size)
# with incremental consumption (IOU_PBUF_RING_INC, 6.12+), and without.
AUTO_RECV_BUFFERS_INC = (16, 65536)
AUTO_RECV_BUFFERS_PLAIN = (256, 16384)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Every ringline knob; ``Config()`` is the default configuration.

    Immutable and validated on construction: a bad value raises
    :class:`~ringline.errors.ConfigError` naming the field. Derive variants
    with :meth:`replace`. Int fields reject ``bool`` and ``float``; bool
    fields reject everything but ``True``/``False`` (and ``None`` where it
    means "auto"). Sizes are bytes. Pool sizes are per worker.

    Ring (one io_uring per worker):

    ==================== ======== ===========================================
    field                default  meaning
    ==================== ======== ===========================================
    sq_entries           256      SQ size; power of two, 1..32768
    cq_entries           0        CQ size; 0 = 4 x sq_entries (capped at
                                  65536), else a power of two in
                                  sq_entries..65536 (IORING_SETUP_CQSIZE)
    sqpoll               False    kernel thread polls the SQ (SETUP_SQPOLL)
    sqpoll_idle_ms       1000     SQ thread idle time before it sleeps, ms
    sqpoll_cpu           None     pin the SQ thread to this CPU (SQ_AFF);
                                  needs sqpoll=True
    coop_taskrun         None     SETUP_COOP_TASKRUN; None = auto = not
                                  sqpoll (the kernel refuses it with SQPOLL)
    defer_taskrun        None     SETUP_DEFER_TASKRUN; None = auto = not
                                  sqpoll and single_issuer; True needs
                                  sqpoll=False and single_issuer=True
    single_issuer        True     SETUP_SINGLE_ISSUER (one thread submits)
    ==================== ======== ===========================================

    Receive (provided buffer ring, multishot recv):

    ==================== ======== ===========================================
    recv_buffer_count    None     buffers in the ring; power of two,
                                  1..32768; None = auto: 16 where the
                                  kernel packs receives into buffers
                                  (incremental consumption, 6.12+), else 256
    recv_buffer_size     None     bytes per buffer, 64..1 MiB; None = auto:
                                  65536 with incremental consumption, else
                                  16384 (a ring that fits in L2 and few CQEs
                                  per large message: 64 KiB echo +15%);
                                  auto is capped at recv_accumulator_limit
    recv_buffer_group    0        buffer group id (bgid), 0..65535; the
                                  next id (mod 65536) is the large-receive ring's
    ==================== ======== ===========================================

    Send (copy pool, zero-copy, backpressure):

    ==================== ======== ===========================================
    send_pool_slots      1024     copy-pool slots, 1..65535
    send_pool_slot_size  16384    bytes per slot, 64..16 MiB
    send_zc_threshold    4096     payloads of at least this many bytes go
                                  out with SEND_ZC; 0 disables zero-copy
    send_queue_limit     4 MiB    bytes queued per connection above which
                                  ``drain()`` blocks (high-water mark)
    send_queue_low_water None     bytes at which ``drain()`` resumes; None =
                                  send_queue_limit // 4; must be <= limit
    ==================== ======== ===========================================

    Connections:

    ====================== ======= ==========================================
    max_connections        16000   connection slots, 1..2**24-1; together
                                   with file_slots must fit the 2**20-entry
                                   fixed-file table
    backlog                1024    listen(2) backlog
    reuse_port             False   SO_REUSEPORT on listening sockets: off,
                                   a second serve() of a port in use fails
                                   with EADDRINUSE (as asyncio's
                                   create_server); True lets several
                                   listeners share the port (launch_workers
                                   sets it)
    tcp_nodelay            True    TCP_NODELAY on every TCP socket
    recv_accumulator_limit 16 MiB  received-but-unconsumed bytes per native
                                   connection: reading pauses there (TCP
                                   backpressure reaches the peer); a handler
                                   that needs more than this in one piece
                                   gets ReceiveLimitExceeded and the
                                   connection is closed; >= recv_buffer_size
    connect_timeout        None    seconds for an outbound connect; None =
                                   no timeout
    raise_fd_limit         False   opt-in: when the RLIMIT_NOFILE soft limit
                                   is below the fixed-file table
                                   (max_connections + file_slots), raise it
                                   (up to the hard limit) for the whole
                                   process; off, the native face uses plain
                                   fds instead and leaves the limit alone
    ====================== ======= ==========================================

    Workers:

    ==================== ======== ===========================================
    workers              0        worker processes; 0 = one per CPU this
                                  process may run on (``effective_workers``)
    pin_to_core          True     pin worker i to CPU core_offset + i
    core_offset          0        first CPU used for pinning
    shutdown_timeout     5.0      seconds graceful shutdown lets queued
                                  sends drain before closing
    ==================== ======== ===========================================

    Files (O_DIRECT, NVMe passthrough):

    ====================== ======= ==========================================
    registered_buffers     0       O_DIRECT buffers registered with the ring
                                   (IORING_REGISTER_BUFFERS), 0..16384
    registered_buffer_size 1 MiB   bytes per registered buffer; a multiple
                                   of 4096, at most 1 GiB
    file_slots             64      fixed-file slots reserved for files
    nvme_cmds_in_flight    256     NVMe passthrough commands in flight,
                                   1..65535
    ====================== ======= ==========================================

    Memory:

    ===================== ======= ==========================================
    malloc_trim_threshold 0       opt-in: glibc's M_TRIM_THRESHOLD, set
                                  once per process by the first loop
                                  made with it > 0 (with M_MMAP_THRESHOLD
                                  = 1 MiB), so freed memory at the top
                                  of the heap is kept for reuse; 0 (the
                                  default) leaves malloc alone, as does
                                  a malloc setting in the environment
                                  (GLIBC_TUNABLES, MALLOC_*_) or a libc
                                  other than glibc.  Received buffers
                                  are recycled by the loop itself (a
                                  spare pool per buffer ring), which is
                                  what keeps 64 KiB echo free of page
                                  faults without it
    ===================== ======= ==========================================

    Backend (see :mod:`ringline.backends`):

    ==================== ======== ===========================================
    backend              "auto"   "uring": io_uring or the typed error;
                                  "portable": the native API and files on
                                  uvloop/asyncio; "auto": io_uring when the
                                  kernel allows it, else portable with one
                                  warning. Non-auto overrides
                                  RINGLINE_BACKEND
    ==================== ======== ===========================================

    Debugging:

    ==================== ======== ===========================================
    debug                False    the loop starts in asyncio debug mode
                                  (slow-callback warnings, tracebacks of
                                  where handles and futures were made)
    ==================== ======== ===========================================

    TLS (the asyncio face's ``ssl=``):

    ==================== ======== ===========================================
    tls                  "auto"   "ringline": the compiled TLS transport
                                  (``aio/tls.pyx``); "asyncio": asyncio's
                                  pure-Python ``sslproto`` on the ring
                                  transport; "auto": $RINGLINE_TLS if set,
                                  else "ringline"
    ktls                 None     kernel TLS after the handshake; None =
                                  where available and measured to pay,
                                  False = never, True = required where
                                  possible (see ``ringline.aio.tls.
                                  ktls_status()``: not available yet)
    tls_handshake_timeout 10.0    seconds a native TLS handshake
                                  (``serve``/``connect`` with ``ssl=``) may
                                  take; then TLSHandshakeTimeout (client) or
                                  a counted close (server)
    tls_shutdown_timeout  5.0     seconds ``close()`` of a native TLS
                                  connection waits for its close_notify
                                  and queued sends to leave before aborting
    ==================== ======== ===========================================
    """

    # ring
    sq_entries: int = _int(256, 1, _MAX_SQ_ENTRIES, pow2=True)
    cq_entries: int = _int(0, 1, _MAX_CQ_ENTRIES, pow2=True, zero_is_auto=True)
    sqpoll: bool = _flag(False)
    sqpoll_idle_ms: int = _int(1000, 0, _U32)
    sqpoll_cpu: int | None = _int(None, 0, _U32, optional=True)
    coop_taskrun: bool | None = _flag(None, optional=True)
    defer_taskrun: bool | None = _flag(None, optional=True)
    single_issuer: bool = _flag(True)
    # provided buffer ring
    recv_buffer_count: int | None = _int(None, 1, _MAX_PBUF_ENTRIES, pow2=True, optional=True)
    recv_buffer_size: int | None = _int(None, 64, 1 << 20, optional=True)
    recv_buffer_group: int = _int(0, 0, _U16)
    # send
    send_pool_slots: int = _int(1024, 1, _U16)
    send_pool_slot_size: int = _int(16384, 64, 1 << 24)
    send_zc_threshold: int = _int(4096, 0, _I32)
    send_queue_limit: int = _int(4 * 1024 * 1024, 1, None)
    send_queue_low_water: int | None = _int(None, 0, None, optional=True)
    # connections
    max_connections: int = _int(16000, 1, _MAX_CONN_INDEX)
    backlog: int = _int(1024, 1, _I32)
    reuse_port: bool = _flag(False)
    tcp_nodelay: bool = _flag(True)
    recv_accumulator_limit: int = _int(16 * 1024 * 1024, 1, None)
    connect_timeout: float | None = _seconds(None, optional=True)
    raise_fd_limit: bool = _flag(False)
    # workers
    workers: int = _int(0, 0, None)
    pin_to_core: bool = _flag(True)
    core_offset: int = _int(0, 0, None)
    shutdown_timeout: float = _seconds(5.0)
    # files
    registered_buffers: int = _int(0, 0, _MAX_REG_BUFFERS)
    registered_buffer_size: int = _int(1 << 20, 4096, _MAX_REG_BUFFER_SIZE,
                                       multiple=4096)
    file_slots: int = _int(64, 0, _U16)
    nvme_cmds_in_flight: int = _int(256, 1, _U16)
    # memory
    malloc_trim_threshold: int = _int(0, 0, _I32)
    # backend
    backend: str = _choice("auto", ("auto", "uring", "portable"))
    # debugging
    debug: bool = _flag(False)
    # TLS
    tls: str = _choice("auto", ("auto", "ringline", "asyncio"))
    ktls: bool | None = _flag(None, optional=True)
    tls_handshake_timeout: float = _seconds(10.0)
    tls_shutdown_timeout: float = _seconds(5.0)
    # Private switches, for tests that cover the paths a kernel or host
    # would pick otherwise (not part of the public configuration):
    # native connections on the fixed-file table when the kernel allows it;
    _fixed_files: bool = _flag(True)
    # incremental provided buffers (6.12+) when the kernel has them;
    _recv_buffers_incremental: bool = _flag(True)
    # SEND_ZC even to a peer on this host (where a copying send is cheaper).
    _zc_to_local_peers: bool = _flag(False)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            f.metadata["rule"].check(f.name, getattr(self, f.name))
        self._check_relations()

    def _check_relations(self) -> None:
        """Rules that involve two fields; each names the dependent field."""
        if self.cq_entries and self.cq_entries < self.sq_entries:
            raise ConfigError("cq_entries", f"must be 0 (auto) or >= "
                              f"sq_entries ({self.sq_entries})",
                              self.cq_entries)
        if self.sqpoll_cpu is not None and not self.sqpoll:
            raise ConfigError("sqpoll_cpu", "needs sqpoll=True",
                              self.sqpoll_cpu)
        if self.sqpoll and self.coop_taskrun:
            raise ConfigError("coop_taskrun", "cannot be True with "
                              "sqpoll=True (the kernel refuses COOP_TASKRUN "
                              "with SQPOLL); leave it None", True)
        if self.sqpoll and self.defer_taskrun:
            raise ConfigError("defer_taskrun", "cannot be True with "
                              "sqpoll=True (the kernel refuses DEFER_TASKRUN "
                              "with SQPOLL); leave it None", True)
        if self.defer_taskrun and not self.single_issuer:
            raise ConfigError("defer_taskrun", "needs single_issuer=True",
                              True)
        if (self.send_queue_low_water is not None
                and self.send_queue_low_water > self.send_queue_limit):
            raise ConfigError("send_queue_low_water", f"must be <= "
                              f"send_queue_limit ({self.send_queue_limit})",
                              self.send_queue_low_water)
        # (An auto recv_buffer_size is capped at the limit instead.)
        if (self.recv_buffer_size is not None
                and self.recv_accumulator_limit < self.recv_buffer_size):
            raise ConfigError("recv_accumulator_limit", f"must be >= "
                              f"recv_buffer_size ({self.recv_buffer_size})",
                              self.recv_accumulator_limit)
        if self.recv_accumulator_limit < _MIN_RECV_LIMIT:
            raise ConfigError("recv_accumulator_limit", f"must be >= {_MIN_RECV_LIMIT}: "
                              f"recv_exactly(n)/with_data needing more than the limit in "
                              f"one piece fail with ReceiveLimitExceeded, so a smaller "
                              f"limit breaks ordinary message sizes",
                              self.recv_accumulator_limit)
        # Settings that would be silently ignored.
        if self.core_offset and not self.pin_to_core:
            raise ConfigError("core_offset", "needs pin_to_core=True (it is the first "
                              "CPU workers are pinned to)", self.core_offset)
        if self.max_connections + self.file_slots > _MAX_FIXED_FILES:
            raise ConfigError("max_connections", f"plus file_slots "
                              f"({self.file_slots}) must fit the "
                              f"{_MAX_FIXED_FILES}-entry fixed-file table",
                              self.max_connections)

    def replace(self, **changes: Any) -> Config:
        """Return a validated copy with ``changes`` applied.

        Raises ``TypeError`` for an unknown field name and ``ConfigError``
        for a bad value.
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"Config has no field(s) {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    # ---- resolved "auto" values -------------------------------------------

    @property
    def effective_cq_entries(self) -> int:
        """CQ size to request: ``cq_entries``, or 4 x SQ capped at 65536."""
        return self.cq_entries or min(4 * self.sq_entries, _MAX_CQ_ENTRIES)

    @property
    def effective_coop_taskrun(self) -> bool:
        """Whether to set IORING_SETUP_COOP_TASKRUN."""
        if self.coop_taskrun is None:
            return not self.sqpoll
        return self.coop_taskrun

    @property
    def effective_defer_taskrun(self) -> bool:
        """Whether to set IORING_SETUP_DEFER_TASKRUN."""
        if self.defer_taskrun is None:
            return not self.sqpoll and self.single_issuer
        return self.defer_taskrun

    @property
    def effective_send_queue_low_water(self) -> int:
        """Bytes at which a blocked ``drain()`` resumes."""
        if self.send_queue_low_water is None:
            return self.send_queue_limit // 4
        return self.send_queue_low_water

    @property
    def effective_workers(self) -> int:
        """Worker count: ``workers``, or the CPUs this process may run on."""
        if self.workers:
            return self.workers
        try:
            return len(os.sched_getaffinity(0)) or 1
        except (AttributeError, OSError):
            return os.cpu_count() or 1
