# Flow-control rules the asyncio face's transports share (tcp.pyx, udp.pyx,
# tls.pyx), written once: asyncio's write-buffer limits, the protocol's
# pause_writing/resume_writing calls, and StreamReader's own pause past
# twice its limit when a transport feeds it in place.

cdef inline tuple write_limits(high, low):
    """set_write_buffer_limits(high, low) as asyncio's transports take it:
    (high, low) with the 64 KiB default and the same ValueError."""
    if high is None:
        high = 64 * 1024 if low is None else 4 * low
    if low is None:
        low = high // 4
    if not high >= low >= 0:
        raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
    return high, low


cdef inline call_protocol_flow(loop, protocol, transport, bint pause):
    """protocol.pause_writing() / resume_writing(); an exception other than
    SystemExit/KeyboardInterrupt goes to the loop's exception handler."""
    try:
        if pause:
            protocol.pause_writing()
        else:
            protocol.resume_writing()       # may write more, closing or not
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        loop.call_exception_handler({
            "message": ("protocol.pause_writing() failed" if pause
                        else "protocol.resume_writing() failed"),
            "exception": exc, "transport": transport, "protocol": protocol})


cdef inline reader_fed(reader, Py_ssize_t size):
    """After bytes went onto an asyncio StreamReader's buffer (now ``size``
    bytes) without feed_data: its own pause once past twice its limit."""
    if size > 2 * reader._limit and reader._transport is not None and not reader._paused:
        try:
            reader._transport.pause_reading()
        except NotImplementedError:
            reader._transport = None
        else:
            reader._paused = True
