"""Healthy echo traffic that runs next to a fault (the fault-matrix tests).

Each healthy connection streams a deterministic byte stream (SHAKE-256 of a
seed and a block number, in blocks of seeded sizes) to an echo server while
reading the echo back, and compares every received byte with the stream at
its offset: one lost, duplicated or reordered byte is a mismatch at a known
offset.  A writer and a reader run concurrently, so many blocks are in flight
at once (not lockstep).

Two kinds of client, so that a fault on the loop under test cannot hide in
the client:

* :class:`ThreadClients`: blocking sockets in threads (independent of every
  event loop);
* :func:`loop_clients`: coroutines on the running loop, given an ``open``
  coroutine that returns (send, recv, close) for one connection (native
  ``ringline.connect`` or asyncio streams).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.net import HOST, IO_TIMEOUT

#: Upper bound of one block of the stream (block sizes are 1..BLOCK_MAX).
BLOCK_MAX = 48 << 10
#: Pause after each block sent (seconds): healthy traffic keeps flowing (a
#: few MB/s per connection, many blocks in flight) without taking the CPU
#: the fault needs.
PACE = 0.003


def block(seed: int, k: int) -> bytes:
    """Block ``k`` of stream ``seed``: its size and bytes depend on both."""
    h = hashlib.shake_256(b"%d:%d" % (seed, k))
    size = 1 + int.from_bytes(h.digest(3), "little") % BLOCK_MAX
    return hashlib.shake_256(b"data %d:%d" % (seed, k)).digest(size)


class Stream:
    """The expected bytes of stream ``seed``, consumed in any chunking."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.k = 0
        self.buf = b""
        self.offset = 0
        self.sha = hashlib.sha256()

    def next_block(self) -> bytes:
        data = block(self.seed, self.k)
        self.k += 1
        return data

    def check(self, got: bytes) -> None:
        """``got`` must be the next ``len(got)`` bytes of the stream."""
        while len(self.buf) < len(got):
            self.buf += self.next_block()
        want, self.buf = self.buf[:len(got)], self.buf[len(got):]
        if got != want:
            bad = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
            raise AssertionError(f"stream {self.seed}: wrong byte at offset {self.offset + bad}")
        self.offset += len(got)
        self.sha.update(got)


@dataclass
class Result:
    """What one healthy connection sent and got back."""

    seed: int
    sent: int = 0
    received: int = 0
    sent_sha: Any = field(default_factory=hashlib.sha256)
    recv_sha: str = ""
    error: BaseException | None = None

    @property
    def exact(self) -> bool:
        return (self.error is None and self.sent == self.received
                and self.sent_sha.hexdigest() == self.recv_sha)


def assert_exact(results: list[Result], min_bytes: int) -> None:
    """Every healthy connection got back exactly what it sent (same SHA-256),
    at least ``min_bytes`` of it."""
    for r in results:
        assert r.error is None, f"healthy stream {r.seed} failed: {r.error!r}"
        assert r.exact, (f"healthy stream {r.seed}: sent {r.sent}, got {r.received}, "
                         f"sha {r.sent_sha.hexdigest()} vs {r.recv_sha}")
        assert r.sent >= min_bytes, f"healthy stream {r.seed} moved only {r.sent} bytes"


class ThreadClients:
    """``n`` healthy connections to ``port`` from blocking sockets in threads.

    :meth:`start` connects them and starts streaming; :meth:`finish` (after
    ``stop``) ends each stream with a FIN once at least ``min_bytes`` went
    out, reads the echo to EOF and returns the :class:`Result` list.  Run
    :meth:`finish` off the loop thread (``asyncio.to_thread``) when the
    server is on this thread's loop.
    """

    def __init__(self, port: int, n: int, seed0: int = 1000, min_bytes: int = 1 << 20,
                 host: str = HOST, pace: float = PACE) -> None:
        self.port, self.n, self.host, self.pace = port, n, host, pace
        self.min_bytes = min_bytes
        self.seeds = [seed0 + i for i in range(n)]
        self.stop = threading.Event()
        self.results = [Result(s) for s in self.seeds]
        self.threads: list[threading.Thread] = []

    def start(self) -> ThreadClients:
        for r in self.results:
            t = threading.Thread(target=self._one, args=(r,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _one(self, r: Result) -> None:
        try:
            s = socket.create_connection((self.host, self.port), timeout=IO_TIMEOUT)
        except BaseException as exc:
            r.error = exc
            return
        s.settimeout(IO_TIMEOUT)

        def writer() -> None:
            src = Stream(r.seed)
            try:
                while not (self.stop.is_set() and r.sent >= self.min_bytes):
                    data = src.next_block()
                    s.sendall(data)
                    r.sent += len(data)
                    r.sent_sha.update(data)
                    time.sleep(self.pace)
                s.shutdown(socket.SHUT_WR)
            except BaseException as exc:
                r.error = r.error or exc

        w = threading.Thread(target=writer, daemon=True)
        w.start()
        want = Stream(r.seed)
        try:
            while chunk := s.recv(1 << 16):
                want.check(chunk)
                r.received += len(chunk)
        except BaseException as exc:
            r.error = r.error or exc
        finally:
            w.join(IO_TIMEOUT)
            s.close()
        r.recv_sha = want.sha.hexdigest()

    def finish(self, timeout: float = 20.0) -> list[Result]:
        """Stop streaming, wait for every echo to end; the results."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise AssertionError("a healthy connection never finished")
        return self.results


Send = Callable[[bytes], Awaitable[Any]]
Recv = Callable[[], Awaitable[bytes]]
Opener = Callable[[], Awaitable[tuple[Send, Recv, Callable[[], Any], Callable[[], Any]]]]


class LoopClients:
    """``n`` healthy connections as tasks on the running loop.

    ``opener()`` returns ``(send, recv, end, close)`` for one new
    connection: ``send(data)`` writes (with backpressure), ``recv()``
    returns the next bytes or ``b""`` at EOF, ``end()`` half-closes (FIN),
    ``close()`` closes.  :func:`native_opener` and :func:`aio_opener` make
    them.
    """

    def __init__(self, opener: Opener, n: int, seed0: int = 2000,
                 min_bytes: int = 1 << 20, pace: float = PACE) -> None:
        self.opener, self.n, self.min_bytes, self.pace = opener, n, min_bytes, pace
        self.stop = asyncio.Event()
        self.results = [Result(seed0 + i) for i in range(n)]
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> LoopClients:
        self.tasks = [asyncio.ensure_future(self._one(r)) for r in self.results]
        return self

    async def _one(self, r: Result) -> None:
        try:
            send, recv, end, close = await self.opener()
        except BaseException as exc:
            r.error = exc
            return

        async def writer() -> None:
            src = Stream(r.seed)
            while not (self.stop.is_set() and r.sent >= self.min_bytes):
                data = src.next_block()
                await send(data)
                r.sent += len(data)
                r.sent_sha.update(data)
                await asyncio.sleep(self.pace)
            res = end()
            if asyncio.iscoroutine(res):
                await res

        want = Stream(r.seed)
        w = asyncio.ensure_future(writer())
        try:
            while chunk := await recv():
                want.check(chunk)
                r.received += len(chunk)
            await w
        except BaseException as exc:
            r.error = exc
            w.cancel()
        finally:
            close()
        r.recv_sha = want.sha.hexdigest()

    async def finish(self, timeout: float = 20.0) -> list[Result]:
        self.stop.set()
        async with asyncio.timeout(timeout):
            await asyncio.gather(*self.tasks)
        return self.results


def native_opener(port: int, host: str = HOST) -> Opener:
    """Healthy connections made with ``ringline.connect``."""
    import ringline

    async def opener() -> Any:
        conn = await ringline.connect(host, port)

        async def send(data: bytes) -> None:
            conn.send_nowait(data)
            await conn.drain()

        return send, lambda: conn.recv(1 << 16), conn.shutdown_write, conn.close

    return opener


def aio_opener(port: int, host: str = HOST) -> Opener:
    """Healthy connections made with ``asyncio.open_connection``."""

    async def opener() -> Any:
        reader, writer = await asyncio.open_connection(host, port)

        async def send(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        return send, lambda: reader.read(1 << 16), writer.write_eof, writer.close

    return opener
