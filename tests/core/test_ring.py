"""The ring itself, on the real kernel: NOP batches, a full SQ, CQ overflow, probe."""

import gc
import os

import pytest

from ringline import errors
from ringline._core import ring as _ring
from ringline._core.ring import Ring


@pytest.fixture
def ring():
    r = Ring.open(64)
    yield r
    r.close()


def test_setup_uses_the_default_flags(ring):
    for flag in (_ring.SETUP_COOP_TASKRUN, _ring.SETUP_SINGLE_ISSUER, _ring.SETUP_DEFER_TASKRUN):
        assert ring.setup_flags & flag
    assert ring.features & _ring.FEAT_NODROP
    assert ring.features & _ring.FEAT_EXT_ARG
    assert ring.cq_entries == 2 * ring.sq_entries  # kernel default without CQSIZE


def test_nop_batch_completes_every_tag(ring):
    for i in range(64):
        ring.prep_nop(1000 + i)
    assert ring.submit(wait_nr=64, timeout=5) == 64
    cqes = ring.reap()
    assert sorted(ud for ud, _, _ in cqes) == list(range(1000, 1064))
    assert all(res == 0 for _, res, _ in cqes)
    assert ring.cq_ready() == 0


def test_full_sq_is_submitted_then_retried(ring):
    for i in range(ring.sq_entries):
        ring.prep_nop(i)
    assert ring.sq_space() == 0
    before = ring.sq_full_submits
    ring.prep_nop(ring.sq_entries)  # must submit the full queue, then fit
    assert ring.sq_full_submits == before + 1
    ring.submit(wait_nr=ring.sq_entries + 1, timeout=5)
    assert sorted(ud for ud, _, _ in ring.reap()) == list(range(ring.sq_entries + 1))


def test_cq_overflow_loses_no_completion():
    ring = Ring.open(8, cq_entries=16)
    try:
        total = 80
        for i in range(total):
            ring.prep_nop(i)          # every 9th prep submits the previous 8
        ring.submit()
        assert ring.sq_flags & 2, "expected IORING_SQ_CQ_OVERFLOW with 80 CQEs in a 16-entry CQ"
        seen = []
        for _ in range(100):
            batch = ring.reap()
            seen += [ud for ud, _, _ in batch]
            if len(seen) >= total:
                break
            ring.flush()
        assert sorted(seen) == list(range(total))
        assert ring.cq_overflow == 0  # NODROP: nothing was dropped
    finally:
        ring.close()


def test_probe_lists_the_opcodes_ringline_uses(ring):
    for name in ("NOP", "READ", "TIMEOUT", "ASYNC_CANCEL", "POLL_ADD", "RECV", "SEND",
                 "ACCEPT", "CONNECT", "SEND_ZC", "SENDMSG_ZC", "URING_CMD"):
        assert ring.supports(name), name
    ring.require(_ring.REQUIRED_OPCODES)


def test_missing_opcode_error_names_the_opcodes():
    err = errors.MissingOpcode(["SEND_ZC", "URING_CMD"])
    assert isinstance(err, errors.IoUringUnavailable)
    assert "SEND_ZC" in str(err) and "URING_CMD" in str(err)


def test_closed_ring_refuses_use(ring):
    ring.close()
    with pytest.raises(ValueError):
        ring.prep_nop(1)


def test_sqe128_ring_for_passthrough():
    r = Ring.open(8, sqe128=True)
    try:
        assert r.setup_flags & _ring.SETUP_SQE128 and r.setup_flags & _ring.SETUP_CQE32
        r.prep_nop(7)
        r.submit(wait_nr=1, timeout=5)
        assert [ud for ud, _, _ in r.reap()] == [7]
    finally:
        r.close()


def test_direct_construction_is_refused_and_leaves_fd_0_alone():
    # A refused construction still runs __dealloc__: it must not take the
    # zeroed fd field (0) for the ring's and close stdin.
    saved = os.dup(0)
    r, w = os.pipe()
    os.dup2(r, 0)              # fd 0 is now ours: if it gets closed, nothing else breaks
    os.close(r)
    try:
        with pytest.raises(TypeError):
            Ring()
        gc.collect()
        os.fstat(0)            # raises EBADF if fd 0 was closed
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(w)
