"""Metrics: a snapshot of one loop's ring and stream counters.

``ringline.metrics.snapshot(loop)`` (or ``snapshot()`` inside a running
ringline loop) returns a frozen :class:`LoopStatistics`.  Counters only
grow; take two snapshots and subtract to get rates.
"""

from __future__ import annotations

import asyncio
import dataclasses

__all__ = ["LoopStatistics", "snapshot"]


@dataclasses.dataclass(frozen=True, slots=True)
class LoopStatistics:
    """Counters of one ringline event loop.

    iterations        loop iterations run
    waits             iterations that blocked in io_uring_enter
    enters            io_uring_enter calls (submits + waits)
    sqes              SQEs prepared
    cqes              CQEs reaped
    stale_cqes        CQEs dropped because their slot had moved on (normal)
    slots_live        operations in flight now
    overflow_flushes  times completions were pulled back from the CQ overflow list
    sq_full_submits   times the SQ was full and was submitted early to make room
    submit_failures   io_uring_enter calls that failed: interrupted (EINTR), told
                      to reap first (EBUSY/EAGAIN, retried on the next pass) or
                      raised; and SQs still full after a submit (RingFull)
    streams           open TCP/Unix streams on the ring
    enobufs           multishot receives that found the provided-buffer ring empty
    recv_buffers_handed_out
                      receives handed over as their whole provided buffer (no copy)
    recv_buffers_reused
                      handed-over buffers taken back for the ring once nothing
                      held them any more (instead of a new allocation)
    recv_large_switches
                      streams moved onto the large-receive ring or back
    send_pool_free    free send-pool slots now
    send_pool_exhausted
                      sends refused with SendPoolExhausted (a copy needed more
                      free send-pool slots than there were)
    table_full        accepts/connects that found the fixed-file table full
    bytes_in          bytes received on streams
    bytes_out         bytes the kernel took from stream sends
    udp_datagrams_in  datagrams delivered to native UDP sockets
    udp_datagrams_out datagrams the kernel took from native UDP sends
    udp_dropped       datagrams dropped because a UDP socket's receive queue was full
    tls_handshakes    native TLS handshakes completed
    tls_handshake_failures
                      native TLS handshakes that failed or timed out
    addresses_unknown accepted native connections whose handler started with
                      peer_addr/local_addr None: no process fd to read them
                      (EMFILE/ENFILE for ADDRESS_RETRY_FOR, native/serve.py)
    file_ops          file operations completed (ringline.fs), failed ones included
    file_errors       file operations that failed
    """

    iterations: int
    waits: int
    enters: int
    sqes: int
    cqes: int
    stale_cqes: int
    slots_live: int
    overflow_flushes: int
    sq_full_submits: int = 0
    submit_failures: int = 0
    streams: int = 0
    enobufs: int = 0
    recv_buffers_handed_out: int = 0
    recv_buffers_reused: int = 0
    recv_large_switches: int = 0
    send_pool_free: int = 0
    send_pool_exhausted: int = 0
    table_full: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    udp_datagrams_in: int = 0
    udp_datagrams_out: int = 0
    udp_dropped: int = 0
    tls_handshakes: int = 0
    tls_handshake_failures: int = 0
    addresses_unknown: int = 0
    file_ops: int = 0
    file_errors: int = 0

    def syscalls_per(self, other: LoopStatistics, events: int) -> float:
        """io_uring_enter calls per event between ``other`` (earlier) and self."""
        return (self.enters - other.enters) / events if events else 0.0


def snapshot(loop: asyncio.AbstractEventLoop | None = None) -> LoopStatistics:
    """Counters of ``loop`` (default: the running loop).  On the portable
    backend (any other asyncio loop) the same fields: ``streams`` counts the
    native API's open connections, ``file_ops``/``file_errors`` the
    ``ringline.fs`` operations on it, the ring's counters are 0."""
    from ringline.aio.eventloop import EventLoop

    if loop is None:
        loop = asyncio.get_running_loop()
    if not isinstance(loop, EventLoop):
        from ringline.portable import _fileops, statistics
        files = _fileops.file_statistics(loop)
        return LoopStatistics(iterations=0, waits=0, enters=0, sqes=0, cqes=0, stale_cqes=0,
                              slots_live=0, overflow_flushes=0,
                              streams=statistics(loop)["streams"],
                              file_ops=files["file_ops"], file_errors=files["file_errors"])
    s = loop.statistics()
    fields = {f.name for f in dataclasses.fields(LoopStatistics)}
    values = {k: v for k, v in s.items() if k in fields}
    io = loop._net_state
    if io is not None:
        values.update({k: v for k, v in io.statistics().items() if k in fields})
    return LoopStatistics(**values)
