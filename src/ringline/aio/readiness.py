# mypy: disable-error-code="attr-defined,override"
# (asyncio's private selector-loop API is not in typeshed)
"""asyncio's readiness-based machinery on the ring.

``RingSelector`` is a ``selectors`` object whose register/modify/unregister
arm and cancel IORING_OP_POLL_ADD requests (``ringline.aio.poll``) instead of
editing an epoll set, and whose events are delivered by CQEs: nothing ever
calls ``select()``, the loop waits on its ring.  With it, the Python
implementations of ``asyncio.selector_events.BaseSelectorEventLoop`` and
``asyncio.unix_events._UnixSelectorEventLoop`` work unchanged on a ringline
loop: add_reader/add_writer, the sock_* methods, UDP, Unix sockets, pipes,
TCP through the selector transports, signal handlers.

``ReadinessLoop`` is the part of ringline's EventLoop that adapts those
classes to the compiled loop core: their ``__init__`` is not called (it would
install a Python ready queue), the self-pipe is only created when a signal
handler needs it, callbacks from Python code go to the compiled ready queue,
and child processes are watched through a pidfd polled on the ring (on every
supported Python version, instead of the policy's child watcher).
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import sys
import threading
import types
import warnings
import weakref
from asyncio import unix_events
from asyncio.log import logger
from typing import Any

from ringline.aio import poll as _poll

__all__ = ["ReadinessLoop", "RingSelector"]


class RingSelector(selectors._BaseSelectorImpl):  # type: ignore[name-defined,misc]
    """A selector whose interest set lives in the loop's io_uring.

    Only for the asyncio loop that owns it: ``data`` must be asyncio's
    ``(reader_handle, writer_handle)`` pair, and readiness is delivered by
    running those handles from the loop's ready queue, never by ``select()``.
    """

    def __init__(self, loop: Any, *, multishot: bool = False) -> None:
        super().__init__()
        self._poller = _poll.Poller(loop, multishot)

    @property
    def closed(self) -> bool:
        return bool(self._poller.closed)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = super().register(fileobj, events, data)
        try:
            self._poller.set(key.fd, events, data)
        except BaseException:
            super().unregister(fileobj)
            raise
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        key = super().unregister(fileobj)
        self._poller.set(key.fd, 0, None)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        try:
            key = self._fd_to_key[self._fileobj_lookup(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        if (not events) or (events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE)):
            raise ValueError(f"Invalid events: {events!r}")
        self._poller.set(key.fd, events, data)
        key = key._replace(events=events, data=data)
        self._fd_to_key[key.fd] = key
        return key

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        raise RuntimeError("a ringline loop waits on its io_uring; RingSelector.select() "
                           "is never used")

    def close(self, cancel: bool = True) -> None:
        """Forget every registration and cancel the armed polls (``cancel``
        False: the caller may not submit to the ring; the loop abandons them).

        The (now empty) map stays readable, so a late ``_remove_reader``
        during the rest of the loop's close finds nothing instead of failing;
        registering raises."""
        self._poller.close(cancel)
        self._fd_to_key.clear()
        # The base class's map refers back to this selector: a cycle that
        # would keep the closed loop's ring alive until the collector runs.
        self._map: Any = types.MappingProxyType({})

    def watch(self, fd: int) -> Any:
        """The ring-side state of ``fd`` (tests, diagnostics)."""
        return self._poller.watch(fd)


class ReadinessLoop(unix_events._UnixSelectorEventLoop):  # type: ignore[name-defined,misc]
    """asyncio's selector/Unix event loop methods, adapted to the ring.

    Mixed into ringline.EventLoop after the compiled core; never instantiated
    on its own.  ``_init_readiness`` stands in for the __init__ chain of
    BaseSelectorEventLoop/_UnixSelectorEventLoop and must run before anything
    else touches the attributes they would set.
    """

    _selector: RingSelector | None

    def _init_readiness_attrs(self) -> None:
        # Attributes first (close() and __del__ rely on them even if the ring
        # could not be created).
        self._selector = None
        self._ssock: socket.socket | None = None
        self._csock: socket.socket | None = None
        self._transports: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self._signal_handlers: dict[int, Any] = {}
        self._unix_server_sockets: dict[Any, Any] = {}   # 3.13 keeps socket inodes here
        self._child_pidfds: dict[int, int] = {}          # pidfd -> pid

    def _init_readiness(self) -> None:
        self._selector = RingSelector(self)
        logger.debug("Using selector: %s", type(self._selector).__name__)

    # -- the self-pipe: only for signal.set_wakeup_fd -------------------------

    def _make_self_pipe(self) -> None:
        # Cross-thread wake-ups use the core's eventfd; the socketpair exists
        # only because signal.set_wakeup_fd() writes one byte per signal.
        if self._ssock is not None:
            return
        self._ssock, self._csock = socket.socketpair()
        self._ssock.setblocking(False)
        self._csock.setblocking(False)
        self._internal_fds += 1
        self._add_reader(self._ssock.fileno(), self._read_from_self)

    def _close_self_pipe(self) -> None:
        if self._ssock is None:
            return
        sel = self._selector
        if sel is not None and not sel.closed:
            self._remove_reader(self._ssock.fileno())
        self._ssock.close()
        self._ssock = None
        if self._csock is not None:
            self._csock.close()
            self._csock = None
        self._internal_fds -= 1

    def _write_to_self(self) -> None:
        _poll.wakeup(self)

    def _add_callback(self, handle: Any) -> None:
        # asyncio Handles (signal handlers) onto the compiled ready queue.
        if not handle._cancelled:
            _poll.call_handle_soon(self, handle)

    def _add_callback_signalsafe(self, handle: Any) -> None:
        self._add_callback(handle)
        self._write_to_self()

    def _process_events(self, event_list: Any) -> None:
        raise RuntimeError("ringline delivers readiness from CQEs")

    def _sock_accept(self, fut: Any, sock: Any) -> None:
        # asyncio's own lacks the check its _sock_recv & co. have: a readiness
        # callback already queued when the awaiting task was cancelled would
        # accept a connection that nobody receives (the fd leaks, and
        # set_result raises InvalidStateError into the exception handler).
        if fut.done():
            return
        super()._sock_accept(fut, sock)  # type: ignore[misc]

    # -- signals ----------------------------------------------------------------

    def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:
        self._check_signal(sig)
        self._check_closed()
        if threading.current_thread() is not threading.main_thread():
            # What signal.set_wakeup_fd() would say, before the self-pipe is
            # made: only the main thread may install signal handlers.
            raise RuntimeError("set_wakeup_fd only works in main thread of the main interpreter")
        self._make_self_pipe()
        super().add_signal_handler(sig, callback, *args)

    def _remove_all_signal_handlers(self) -> None:
        if not self._signal_handlers:
            return
        if sys.is_finalizing():
            warnings.warn(f"Closing the loop {self!r} on interpreter shutdown "
                          f"stage, skipping signal handlers removal",
                          ResourceWarning, stacklevel=2, source=self)
            self._signal_handlers.clear()
            return
        for sig in list(self._signal_handlers):
            try:
                self.remove_signal_handler(sig)
            except (ValueError, RuntimeError, OSError) as exc:
                # signal.signal() works in the main thread only.
                logger.warning("could not restore the handler of signal %d: %s", sig, exc)
                self._signal_handlers.pop(sig, None)

    # -- child processes: a pidfd polled on the ring ----------------------------

    async def _make_subprocess_transport(self, protocol: Any, args: Any, shell: bool,
                                         stdin: Any, stdout: Any, stderr: Any,
                                         bufsize: int, extra: Any = None,
                                         **kwargs: Any) -> Any:
        waiter = self.create_future()
        transp = unix_events._UnixSubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize,
            waiter=waiter, extra=extra, **kwargs)
        self._watch_child(transp.get_pid(), transp)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

    def _watch_child(self, pid: int, transp: Any) -> None:
        """Report the child's exit to ``transp``: its pidfd becomes readable
        when it exits, and that readiness is a POLL_ADD on the ring."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            # Already reaped by someone else (a foreign SIGCHLD handler).
            self.call_soon(self._child_done, pid, transp, None)
            return
        except OSError:
            # No pidfds here (seccomp, out of fds): a thread waits instead.
            self._wait_child_in_thread(pid, transp)
            return
        self._child_pidfds[pidfd] = pid
        try:
            self._add_reader(pidfd, self._child_ready, pid, pidfd, transp)
        except BaseException:
            del self._child_pidfds[pidfd]
            os.close(pidfd)
            self._wait_child_in_thread(pid, transp)

    def _child_ready(self, pid: int, pidfd: int, transp: Any) -> None:
        self._remove_reader(pidfd)
        del self._child_pidfds[pidfd]
        os.close(pidfd)
        try:
            wpid, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            wpid, status = pid, None
        if wpid == 0:   # pragma: no cover - a readable pidfd means it has exited
            self._wait_child_in_thread(pid, transp)
            return
        self._child_done(pid, transp, status)

    def _wait_child_in_thread(self, pid: int, transp: Any) -> None:
        def wait() -> None:
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                status = None
            try:
                self.call_soon_threadsafe(self._child_done, pid, transp, status)
            except RuntimeError:    # the loop was closed meanwhile
                pass

        threading.Thread(target=wait, name=f"ringline-waitpid-{pid}", daemon=True).start()

    def _child_done(self, pid: int, transp: Any, status: int | None) -> None:
        if transp._returncode is not None:
            return
        returncode: int | None
        if status is not None:
            returncode = os.waitstatus_to_exitcode(status)
        else:
            proc = getattr(transp, "_proc", None)
            returncode = getattr(proc, "returncode", None)
            if returncode is None:
                logger.warning("child process pid %d exit status already read: "
                               "will report returncode 255", pid)
                returncode = 255
        if self.get_debug():
            logger.debug("process %s exited with returncode %s", pid, returncode)
        transp._process_exited(returncode)

    def _close_children(self) -> None:
        for pidfd in list(self._child_pidfds):
            sel = self._selector
            if sel is not None and not sel.closed:
                self._remove_reader(pidfd)
            del self._child_pidfds[pidfd]
            try:
                os.close(pidfd)
            except OSError as exc:   # pragma: no cover
                if exc.errno != errno.EBADF:
                    raise

    # -- close --------------------------------------------------------------------

    def _close_readiness(self, owner: bool) -> None:
        """Everything the readiness layer owns, before the core drains the ring:
        signal handlers (and the wakeup fd) first, then child pidfds, then the
        selector (its armed polls are cancelled; the drain reaps them), then the
        self-pipe."""
        sel = self._selector
        try:
            self._remove_all_signal_handlers()
        finally:
            try:
                if sel is not None and not owner:
                    sel.close(cancel=False)   # not the ring's thread: submit nothing
                try:
                    self._close_children()
                finally:
                    self._close_self_pipe()
            finally:
                if sel is not None and not sel.closed:
                    sel.close(cancel=True)
        # The closed selector stays: late _remove_reader calls find nothing.
