"""Drop-in parity (issue 17): behaviours where ringline must match asyncio.

Each test runs once per loop (asyncio's SelectorEventLoop as the reference,
uvloop, ringline) on real loopback sockets; whatever it asserts holds on
asyncio and uvloop alike.  Covered here:

* connection_lost after close()/abort() comes on the next loop iteration
  (with an empty write buffer), or once the buffer is flushed;
* protocol callbacks run in a copy of the contextvars context that called
  create_server / create_connection / connect_accepted_socket (plain, TLS,
  BufferedProtocol), and what they set does not leak back;
* write() then abort(): the bytes the socket had room for reach the peer;
* a burst of writes the socket takes at once does not pause the protocol;
* callbacks ready before I/O arrived run before that I/O's callbacks;
* ``-X dev`` and ``PYTHONASYNCIODEBUG=1`` turn debug mode on;
* from uvloop's and CPython's suites: handles' source tracebacks in debug
  mode and weak references to handles, loop.sendfile()'s bare-write guard
  and fallback, create_connection returning before the first data, pipe
  transports after loop.close(), a closing transport taking writes until
  flushed (TLS close_notify from the peer), a datagram endpoint on a
  socketpair, a cancelled create_connection(sock=...).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import shutil
import socket
import ssl
import subprocess
import sys

import pytest

from tests.support import run_on
from tests.support.loops import LOOP_FACTORY_SPECS

pytestmark = pytest.mark.timeout(60)

LOCAL = "127.0.0.1"
IO = 5.0
MIB = 1 << 20

var = contextvars.ContextVar("var", default="unset")
leak = contextvars.ContextVar("leak", default="unset")


def run(loop, coro, timeout=20.0):
    return run_on(loop, coro, timeout)


async def iterations(n=10):
    for _ in range(n):
        await asyncio.sleep(0)


class _Rec:
    """Records each protocol call as (name, var.get()) and sets ``leak``."""

    def __init__(self, loop, on_data=None, on_made=None):
        self.loop = loop
        self.calls: list[tuple[str, str]] = []
        self.data = bytearray()
        self.transport = None
        self.on_data = on_data
        self.on_made = on_made
        self.lost = loop.create_future()
        self.eof = loop.create_future()

    def _rec(self, name):
        self.calls.append((name, var.get()))
        leak.set("protocol")

    def connection_made(self, transport):
        self._rec("made")
        self.transport = transport
        if self.on_made is not None:
            self.on_made(self, transport)

    def eof_received(self):
        self._rec("eof")
        if not self.eof.done():
            self.eof.set_result(None)

    def connection_lost(self, exc):
        self._rec("lost")
        if not self.lost.done():
            self.lost.set_result(exc)

    def names(self):
        return [c[0] for c in self.calls]

    def values(self):
        return {c[1] for c in self.calls}


class Recorder(_Rec, asyncio.Protocol):
    def data_received(self, data):
        self._rec("data")
        self.data += data
        if self.on_data is not None:
            self.on_data(self, data)


class BufRecorder(_Rec, asyncio.BufferedProtocol):
    def __init__(self, loop):
        _Rec.__init__(self, loop)
        self.buf = bytearray(256)

    def get_buffer(self, sizehint):
        self._rec("get_buffer")
        return self.buf

    def buffer_updated(self, nbytes):
        self._rec("buffer_updated")
        self.data += self.buf[:nbytes]


async def read_all(sock_reader):
    out = bytearray()
    while True:
        chunk = await sock_reader.read(65536)
        if not chunk:
            return bytes(out)
        out += chunk


# ---------------------------------------------------------------------------
# 1. connection_lost timing after close() / abort()
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "write-close", "abort", "write-abort", "eof"])
def test_connection_lost_on_next_iteration(loop, how):
    """asyncio: close() with nothing buffered (a small write() went straight
    to the socket), abort(), and EOF all schedule connection_lost with
    call_soon: it runs before a callback the protocol schedules right after."""
    seen = []

    def on_data(proto, data):
        t = proto.transport
        if how.startswith("write"):
            t.write(b"bye")
        if how == "eof":
            return          # eof_received returns None: the transport closes itself
        if how.endswith("close"):
            t.close()
        else:
            t.abort()
        loop.call_soon(lambda: seen.append(proto.lost.done()))

    async def main():
        protos = []

        def factory():
            p = Recorder(loop, on_data=on_data)
            protos.append(p)
            return p

        srv = await loop.create_server(factory, LOCAL, 0)
        port = srv.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(LOCAL, port)
        writer.write(b"hi")
        if how == "eof":
            writer.write_eof()
            await asyncio.wait_for(protos[0].eof, IO)
            loop.call_soon(lambda: seen.append(protos[0].lost.done()))
        got = await asyncio.wait_for(read_all(reader), IO)
        await asyncio.wait_for(protos[0].lost, IO)
        writer.close()
        srv.close()
        await srv.wait_closed()
        return got

    got = run(loop, main())
    assert seen == [True]
    assert got == (b"bye" if how.startswith("write") else b"")


def test_connection_lost_after_flush(loop):
    """close() with more than the socket takes: the rest is flushed first,
    connection_lost(None) follows, and the peer gets every byte."""
    payload = os.urandom(16 * MIB)
    buffer_at_lost = []

    async def main():
        lost_seen = []
        proto_box = []

        class P(Recorder):
            def connection_lost(self, exc):
                buffer_at_lost.append(self.transport.get_write_buffer_size())
                Recorder.connection_lost(self, exc)

        def factory():
            p = P(loop)
            proto_box.append(p)
            return p

        srv = await loop.create_server(factory, LOCAL, 0)
        port = srv.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(LOCAL, port, limit=4 * MIB)
        while not proto_box or proto_box[0].transport is None:
            await asyncio.sleep(0)
        p = proto_box[0]
        p.transport.write(payload)
        p.transport.close()
        loop.call_soon(lambda: lost_seen.append(p.lost.done()))
        await iterations(3)
        got = await asyncio.wait_for(read_all(reader), 10)
        exc = await asyncio.wait_for(p.lost, IO)
        writer.close()
        srv.close()
        await srv.wait_closed()
        return got, exc, lost_seen

    got, exc, lost_seen = run(loop, main())
    assert lost_seen == [False]          # not before the buffer is flushed
    assert exc is None
    assert buffer_at_lost == [0]
    assert len(got) == len(payload) and got == payload


def test_socket_released_after_early_connection_lost(loop):
    """connection_lost may now come before the kernel has let go of the
    socket; the socket still gets closed and the peer still sees EOF."""

    async def main():
        protos = []

        socks = []

        def factory():
            p = Recorder(loop, on_data=lambda pr, d: pr.transport.close(),
                         on_made=lambda pr, t: socks.append(t.get_extra_info("socket")))
            protos.append(p)
            return p

        srv = await loop.create_server(factory, LOCAL, 0)
        port = srv.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(LOCAL, port)
        writer.write(b"x")
        await asyncio.wait_for(protos[0].lost, IO)
        sock = socks[0]
        assert await asyncio.wait_for(reader.read(10), IO) == b""
        for _ in range(200):
            if sock.fileno() == -1:
                break
            await asyncio.sleep(0.005)
        writer.close()
        srv.close()
        await srv.wait_closed()
        return sock.fileno()

    assert run(loop, main()) == -1


# ---------------------------------------------------------------------------
# 2. Protocol callbacks run in the creator's context
# ---------------------------------------------------------------------------


async def _in_task(value, coro_fn):
    async def job():
        var.set(value)
        return await coro_fn()
    return await asyncio.create_task(job())


def _check_ctx(proto, value, required, ignore=()):
    names = proto.names()
    for name in required:
        assert name in names, (name, proto.calls)
    assert {v for n, v in proto.calls if n not in ignore} == {value}, proto.calls


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("buffered", [False, True], ids=["protocol", "buffered"])
def test_callbacks_run_in_creator_context(loop, loop_name, tls, buffered, tls_certs):
    server_ctx = client_ctx = None
    if tls:
        server_ctx, client_ctx = tls_certs

    async def main():
        leak.set("main")
        sprotos, cprotos = [], []
        kind = BufRecorder if buffered else Recorder

        def sfactory():
            p = kind(loop)
            sprotos.append(p)
            return p

        def cfactory():
            p = kind(loop)
            cprotos.append(p)
            return p

        srv = await _in_task("server", lambda: loop.create_server(
            sfactory, LOCAL, 0, ssl=server_ctx))
        port = srv.sockets[0].getsockname()[1]
        var.set("main-after")       # later changes are not seen (a copy)
        tr, cp = await _in_task("client", lambda: loop.create_connection(
            cfactory, LOCAL, port, ssl=client_ctx,
            server_hostname="localhost" if tls else None))
        tr.write(b"ping")
        while not sprotos or len(sprotos[0].data) < 4:
            await asyncio.sleep(0.001)
        sprotos[0].transport.write(b"pong")
        while len(cp.data) < 4:
            await asyncio.sleep(0.001)
        if not tls:
            tr.write_eof()
            await asyncio.wait_for(sprotos[0].eof, IO)
        sprotos[0].transport.close()
        await asyncio.wait_for(sprotos[0].lost, IO)
        await asyncio.wait_for(cp.lost, IO)
        srv.close()
        await srv.wait_closed()
        if not buffered:
            # Nothing a callback set leaked here.  (asyncio's TLS layer may
            # call get_buffer from inside a write() of the caller's.)
            assert leak.get() == "main"
        return sprotos[0], cp

    sp, cp = run(loop, main())
    data = ["get_buffer", "buffer_updated"] if buffered else ["data"]
    # asyncio's TLS layer also asks a BufferedProtocol for a buffer from
    # inside the caller's own calls (in the caller's context).
    ignore = ("get_buffer",) if tls and buffered else ()
    _check_ctx(sp, "server", ["made", *data, "lost"] + ([] if tls else ["eof"]), ignore)
    _check_ctx(cp, "client", ["made", *data, "lost"], ignore)


def test_connect_accepted_socket_context(loop):
    async def main():
        lsock = socket.create_server((LOCAL, 0))
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        reader, writer = await asyncio.open_connection(LOCAL, port)
        conn, _ = await loop.sock_accept(lsock)
        lsock.close()
        box = []

        def factory():
            p = Recorder(loop)
            box.append(p)
            return p

        await _in_task("accepted", lambda: loop.connect_accepted_socket(factory, conn))
        writer.write(b"hello")
        writer.write_eof()
        await asyncio.wait_for(box[0].eof, IO)
        await asyncio.wait_for(box[0].lost, IO)
        writer.close()
        return box[0]

    p = run(loop, main())
    _check_ctx(p, "accepted", ["made", "data", "eof", "lost"])


def test_resume_writing_in_creator_context(loop):
    """resume_writing, called when a send completion drains the buffer."""
    payload = os.urandom(8 * MIB)

    class P(Recorder):
        def pause_writing(self):
            self._rec("pause")

        def resume_writing(self):
            self._rec("resume")

    def made(p, t):
        t.set_write_buffer_limits(high=1024)
        t.write(payload)
        t.close()

    async def main():
        box = []

        def factory():
            p = P(loop, on_made=made)
            box.append(p)
            return p

        srv = await _in_task("server", lambda: loop.create_server(factory, LOCAL, 0))
        port = srv.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(LOCAL, port)
        got = await asyncio.wait_for(read_all(reader), 10)
        await asyncio.wait_for(box[0].lost, IO)
        writer.close()
        srv.close()
        await srv.wait_closed()
        assert got == payload
        return box[0]

    p = run(loop, main())
    _check_ctx(p, "server", ["made", "pause", "resume", "lost"])


@pytest.fixture(scope="module")
def tls_certs(tmp_path_factory):
    exe = shutil.which("openssl")
    if exe is None:
        pytest.skip("needs the openssl program")
    d = tmp_path_factory.mktemp("parity-tls")
    key, cert = str(d / "key.pem"), str(d / "cert.pem")
    subprocess.run(
        [exe, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True, timeout=60)
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(cert, key)
    cctx = ssl.create_default_context(cafile=cert)
    return sctx, cctx


# ---------------------------------------------------------------------------
# 3. write() then abort()
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1000, 64 * 1024])
def test_write_then_abort_delivers_what_fit(loop, size):
    payload = os.urandom(size)

    async def main():
        srv = await loop.create_server(
            lambda: Recorder(loop, on_made=lambda p, t: (t.write(payload), t.abort())),
            LOCAL, 0)
        port = srv.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(LOCAL, port)
        got = await asyncio.wait_for(read_all(reader), IO)
        writer.close()
        srv.close()
        await srv.wait_closed()
        return got

    assert run(loop, main()) == payload


class _PauseCounter(asyncio.Protocol):
    def __init__(self):
        self.pauses = 0

    def pause_writing(self):
        self.pauses += 1


def test_burst_the_socket_takes_does_not_pause(loop):
    """48 writes of 1 KiB in one callback, high-water mark 32 KiB: asyncio's
    write() hands each to the kernel, which takes them all, so its protocol
    is never paused.  ringline queues writes for the ring, and before it
    pauses it hands the queue to the kernel the same way.  (A pause asyncio
    would not make breaks code that allows one drainer at a time, e.g.
    websockets' legacy protocol, test_apps.py.)"""
    piece = os.urandom(1024)

    async def main():
        got = bytearray()
        done = loop.create_future()

        async def sink(reader, writer):
            while len(got) < 48 * 1024:
                data = await reader.read(65536)
                if not data:
                    break
                got.extend(data)
            done.set_result(None)
            writer.close()

        srv = await asyncio.start_server(sink, LOCAL, 0)
        port = srv.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(_PauseCounter, LOCAL, port)
        transport.set_write_buffer_limits(high=32 * 1024)
        for _ in range(48):
            transport.write(piece)
        pauses = proto.pauses
        await asyncio.wait_for(done, IO)
        transport.close()
        srv.close()
        await srv.wait_closed()
        return pauses, bytes(got)

    pauses, got = run(loop, main())
    assert got == piece * 48
    assert pauses == 0


def test_ready_callbacks_run_before_the_io_that_arrived_meanwhile(loop):
    """A callback scheduled while the loop is not running, and data that
    arrives meanwhile: the callback runs first (asyncio's _run_once runs the
    ready batch, I/O callbacks appended after it; uvloop's idle handler runs
    before its poll).  A task started before its data arrives has set up
    its waiter by then (CPython 3.13's
    test_datagram_send_to_non_listening_address)."""
    order = []

    class P(asyncio.Protocol):
        def data_received(self, data):
            order.append(("data", data))

    async def connect():
        a, b = socket.socketpair()
        transport, _ = await loop.create_connection(P, sock=a)
        await iterations()
        return transport, b

    transport, peer = run(loop, connect())
    try:
        peer.sendall(b"ping")
        loop.call_soon(order.append, ("callback", None))
        run(loop, iterations(20))
        assert order == [("callback", None), ("data", b"ping")]
    finally:
        transport.close()
        peer.close()
        run(loop, iterations())


def test_write_then_abort_drops_what_did_not_fit(loop):
    """More than the socket can take: a prefix arrives, the rest is dropped,
    and connection_lost(None) comes on the next iteration."""
    payload = os.urandom(64 * MIB)

    async def main():
        protos = []

        def made(p, t):
            t.write(payload)
            t.abort()
            loop.call_soon(lambda: protos.append(p.lost.done()))

        srv = await loop.create_server(lambda: Recorder(loop, on_made=made), LOCAL, 0)
        port = srv.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(LOCAL, port)
        try:
            got = await asyncio.wait_for(read_all(reader), IO)
        except ConnectionResetError:
            got = None
        writer.close()
        srv.close()
        await srv.wait_closed()
        return got, protos

    got, protos = run(loop, main())
    assert protos == [True]
    if got is not None:
        assert 0 < len(got) < len(payload)
        assert payload.startswith(got)


# ---------------------------------------------------------------------------
# 5. -X dev and PYTHONASYNCIODEBUG turn debug mode on
# ---------------------------------------------------------------------------

_DEBUG_PROBE = """
import asyncio, importlib, sys
mod, _, attr = sys.argv[1].partition(":")
factory = getattr(importlib.import_module(mod), attr)
loop = factory()
print(loop.get_debug())
loop.close()
async def main():
    return asyncio.get_running_loop().get_debug()
with asyncio.Runner(loop_factory=factory) as r:
    print(r.run(main()))
"""


@pytest.mark.parametrize("how", ["plain", "-X dev", "PYTHONASYNCIODEBUG", "-E env"])
def test_debug_mode_from_interpreter(loop_name, how):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    args = [sys.executable]
    if how == "-X dev":
        args += ["-X", "dev"]
    elif how == "PYTHONASYNCIODEBUG":
        env["PYTHONASYNCIODEBUG"] = "1"
    elif how == "-E env":
        # -E ignores the environment: PYTHONASYNCIODEBUG has no effect.
        env["PYTHONASYNCIODEBUG"] = "1"
        args += ["-E"]
    if how == "-E env":
        # PYTHONPATH is ignored as well: pass the path in the program.
        prog = f"import sys; sys.path[:0] = {sys.path!r}\n" + _DEBUG_PROBE
    else:
        prog = _DEBUG_PROBE
    out = subprocess.run(args + ["-c", prog, LOOP_FACTORY_SPECS[loop_name]],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    expected = "False" if how in ("plain", "-E env") else "True"
    assert out.stdout.split() == [expected, expected], out.stdout



# ---------------------------------------------------------------------------
# 4. Handles: source tracebacks in debug mode, weak references
# ---------------------------------------------------------------------------


def _last_frame(handle):
    frame = handle._source_traceback[-1]
    return frame[0], frame[1]


def test_handle_source_traceback_ends_at_the_caller(loop):
    loop.set_debug(True)
    here = os.path.abspath(__file__)
    h1 = loop.call_soon(lambda: None); line1 = sys._getframe().f_lineno  # noqa: E702
    h2 = loop.call_later(10, lambda: None); line2 = sys._getframe().f_lineno  # noqa: E702
    h3 = loop.call_at(loop.time() + 10, lambda: None); line3 = sys._getframe().f_lineno  # noqa: E702
    for h, line in ((h1, line1), (h2, line2), (h3, line3)):
        fname, lineno = _last_frame(h)
        assert (os.path.abspath(fname), lineno) == (here, line), h._source_traceback[-3:]
        assert f"created at {fname}:{lineno}" in repr(h)
        h.cancel()


def test_exception_handler_gets_the_source_traceback(loop, loop_exceptions):
    loop.set_debug(True)

    def boom():
        raise ValueError("boom")

    h = loop.call_soon(boom); line = sys._getframe().f_lineno  # noqa: E702
    loop.call_soon(loop.stop)
    loop.run_forever()
    [ctx] = loop_exceptions.take()
    assert isinstance(ctx["exception"], ValueError)
    assert ctx["handle"] is h
    fname, lineno = ctx["source_traceback"][-1][:2]
    assert (os.path.abspath(fname), lineno) == (os.path.abspath(__file__), line)


def test_slow_callback_warning_names_where_it_was_scheduled(loop, caplog):
    import logging
    import time

    caplog.set_level(logging.WARNING, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05
    loop.call_soon(time.sleep, 0.08)
    loop.call_soon(loop.stop)
    loop.run_forever()
    msgs = [r.getMessage() for r in caplog.records if "Executing" in r.getMessage()]
    assert msgs and "test_parity.py" in msgs[0], msgs


def test_handles_are_weakly_referenceable(loop):
    import weakref

    h = loop.call_soon(lambda: None)
    th = loop.call_later(10, lambda: None)
    refs = [weakref.ref(h), weakref.ref(th)]
    assert refs[0]() is h and refs[1]() is th
    h.cancel()
    th.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    del h, th
    import gc

    gc.collect()
    assert [r() for r in refs] == [None, None]


# ---------------------------------------------------------------------------
# 4. loop.sendfile(): bare write() refused, the fallback path
# ---------------------------------------------------------------------------


def _needs_sendfile(loop_name):
    if loop_name == "uvloop":
        pytest.skip("uvloop has no loop.sendfile (NotImplementedError)")


class Sink(asyncio.Protocol):
    def __init__(self, loop, close_after=None):
        self.data = bytearray()
        self.close_after = close_after
        self.done = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data
        if self.close_after is not None and len(self.data) >= self.close_after:
            self.transport.close()

    def eof_received(self):
        pass

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(None)


async def _sendfile_pair(loop, **sink_kw):
    box = []

    def factory():
        box.append(Sink(loop, **sink_kw))
        return box[-1]

    srv = await loop.create_server(factory, LOCAL, 0)
    port = srv.sockets[0].getsockname()[1]
    client = Sink(loop)
    tr, _ = await loop.create_connection(lambda: client, LOCAL, port)
    while not box:
        await asyncio.sleep(0)
    return srv, tr, client, box[0]


def test_write_during_sendfile_is_refused(loop, loop_name, tmp_path):
    _needs_sendfile(loop_name)
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(16 * MIB))

    async def main():
        srv, tr, _, sink = await _sendfile_pair(loop)
        with open(path, "rb") as f:
            task = asyncio.ensure_future(loop.sendfile(tr, f))
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError, match="sendfile is in progress"):
                tr.write(b"bare")
            sent = await asyncio.wait_for(task, 10)
        tr.close()
        await asyncio.wait_for(sink.done, IO)
        srv.close()
        await srv.wait_closed()
        return sent, bytes(sink.data)

    sent, got = run(loop, main())
    assert sent == 16 * MIB and got == path.read_bytes()


@pytest.mark.parametrize("source", ["forced", "bytesio"])
def test_sendfile_fallback(loop, loop_name, tmp_path, source):
    """The copy-through-write() fallback: forced (native refused), or a
    file object without a descriptor (io.BytesIO)."""
    import io

    _needs_sendfile(loop_name)
    payload = os.urandom(3 * MIB + 123)

    async def main():
        if source == "forced":
            from asyncio import base_events

            def refuse(transp, file, offset, count):
                return base_events.BaseEventLoop._sendfile_native(
                    loop, transp, file, offset, count)

            loop._sendfile_native = refuse
            path = tmp_path / "blob"
            path.write_bytes(payload)
            f = open(path, "rb")  # noqa: SIM115
        else:
            f = io.BytesIO(payload)
        srv, tr, client, sink = await _sendfile_pair(loop)
        with f:
            sent = await asyncio.wait_for(loop.sendfile(tr, f, 100), 10)
            pos = f.tell()
        assert tr.get_protocol() is client          # given back
        tr.write(b"tail")                           # writable again
        tr.close()
        await asyncio.wait_for(sink.done, IO)
        srv.close()
        await srv.wait_closed()
        return sent, pos, bytes(sink.data)

    sent, pos, got = run(loop, main())
    assert sent == len(payload) - 100 and pos == len(payload)
    assert got == payload[100:] + b"tail"


def test_sendfile_fallback_peer_closes(loop, loop_name):
    import io

    _needs_sendfile(loop_name)
    payload = os.urandom(64 * MIB)

    async def main():
        srv, tr, client, sink = await _sendfile_pair(loop, close_after=1024)
        f = io.BytesIO(payload)
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(loop.sendfile(tr, f), 10)
        await asyncio.wait_for(sink.done, IO)
        closing = tr.is_closing()
        await asyncio.wait_for(client.done, IO)     # the user's protocol is told
        srv.close()
        await srv.wait_closed()
        return closing, f.tell(), len(sink.data)

    closing, pos, got = run(loop, main())
    assert closing
    assert 1024 <= got < len(payload) and 1024 <= pos < len(payload)


# ---------------------------------------------------------------------------
# 4. create_connection: the caller resumes before the first data arrives
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("buffered", [False, True], ids=["protocol", "buffered"])
def test_create_connection_returns_before_first_data(loop, buffered):
    """The server writes at once; the client protocol's first data callback
    still comes after create_connection() has returned to its caller (the
    caller may use the transport there, as CPython's buffered-protocol test
    does)."""
    seen = []
    state = {"returned": False}

    class P(asyncio.Protocol):
        def data_received(self, data):
            seen.append(state["returned"])

    class B(asyncio.BufferedProtocol):
        def get_buffer(self, hint):
            return bytearray(1024)

        def buffer_updated(self, n):
            seen.append(state["returned"])

    async def main():
        async def greet(reader, writer):
            writer.write(b"hello")
            await writer.drain()
            await reader.read()
            writer.close()

        srv = await asyncio.start_server(greet, LOCAL, 0)
        port = srv.sockets[0].getsockname()[1]
        for _ in range(5):
            tr, _ = await loop.create_connection(B if buffered else P, LOCAL, port)
            state["returned"] = True
            await iterations(5)
            tr.close()
            state["returned"] = False
            await asyncio.sleep(0.01)
        srv.close()
        await srv.wait_closed()

    run(loop, main())
    assert seen and all(seen), seen


def test_pipe_transport_repr_after_loop_close(loop_factory, loop_name):
    """CPython's test_unclosed_pipe_transport: after loop.close() the pipe
    transports' reprs say "open" (a closed loop has no selector)."""
    if loop_name == "uvloop":
        pytest.skip("uvloop's pipe transports have reprs of their own")
    lp = loop_factory()
    rfd, wfd = os.pipe()
    rpipe, wpipe = open(rfd, "rb", 0), open(wfd, "wb", 0)  # noqa: SIM115

    async def connect():
        r, _ = await lp.connect_read_pipe(asyncio.Protocol, rpipe)
        w, _ = await lp.connect_write_pipe(asyncio.Protocol, wpipe)
        return r, w

    r, w = lp.run_until_complete(connect())
    lp.close()
    try:
        assert "open" in repr(r) and "open" in repr(w), (repr(r), repr(w))
    finally:
        rpipe.close()
        wpipe.close()
        r._pipe = w._pipe = None


# ---------------------------------------------------------------------------
# 4. A closing transport takes writes until its buffer is flushed
# ---------------------------------------------------------------------------


def test_write_after_close_while_flushing(loop):
    """asyncio: close() with a non-empty buffer keeps taking write()s until
    the buffer is flushed (SSLProtocol relies on it to send its last
    records); all of it reaches the peer, then connection_lost."""
    payload = os.urandom(32 * MIB)

    async def main():
        box = []

        def made(p, t):
            t.write(payload)
            t.close()
            t.write(b"tail")

        def factory():
            box.append(Recorder(loop, on_made=made))
            return box[-1]

        srv = await loop.create_server(factory, LOCAL, 0)
        port = srv.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(LOCAL, port, limit=4 * MIB)
        await asyncio.sleep(0.05)       # the server's buffer stays full meanwhile
        got = await asyncio.wait_for(read_all(reader), 10)
        exc = await asyncio.wait_for(box[0].lost, IO)
        writer.close()
        srv.close()
        await srv.wait_closed()
        return got, exc

    got, exc = run(loop, main())
    assert exc is None
    assert len(got) == len(payload) + 4 and got == payload + b"tail"


def test_tls_peer_close_notify_gets_all_written_data(loop, tls_certs):
    """The peer sends close_notify while our TLS writes are backed up (the
    SSL protocol is paused): everything written before still reaches it,
    then the connection closes (the case of uvloop's
    test_remote_shutdown_receives_trailing_data)."""
    import threading

    server_ctx, client_ctx = tls_certs
    chunk = 128 * 1024
    lsock = socket.create_server((LOCAL, 0))
    port = lsock.getsockname()[1]
    filled = threading.Event()
    result = {}

    def peer():
        conn, _ = lsock.accept()
        conn.settimeout(IO)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = server_ctx.wrap_bio(inc, out, server_side=True)

        def pump():
            if out.pending:
                conn.sendall(out.read())

        def feed(n=65536):
            data = conn.recv(n)
            inc.write(data) if data else inc.write_eof()
            return data

        with conn:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    pump()
                    feed()
            pump()
            got = b""
            while len(got) < 4:
                try:
                    got += tls.read(4)
                except ssl.SSLWantReadError:
                    feed()
            tls.write(b"pong")
            pump()
            filled.wait(2 * IO)
            total = 0
            feed(256 * 1024)                  # take some: the writer is resumed
            while True:
                try:
                    total += len(tls.read(16384))
                except ssl.SSLWantReadError:
                    break
            try:
                tls.unwrap()                  # close_notify; the peer's is not awaited
            except ssl.SSLWantReadError:
                pass
            pump()
            while True:                       # the rest, until the TCP EOF
                try:
                    total += len(tls.read(16384))
                except ssl.SSLWantReadError:
                    if not feed():
                        break
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    break
            result["total"] = total

    th = threading.Thread(target=peer, daemon=True)
    th.start()

    async def main():
        reader, writer = await asyncio.open_connection(
            LOCAL, port, ssl=client_ctx, server_hostname="localhost")
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), IO) == b"pong"
        count = 0
        try:
            while True:
                writer.write(b"x" * chunk)
                count += 1
                await asyncio.wait_for(writer.drain(), 0.5)
        except TimeoutError:
            pass
        filled.set()
        assert await asyncio.wait_for(reader.read(), 2 * IO) == b""
        writer.close()
        for _ in range(int(2 * IO / 0.01)):     # the peer reads until our FIN
            if not th.is_alive():
                break
            await asyncio.sleep(0.01)
        return count

    try:
        count = run(loop, main())
        th.join(2 * IO)
    finally:
        lsock.close()
    assert result.get("total") == count * chunk, (result, count * chunk)


# ---------------------------------------------------------------------------
# 4. Datagram endpoint on a socketpair
# ---------------------------------------------------------------------------


def test_datagram_endpoint_on_socketpair(loop, loop_name):
    """create_datagram_endpoint(sock=) on socketpair(AF_UNIX, SOCK_DGRAM):
    datagrams arrive with addr None; sendto(data) without an address goes
    to the peer on uvloop and ringline (asyncio calls sock.sendto(data,
    None) and fails: not checked there, as uvloop's own suite does)."""
    got = []

    class P(asyncio.DatagramProtocol):
        def __init__(self):
            self.first = loop.create_future()

        def datagram_received(self, data, addr):
            got.append((data, addr))
            if not self.first.done():
                self.first.set_result(None)

    async def main():
        s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with s1, s2:
            tr, pr = await loop.create_datagram_endpoint(P, sock=s1)
            assert tr.get_extra_info("peername") == ""
            s2.send(b"hello, socketpair")
            await asyncio.wait_for(pr.first, IO)
            reply = None
            if loop_name != "asyncio":
                tr.sendto(b"back")
                s2.settimeout(IO)
                reply = await loop.run_in_executor(None, s2.recv, 100)
            tr.close()
            await iterations(3)
            return reply

    reply = run(loop, main())
    assert got == [(b"hello, socketpair", None)]
    if loop_name != "asyncio":
        assert reply == b"back"


# ---------------------------------------------------------------------------
# 4. A cancelled create_connection(sock=...) leaves no descriptor behind
# ---------------------------------------------------------------------------


def test_cancelled_create_connection_sock_releases_the_socket(loop):
    """(Held before this work too; guards uvloop's regression test.)"""

    async def main():
        srv = await asyncio.start_server(lambda r, w: w.close(), LOCAL, 0)
        addr = srv.sockets[0].getsockname()
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, addr)
        task = asyncio.ensure_future(loop.create_connection(asyncio.Protocol, sock=sock))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        fileno = sock.fileno()
        sock.close()
        srv.close()
        await srv.wait_closed()
        return fileno

    assert run(loop, main()) == -1


def test_patching_base_event_loop_methods_reaches_the_loop(loop, loop_name):
    # asyncssh's suite patches asyncio.BaseEventLoop.create_connection to
    # fake a slow connect; asyncio's own loops see the patch, and so must a
    # subclass of BaseEventLoop whose thread-checked wrappers stand in front.
    from unittest import mock

    if loop_name == "uvloop":
        pytest.skip("uvloop.Loop is not an asyncio.BaseEventLoop")
    calls = []

    async def fake_create_connection(self, *args, **kwargs):
        calls.append(self)
        raise ConnectionRefusedError("patched")

    def fake_add_reader(self, fd, callback, *args):
        calls.append(fd)

    async def main():
        with pytest.raises(ConnectionRefusedError, match="patched"):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", 9)
        loop.add_reader(12345, print)

    with mock.patch("asyncio.BaseEventLoop.create_connection", fake_create_connection), \
            mock.patch("asyncio.selector_events.BaseSelectorEventLoop.add_reader",
                       fake_add_reader):
        run_on(loop, main())
    assert calls == [loop, 12345]
