"""The native ``Connection`` on any asyncio loop (pure Python).

Same contract as the io_uring ``ringline.Connection`` (see
``ringline/_connection.pyi``), built on an asyncio transport: the connection
is the transport's protocol.

Receiving.  Bytes that arrive while nothing is buffered are kept as the
``bytes`` object the transport handed over (``_head``), so the common
request/response ``recv`` returns it without a copy; anything arriving behind
it goes to a bytearray accumulator (``_acc``, one copy), which is also what
``with_data`` shows ``parse``.  Bytes are consumed only by a resumed
receiver, so a cancelled receive loses nothing.  Reading pauses
(``pause_reading``) when ``Config.recv_accumulator_limit`` bytes are buffered
and resumes below half of it, so TCP flow control reaches the peer.

Sending.  ``transport.write`` keeps call order.  Buffers other than ``bytes``
are copied first (the caller may reuse them at once, as with the ring's send
pool).  The transport's write-buffer limits are the Config's
(``send_queue_limit`` and its low-water mark), so ``pause_writing`` and
``resume_writing`` are exactly when ``drain`` must block and may return.  A
``send`` future resolves at once when the transport had nothing left
unsent; otherwise the limits drop to 0/0 until ``resume_writing`` says
everything went to the kernel, which resolves it (then they are restored).

Compiled.  When the extension is built, ``data_received``, ``recv`` and
``send_nowait`` (the methods marked ``@_compiled``) come from the Cython
base ``_fastconn.Core``, which implements the same logic; a change to one
of them must be made in ``_fastconn.pyx`` as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

from ringline._tls import TLSInfo, info_from
from ringline.config import Config
from ringline.errors import ConnectionClosed, ReceiveLimitExceeded, error_from_errno

try:
    # The per-message path compiled (built with the extension, but no
    # io_uring code in it); the pure install runs the methods below.
    from ringline.portable._fastconn import Core as _Core
    COMPILED = True
except ImportError:
    COMPILED = False

    class _Core:  # type: ignore[no-redef]
        """The pure install's (empty) base: Connection's own methods run."""

        __slots__ = ()

_F = Any


def _compiled(fn: _F) -> _F:
    """``fn`` on the pure install; the compiled base's method of the same
    name (same contract and logic, see ``_fastconn.pyx``) when it is built."""
    return _Core.__dict__.get(fn.__name__, fn) if COMPILED else fn

_get_running_loop = asyncio._get_running_loop


def _check_thread(loop: Any, what: str) -> None:
    """RuntimeError when ``loop`` runs in another thread than the caller's
    (the io_uring loop makes the same check in C; misuse must be loud)."""
    if _get_running_loop() is not loop and loop.is_running():
        raise RuntimeError(
            f"Non-thread-safe operation invoked on an event loop other than the current "
            f"one: {what}() was called from a thread other than the one running the loop; "
            "ringline's connections are not thread-safe: from another thread use "
            "loop.call_soon_threadsafe() or asyncio.run_coroutine_threadsafe()")

__all__ = ["Connection"]

_OPEN, _CLOSING, _CLOSED = 0, 1, 2


def _new_park(loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    """What a waiting receive yields to its Task: a plain asyncio Future
    (C), so the Task's whole wait -- the type and loop checks,
    ``add_done_callback`` -- stays in C.  It is never resolved on the
    per-message path: :func:`_resume` takes the Task's callback back out and
    calls it at once (the park stays pending and is used again), so, as on
    the ring path, a handler's ``recv`` -> ``send_nowait`` runs inside
    ``data_received``, like a Protocol's code: no loop Handle, no extra
    loop iteration per message.  Cancelling the Task cancels the park, which
    wakes it the ordinary way, with CancelledError.
    """
    return asyncio.Future(loop=loop)


def _resume(park: asyncio.Future[None], done: asyncio.Future[None], now: bool,
            loop: asyncio.AbstractEventLoop) -> None:
    """Wake what waits on ``park``: the Task's callback is called with
    ``done`` (a Future finished with None: the C Task reads an exact
    Future's result directly) -- ``now``, synchronously (only from transport
    callbacks, where no Task runs), or through the loop.  A park woken
    through the loop, or with nobody on it yet, is finished, so that a
    cancel arriving before the Task runs is not lost (Task.cancel would
    otherwise take the pending park's cancel() for the whole job)."""
    cbs = park._callbacks      # type: ignore[attr-defined]
    if cbs:
        cb, ctx = cbs[0]
        park.remove_done_callback(cb)
        if now:
            try:
                ctx.run(cb, done)
                return
            except RuntimeError:
                pass        # a Task already running, or its context entered
        park.set_result(None)
        loop.call_soon(cb, done, context=ctx)
    elif not park.done():
        park.set_result(None)


class _Await(tuple):  # type: ignore[type-arg]
    """``(park,)``, awaitable: ``await`` gets the tuple's own C iterator,
    which hands ``park`` to the Task once and then finishes (a Future's own
    ``__await__`` would wait for it to finish, which a park on the
    per-message path never does); a cancellation thrown into it reaches the
    awaiting coroutine directly."""

    __slots__ = ()
    if TYPE_CHECKING:
        def __await__(self) -> Generator[Any, None, None]: ...
    else:
        __await__ = tuple.__iter__


def _as_error(exc: BaseException, what: str) -> BaseException:
    """A transport's OSError as the ring path reports it (error_from_errno)."""
    if isinstance(exc, OSError) and exc.errno:
        return error_from_errno(exc.errno, what)
    return exc


class Connection(_Core, asyncio.Protocol):
    """A TCP (or Unix stream) connection of the portable backend.

    Made by :func:`ringline.serve` and :func:`ringline.connect` when the
    running loop is not a ringline loop; the API and its semantics are those
    of the io_uring :class:`ringline.Connection`.  States: open -> closing
    (``close()``: queued sends drain, then FIN) -> closed (socket closed).
    ``recv``, ``recv_exactly``, ``with_data`` and ``drain`` return
    coroutines: nothing happens until they are awaited.  The
    ``connection_made`` ... ``resume_writing`` methods are the asyncio
    protocol side and are not for applications.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, config: Config, outbound: bool,
                 on_made: Callable[[Connection], None] | None = None,
                 on_lost: Callable[[Connection], None] | None = None,
                 nodelay: bool | None = None) -> None:
        # Limits come from ``config`` (the loop's, as on the ring path, where
        # they belong to the loop's I/O context); ``nodelay`` from the server's.
        self._loop = loop
        self._limit = config.recv_accumulator_limit
        self._high = config.send_queue_limit
        self._low = config.effective_send_queue_low_water
        self._tight = False             # limits at 0/0 while send futures wait
        self._nodelay = config.tcp_nodelay if nodelay is None else nodelay
        self._on_made = on_made
        self._on_lost = on_lost
        self.is_outbound = outbound
        self._transport: Any = None
        self._state = _OPEN
        self._head: bytes | None = None     # invariant: not None only while _acc is empty
        self._acc = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._send_failed = False
        self._shut_requested = False
        self._waiter: asyncio.Future[None] | None = None
        done: asyncio.Future[None] = asyncio.Future(loop=loop)
        done.set_result(None)
        self._done = done                   # what a wake-up hands the Task (see _resume)
        self._park = _new_park(loop)        # reused while pending with no callback
        self._park_aw = _Await((self._park,))
        self._paused_reading = False
        self._writing_paused = False
        self._sent_waiters: list[tuple[asyncio.Future[int], int]] = []
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed_fut: asyncio.Future[None] | None = None
        self._peer: Any = None
        self._local: Any = None
        self._fd = -1
        self._ssl_object: Any = None
        self._tls_info: TLSInfo | None = None

    # ---- asyncio protocol side -------------------------------------------

    def connection_made(self, transport: Any) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses.)
        self._transport = transport
        transport.set_write_buffer_limits(high=self._high, low=self._low)
        self._peer = transport.get_extra_info("peername")
        self._local = transport.get_extra_info("sockname")
        self._ssl_object = transport.get_extra_info("ssl_object")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._fd = sock.fileno()
            if not self._nodelay and sock.family in (socket.AF_INET, socket.AF_INET6):
                # asyncio and uvloop set TCP_NODELAY on every TCP transport.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        if self._on_made is not None:
            self._on_made(self)

    @_compiled
    def data_received(self, data: bytes) -> None:
        if self._head is None and not self._acc:
            # The common case first: nothing buffered.
            self._head = data
            if len(data) >= self._limit and not self._paused_reading:
                self._paused_reading = True
                self._transport.pause_reading()
            w = self._waiter
            if w is not None:
                self._waiter = None
                # _resume(w, self._done, True, self._loop), inlined (the
                # per-message path).
                cbs = w._callbacks
                if cbs:
                    cb, ctx = cbs[0]
                    w.remove_done_callback(cb)
                    try:
                        ctx.run(cb, self._done)
                        return
                    except RuntimeError:
                        pass
                    w.set_result(None)
                    self._loop.call_soon(cb, self._done, context=ctx)
                elif not w.done():
                    w.set_result(None)
            return
        if self._state == _CLOSED:
            return
        if self._head is not None:
            self._acc = bytearray(self._head)   # a kept view pins the old one
            self._head = None
        self._append(data)
        if not self._paused_reading and len(self._acc) >= self._limit:
            self._paused_reading = True
            self._transport.pause_reading()
        self._wake(True)

    def eof_received(self) -> bool:
        self._eof = True
        self._wake(True)
        return True         # half-close: we may still send

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self._error is None:
            self._error = _as_error(exc, "send" if getattr(exc, "errno", 0) == errno.EPIPE
                                    else "recv")
        if exc is not None:
            self._send_failed = True
        self._state = _CLOSED
        self._fd = -1
        if exc is None and not self._send_failed:
            # A graceful close: the transport sent everything first.
            self.resume_writing()
        self._fail_sends(self._error)
        d = self._drain_waiter
        if d is not None and not d.done():
            d.set_result(None)
        if self._closed_fut is not None and not self._closed_fut.done():
            self._closed_fut.set_result(None)
        if self._on_lost is not None:
            self._on_lost(self)
        self._transport = None
        self._wake(True)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        # At or below the low-water mark (0 while _tight: everything was sent).
        self._writing_paused = False
        if self._tight:
            self._tight = False
            waiters, self._sent_waiters = self._sent_waiters, []
            for fut, n in waiters:
                if not fut.done():
                    fut.set_result(n)
            if self._transport is not None:
                self._transport.set_write_buffer_limits(high=self._high, low=self._low)
        d = self._drain_waiter
        if d is not None and not d.done():
            d.set_result(None)

    # ---- receive buffer ------------------------------------------------------

    def _append(self, data: bytes) -> None:
        try:
            self._acc += data
        except BufferError:
            # A view from an earlier parse is still held: leave its bytes be.
            self._acc = bytearray(self._acc)
            self._acc += data

    def _avail(self) -> int:
        h = self._head
        return len(h) if h is not None else len(self._acc)

    def _consumed(self) -> None:
        if self._paused_reading and self._avail() < self._limit // 2:
            self._paused_reading = False
            if self._transport is not None and self._state == _OPEN:
                self._transport.resume_reading()

    def _take(self, n: int) -> bytes:
        h = self._head
        if h is not None:
            if n >= len(h):
                self._head = None
                out = h
            else:
                self._head = h[n:]
                out = h[:n]
        else:
            acc = self._acc
            out = bytes(acc[:n]) if n < len(acc) else bytes(acc)
            if n >= len(acc):
                self._acc = bytearray()
            else:
                try:
                    del acc[:n]
                except BufferError:
                    self._acc = acc[n:]
        self._consumed()
        return out

    def _finished_reading(self) -> bool:
        return self._eof or self._state != _OPEN

    def _wake(self, now: bool = False) -> None:
        """Resume a waiting receive; ``now`` only from transport callbacks."""
        w = self._waiter
        if w is not None:
            self._waiter = None
            _resume(w, self._done, now, self._loop)

    def _new_waiter(self) -> _Await:
        """What a receive awaits until _wake (one receiver at a time)."""
        if self._waiter is not None and not self._waiter.done():
            raise RuntimeError("another coroutine is already waiting for data on this connection")
        w = self._park
        if not w.done() and not w._callbacks:      # type: ignore[attr-defined]
            aw = self._park_aw
        else:
            w = self._park = _new_park(self._loop)
            aw = self._park_aw = _Await((w,))
        self._waiter = w
        w._asyncio_future_blocking = True
        return aw

    def _limit_exceeded(self) -> None:
        exc = ReceiveLimitExceeded(self._limit)
        self._error = exc
        self._abort(exc)
        raise exc

    # ---- receiving -------------------------------------------------------------

    @_compiled
    def recv(self, max_bytes: int = 65536) -> Any:
        """Return up to ``max_bytes`` received bytes (waiting for at least one);
        ``b""`` at end of stream; the stream's error if it ended with one."""
        _check_thread(self._loop, "Connection.recv")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        return self._recv(max_bytes)

    async def _recv(self, n: int) -> bytes:
        # (The per-message path: helpers inlined.)
        while True:
            h = self._head
            if h is not None:
                if n >= len(h) and not self._paused_reading:
                    self._head = None       # hand over what arrived, no copy
                    return h
                return self._take(n if n < len(h) else len(h))
            avail = len(self._acc)
            if avail:
                return self._take(n if n < avail else avail)
            if self._eof or self._state != _OPEN:
                if self._error is not None:
                    raise self._error
                return b""
            w = self._waiter
            if w is not None and not w.done():
                raise RuntimeError("another coroutine is already waiting for data on this "
                                   "connection")
            w = self._park
            if w.done() or w._callbacks:     # type: ignore[attr-defined]
                w = self._park = _new_park(self._loop)
                aw = self._park_aw = _Await((w,))
            else:
                aw = self._park_aw
            self._waiter = w
            w._asyncio_future_blocking = True
            await aw

    def recv_exactly(self, n: int) -> Any:
        """Return exactly ``n`` bytes; IncompleteReadError if the stream ends
        first; ReceiveLimitExceeded if ``n`` cannot be buffered."""
        _check_thread(self._loop, "Connection.recv_exactly")
        if n < 0:
            raise ValueError("n must be >= 0")
        return self._recv_exactly(n)

    async def _recv_exactly(self, n: int) -> bytes:
        while True:
            avail = self._avail()
            if avail >= n:
                return self._take(n)
            if avail >= self._limit:
                self._limit_exceeded()
            if self._finished_reading():
                if self._error is not None:
                    raise self._error
                raise asyncio.IncompleteReadError(self._take(avail), n)
            await self._new_waiter()

    def with_data(self, parse: Callable[[memoryview], int | None]) -> Any:
        """Call ``parse(view)`` on everything buffered until it consumes bytes;
        resolves with the count (0 at end of stream unless it consumed)."""
        _check_thread(self._loop, "Connection.with_data")
        if not callable(parse):
            raise TypeError(f"with_data() needs a callable parse(view), "
                            f"got {type(parse).__name__}")
        return self._with_data(parse)

    async def _with_data(self, parse: Callable[[memoryview], int | None]) -> int:
        while True:
            if self._head is not None:
                self._acc = bytearray(self._head)
                self._head = None
            acc = self._acc
            if acc or self._finished_reading():
                view = memoryview(acc)
                try:
                    res = parse(view)
                finally:
                    try:
                        view.release()
                    except BufferError:
                        # The caller kept a slice: never mutate those bytes.
                        self._acc = bytearray(acc)
                n = 0 if res is None else res
                if n < 0 or n > len(self._acc):
                    raise ValueError(f"parse consumed {n} of {len(self._acc)} bytes")
                if n:
                    if n == len(self._acc):
                        self._acc = bytearray()
                    else:
                        try:
                            del self._acc[:n]
                        except BufferError:
                            self._acc = self._acc[n:]
                    self._consumed()
                    return n
                if self._finished_reading():
                    if self._error is not None and not self._acc:
                        raise self._error
                    return 0
                if len(self._acc) >= self._limit:
                    self._limit_exceeded()
            await self._new_waiter()

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
        return self._avail()

    # ---- sending ---------------------------------------------------------------

    def _check_writable(self) -> Any:
        if self._state != _OPEN or self._send_failed or self._transport is None:
            extra = "" if self._error is None else f" ({self._error})"
            raise ConnectionClosed(f"connection is closed{extra}")
        if self._shut_requested:
            raise ConnectionClosed("shutdown_write() was called on this connection")
        return self._transport

    @staticmethod
    def _payload(data: Any) -> bytes:
        # bytes are immutable; anything else is copied so the caller may reuse it.
        if type(data) is bytes:
            return data
        if isinstance(data, str):
            raise TypeError("a bytes-like object is required, not 'str'")
        return memoryview(data).tobytes()

    @_compiled
    def send_nowait(self, data: Any) -> None:
        """Queue ``data`` behind earlier sends and return at once; raises
        ConnectionClosed after close(), abort(), shutdown_write() or a send error."""
        _check_thread(self._loop, "Connection.send_nowait")
        if self._state or self._send_failed or self._shut_requested:
            self._check_writable()
        if type(data) is not bytes:
            data = self._payload(data)
        if data:
            self._transport.write(data)

    def _sent_future(self, n: int) -> asyncio.Future[int]:
        fut = self._loop.create_future()
        t = self._transport
        if t is None or (t.get_write_buffer_size() == 0 and not t.is_closing()):
            fut.set_result(n)
            return fut
        # (A transport closing after a send error drops writes and keeps its
        # buffer empty: the future waits for connection_lost, which fails it.
        # Resolving it at once let a send loop spin without yielding.)
        self._sent_waiters.append((fut, n))
        if not self._tight:
            # Be told when everything went out (pause_writing comes at once).
            self._tight = True
            t.set_write_buffer_limits(high=0, low=0)
        return fut

    def send(self, data: Any) -> asyncio.Future[int]:
        """Queue ``data``; the future resolves with its byte count once the
        kernel has taken all of it, or fails with the send's error."""
        _check_thread(self._loop, "Connection.send")
        t = self._check_writable()
        payload = self._payload(data)
        if payload:
            t.write(payload)
        return self._sent_future(len(payload))

    def send_parts(self, parts: Iterable[Any]) -> asyncio.Future[int]:
        """Send several buffers back to back as one logical send; resolves
        with the total byte count."""
        _check_thread(self._loop, "Connection.send_parts")
        t = self._check_writable()
        payloads = [self._payload(p) for p in parts]     # all or nothing
        total = 0
        for p in payloads:
            total += len(p)
        if total:
            t.writelines([p for p in payloads if p])
        return self._sent_future(total)

    def send_chain(self, parts: Iterable[Any]) -> asyncio.Future[int]:
        """The io_uring path's linked send chain: ``parts`` written in order,
        as one entry of the connection's send order; resolves with the total
        byte count or fails with the first error.  (Here the parts are
        copied, so they may be reused at once.)"""
        _check_thread(self._loop, "Connection.send_chain")
        t = self._check_writable()
        payloads = [self._payload(p) for p in parts]     # all or nothing
        total = 0
        for p in payloads:
            total += len(p)
        if total:
            t.writelines([p for p in payloads if p])
        return self._sent_future(total)

    def drain(self) -> Any:
        """Wait until queued bytes fall to the low-water mark when more than
        ``Config.send_queue_limit`` are queued; raises the send error if
        sending failed."""
        _check_thread(self._loop, "Connection.drain")
        return self._drain()

    async def _drain(self) -> None:
        t = self._transport
        if t is not None and self._state == _OPEN and t.is_closing():
            # An error is closing the transport (it drops writes meanwhile):
            # wait for connection_lost and its error, so that a send_nowait +
            # drain loop cannot spin without yielding to the loop.
            await self.wait_closed()
        if not (self._error is not None and self._send_failed) and self._must_drain():
            d = self._drain_waiter
            if d is None or d.done():
                d = self._drain_waiter = self._loop.create_future()
            await asyncio.shield(d)
        if self._error is not None and self._send_failed:
            raise self._error

    def _must_drain(self) -> bool:
        return self._state != _CLOSED and self.queued > self._high

    @property
    def queued(self) -> int:
        """Bytes queued for sending and not yet taken by the kernel."""
        t = self._transport
        return 0 if t is None else t.get_write_buffer_size()

    queued_bytes = queued

    def _fail_sends(self, exc: BaseException | None) -> None:
        waiters, self._sent_waiters = self._sent_waiters, []
        for fut, _ in waiters:
            if not fut.done():
                fut.set_exception(
                    exc if exc is not None
                    else ConnectionAbortedError("connection closed before the send"))

    # ---- lifecycle -------------------------------------------------------------

    def shutdown_write(self) -> None:
        """Send FIN after everything queued so far (half-close); receiving goes on."""
        _check_thread(self._loop, "Connection.shutdown_write")
        if self._state == _OPEN and not self._shut_requested and self._transport is not None:
            self._shut_requested = True
            if self._transport.can_write_eof():
                self._transport.write_eof()

    def _shutdown_read(self) -> None:
        """End receiving: a waiting receive sees end of stream once what
        arrived is consumed (the kernel's shutdown(SHUT_RD)); for
        Server.shutdown."""
        if self._state == _OPEN and self._transport is not None:
            sock = self._transport.get_extra_info("socket")
            if sock is not None:
                # uvloop's transport socket refuses shutdown(): borrow the fd.
                raw = socket.socket(fileno=sock.fileno())
                try:
                    with contextlib.suppress(OSError):
                        raw.shutdown(socket.SHUT_RD)
                finally:
                    raw.detach()

    def close(self) -> None:
        """Close gracefully: queued sends drain, then FIN; returns at once."""
        _check_thread(self._loop, "Connection.close")
        if self._state != _OPEN:
            return
        self._state = _CLOSING
        self._wake()
        if self._transport is not None:
            self._transport.close()

    def _abort(self, exc: BaseException) -> None:
        if self._state == _CLOSED:
            return
        self._state = _CLOSING
        if self._error is None:
            self._error = exc
        self._send_failed = True
        self._fail_sends(exc)
        self._wake()
        if self._transport is not None:
            self._transport.abort()

    def abort(self) -> None:
        """Close at once, dropping queued sends (their futures fail with
        ConnectionAbortedError)."""
        _check_thread(self._loop, "Connection.abort")
        self._abort(ConnectionAbortedError("connection aborted"))

    async def wait_closed(self) -> None:
        """Wait until the connection is fully closed."""
        _check_thread(self._loop, "Connection.wait_closed")
        if self._state == _CLOSED:
            return
        if self._closed_fut is None:
            self._closed_fut = self._loop.create_future()
        await asyncio.shield(self._closed_fut)

    @property
    def closing(self) -> bool:
        """Closing or closed (close(), abort() or a fatal error)."""
        return self._state != _OPEN

    @property
    def closed(self) -> bool:
        """The connection is fully closed."""
        return self._state == _CLOSED

    @property
    def peer_addr(self) -> Any:
        """The peer's address as ``socket.getpeername()`` gives it, or None."""
        return self._peer

    @property
    def local_addr(self) -> Any:
        """The local address as ``socket.getsockname()`` gives it, or None."""
        return self._local

    @property
    def fileno(self) -> int:
        """The socket's fd (a property, as on the ring path); -1 once closed."""
        return self._fd

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def fixed(self) -> bool:
        return False

    def with_real_fd(self, fn: Callable[[int], Any]) -> asyncio.Future[Any]:
        """Future of ``fn(fd)`` with this socket's fd."""
        if self._fd < 0:
            raise OSError("stream is closed")
        fut = self._loop.create_future()
        try:
            fut.set_result(fn(self._fd))
        except Exception as exc:
            fut.set_exception(exc)
        return fut

    def tls_info(self) -> TLSInfo | None:
        """The negotiated TLS parameters (see ringline._tls.TLSInfo), or
        None for a plain connection."""
        if self._tls_info is None and self._ssl_object is not None:
            self._tls_info = info_from(self._ssl_object)
        return self._tls_info

    def _set_addresses(self, peer: Any, local: Any) -> None:
        if peer is not None:
            self._peer = peer
        if local is not None:
            self._local = local

    def __repr__(self) -> str:
        st = ("open", "closing", "closed")[self._state]
        return (f"<ringline.portable.Connection fd={self._fd} {st}"
                f"{' outbound' if self.is_outbound else ''}>")
