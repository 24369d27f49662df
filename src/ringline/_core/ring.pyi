"""Type stubs for the compiled ring module (_core/ring.pyx).

One io_uring instance: setup, the mmap'd SQ/CQ, io_uring_enter and
io_uring_register.  The event loop makes its own ring; ``Ring.open`` is for
tests and tools.
"""

from collections.abc import Iterable

DEFAULT_FLAGS: int
"""COOP_TASKRUN | TASKRUN_FLAG | SINGLE_ISSUER | DEFER_TASKRUN | SUBMIT_ALL."""
SETUP_FLAG_NAMES: dict[int, str]
SETUP_SQPOLL: int
SETUP_SQ_AFF: int
SETUP_COOP_TASKRUN: int
SETUP_TASKRUN_FLAG: int
SETUP_SINGLE_ISSUER: int
SETUP_DEFER_TASKRUN: int
SETUP_SUBMIT_ALL: int
SETUP_SQE128: int
SETUP_R_DISABLED: int
SETUP_CQE32: int
FEAT_NODROP: int
FEAT_EXT_ARG: int
CQE_F_MORE: int
CQE_F_NOTIF: int
CQE_F_BUFFER: int
OPCODES: dict[str, int]
"""Opcode numbers by name (the subset ringline uses)."""
REQUIRED_OPCODES: tuple[str, ...]
"""Opcodes the loop core cannot work without."""

class Ring:
    """One io_uring: setup, mmap'd queues, submission and registration.

    Not constructible directly (``Ring()`` raises TypeError): use
    :meth:`open`, or an event loop's ``ring``.  Only the thread that enabled
    the ring may submit to it (IORING_SETUP_SINGLE_ISSUER).
    """

    @property
    def closed(self) -> bool: ...
    @property
    def sqpoll(self) -> bool: ...
    @property
    def defer_taskrun(self) -> bool: ...
    @property
    def disabled(self) -> bool:
        """Created with IORING_SETUP_R_DISABLED and not yet enabled."""
    @property
    def probe_ops(self) -> frozenset[int]:
        """Opcode numbers the kernel supports (IORING_REGISTER_PROBE)."""
    sqes_submitted: int
    enters: int
    overflow_flushes: int
    sq_full_submits: int
    submit_failures: int
    @classmethod
    def open(
        cls,
        entries: int = 64,
        *,
        cq_entries: int = 0,
        flags: int | None = None,
        sqpoll: bool = False,
        sqpoll_cpu: int = -1,
        sqpoll_idle_ms: int = 1000,
        sqe128: bool = False,
    ) -> Ring:
        """Open a ring directly (tests and tools; the loop makes its own)."""
    def require(self, names: Iterable[str]) -> None:
        """Raise MissingOpcode naming every opcode in ``names`` this kernel lacks."""
    def supports(self, name: str) -> bool:
        """Whether the kernel supports opcode ``name`` (a key of OPCODES)."""
    def register_files_sparse(self, nr: int) -> None:
        """Register an empty fixed-file table of ``nr`` slots."""
    def register_file_alloc_range(self, off: int, length: int) -> None:
        """Make IORING_FILE_INDEX_ALLOC pick slots in [off, off+length)."""
    def enable_here(self) -> None:
        """Enable an R_DISABLED ring; the calling thread becomes its issuer."""
    def close(self) -> None:
        """Unmap the queues and close the ring fd (idempotent)."""
    @property
    def fd(self) -> int: ...
    @property
    def setup_flags(self) -> int: ...
    @property
    def features(self) -> int: ...
    @property
    def sq_entries(self) -> int: ...
    @property
    def cq_entries(self) -> int: ...
    @property
    def cq_overflow(self) -> int:
        """Completions the kernel could not post (stays 0 with FEAT_NODROP)."""
    @property
    def sq_flags(self) -> int: ...
    def sq_space(self) -> int:
        """Free SQ entries."""
    def cq_ready(self) -> int:
        """Completions posted and not yet reaped."""
    def prep_nop(self, user_data: int) -> None:
        """Queue a NOP SQE (submitted by the next submit())."""
    def submit(self, wait_nr: int = 0, timeout: float | None = None) -> int:
        """Submit queued SQEs; optionally wait for ``wait_nr`` completions."""
    def reap(self, max_cqes: int = 0xFFFFFFFF) -> list[tuple[int, int, int]]:
        """Return and consume up to ``max_cqes`` CQEs as (user_data, res, flags)."""
    def flush(self) -> None:
        """Move overflowed completions back into the CQ (after reaping)."""
