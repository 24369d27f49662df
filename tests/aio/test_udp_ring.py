"""create_datagram_endpoint on the ring (aio/udp.pyx): asyncio's
DatagramProtocol contract against stdlib sockets as peers.

Tests that take the ``loop`` fixture run on asyncio, uvloop and ringline
(the asyncio behaviour is the reference); the ones that check what is
ringline's own (the transport class, flow control on in-flight sends,
counters) run on ringline only.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import gc
import socket

import pytest

from tests.support import loops
from tests.support.aio import IO, LOCAL, blob, needs_ipv6, settle
from tests.support.running import run_on


class Recorder(asyncio.DatagramProtocol):
    """Records every call; ``wait(n)`` for n datagrams."""

    def __init__(self, echo: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.echo = echo
        self.transport = None
        self.calls: list[str] = []
        self.got: list[tuple[bytes, object]] = []
        self.errors: list[BaseException] = []
        self.lost = self.loop.create_future()
        self.paused = 0
        self.resumed = 0
        self._want: tuple[int, asyncio.Future] | None = None

    def connection_made(self, transport):
        assert not self.calls
        self.calls.append("made")
        self.transport = transport

    def datagram_received(self, data, addr):
        assert isinstance(data, bytes)
        assert self.calls[0] == "made" and "lost" not in self.calls
        self.got.append((data, addr))
        if self.echo:
            self.transport.sendto(data, addr)
        if self._want and len(self.got) >= self._want[0] and not self._want[1].done():
            self._want[1].set_result(None)

    def error_received(self, exc):
        assert "lost" not in self.calls
        self.errors.append(exc)
        self.calls.append("error")

    def pause_writing(self):
        self.paused += 1
        self.calls.append("pause")

    def resume_writing(self):
        self.resumed += 1
        self.calls.append("resume")

    def connection_lost(self, exc):
        assert "lost" not in self.calls
        self.calls.append("lost")
        self.lost.set_result(exc)

    async def wait(self, n: int) -> None:
        if len(self.got) < n:
            fut = self.loop.create_future()
            self._want = (n, fut)
            await asyncio.wait_for(fut, IO)


def peer(family: int = socket.AF_INET, host: str = LOCAL) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return s


async def recv_n(loop, s: socket.socket, n: int) -> list[tuple[bytes, object]]:
    """``n`` datagrams from a stdlib socket (non-blocking), polled from the
    loop: every loop runs it the same way (uvloop has no sock_recvfrom)."""
    out = []
    async with asyncio.timeout(IO):
        while len(out) < n:
            try:
                out.append(s.recvfrom(65536))
            except BlockingIOError:
                await asyncio.sleep(0.002)
    return out


def ringline_only(loop_name: str) -> None:
    if loop_name != "ringline":
        pytest.skip("ringline's ring transport")


# ---------------------------------------------------------------------------
# the contract, on every loop
# ---------------------------------------------------------------------------


def test_echo_to_a_stdlib_peer_sizes_order_and_addresses(loop):
    sizes = [1, 64, 1400, 9000, 65507] + [7 * i for i in range(1, 60)]

    async def main():
        tr, pr = await loop.create_datagram_endpoint(
            lambda: Recorder(echo=True), local_addr=(LOCAL, 0))
        addr = tr.get_extra_info("sockname")
        with peer() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sent = [blob(n, i) for i, n in enumerate(sizes)]
            for d in sent:
                s.sendto(d, addr)
            got = await recv_n(loop, s, len(sent))
            assert [d for d, _ in got] == sent          # loopback keeps order
            assert all(a == addr for _, a in got)
            assert [d for d, _ in pr.got] == sent
            assert {a for _, a in pr.got} == {s.getsockname()}
        tr.close()
        assert await asyncio.wait_for(pr.lost, IO) is None
        assert pr.calls[0] == "made" and pr.calls[-1] == "lost"

    run_on(loop, main())


def test_close_sends_what_was_queued_then_connection_lost(loop):
    async def main():
        with peer() as s:
            tr, pr = await loop.create_datagram_endpoint(Recorder, local_addr=(LOCAL, 0))
            for i in range(300):
                tr.sendto(b"%05d" % i + bytes(500), s.getsockname())
            ts = tr.get_extra_info("socket")
            tr.close()
            assert tr.is_closing()
            assert await asyncio.wait_for(pr.lost, IO) is None
            got = await recv_n(loop, s, 300)
            assert [d[:5] for d, _ in got] == [b"%05d" % i for i in range(300)]
            assert pr.errors == []
            # The socket is closed when connection_lost runs.
            assert ts.fileno() == -1

    run_on(loop, main())


def test_connected_endpoint_send_recv_and_address_rules(loop):
    async def main():
        with peer() as s:
            paddr = s.getsockname()
            tr, pr = await loop.create_datagram_endpoint(Recorder, remote_addr=paddr)
            assert tr.get_extra_info("peername") == paddr
            mine = tr.get_extra_info("sockname")
            tr.sendto(b"one")
            tr.sendto(b"two", paddr)
            with pytest.raises(ValueError, match="Invalid address"):
                tr.sendto(b"three", (LOCAL, paddr[1] + 1))
            with pytest.raises(TypeError):
                tr.sendto("text")
            got = await recv_n(loop, s, 2)
            assert got == [(b"one", mine), (b"two", mine)]
            s.sendto(b"back", mine)
            await pr.wait(1)
            assert pr.got == [(b"back", paddr)]
            tr.close()
            await asyncio.wait_for(pr.lost, IO)

    run_on(loop, main())


def test_icmp_refusal_on_a_connected_endpoint_is_error_received(loop):
    async def main():
        with peer() as s:
            dead = s.getsockname()
        tr, pr = await loop.create_datagram_endpoint(Recorder, remote_addr=dead)
        for _ in range(50):
            tr.sendto(b"anyone?")
            await asyncio.sleep(0.01)
            if pr.errors:
                break
        assert pr.errors and isinstance(pr.errors[0], ConnectionRefusedError)
        assert not tr.is_closing()      # an ICMP error does not close the transport
        tr.close()
        assert await asyncio.wait_for(pr.lost, IO) is None

    run_on(loop, main())


def test_oversized_datagram_is_error_received_not_raised(loop):
    async def main():
        with peer() as s:
            tr, pr = await loop.create_datagram_endpoint(Recorder, local_addr=(LOCAL, 0))
            tr.sendto(bytes(65508), s.getsockname())        # one byte over IPv4's limit
            tr.sendto(b"fine", s.getsockname())
            got = await recv_n(loop, s, 1)
            assert got[0][0] == b"fine"
            async with asyncio.timeout(IO):
                while not pr.errors:
                    await asyncio.sleep(0.005)
            assert isinstance(pr.errors[0], OSError)
            assert pr.errors[0].errno == errno.EMSGSIZE
            assert not tr.is_closing()
            tr.close()
            await asyncio.wait_for(pr.lost, IO)

    run_on(loop, main())


def test_sock_argument_and_extra_info(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOCAL, 0))
        tr, pr = await loop.create_datagram_endpoint(Recorder, sock=sock)
        ts = tr.get_extra_info("socket")
        assert ts.fileno() == sock.fileno()
        assert ts.family == socket.AF_INET and ts.type == socket.SOCK_DGRAM
        assert tr.get_extra_info("sockname") == sock.getsockname()
        assert tr.get_extra_info("peername") is None
        assert tr.get_extra_info("nothing", "dflt") == "dflt"
        assert tr.get_protocol() is pr
        with peer() as s:
            s.sendto(b"to sock", sock.getsockname())
            await pr.wait(1)
        tr.abort()
        assert await asyncio.wait_for(pr.lost, IO) is None
        assert sock.fileno() == -1          # the transport owned it

    run_on(loop, main())


@needs_ipv6
def test_ipv6_echo(loop):
    async def main():
        tr, pr = await loop.create_datagram_endpoint(
            lambda: Recorder(echo=True), local_addr=("::1", 0), family=socket.AF_INET6)
        addr = tr.get_extra_info("sockname")
        assert len(addr) == 4 and addr[0] == "::1"
        with peer(socket.AF_INET6, "::1") as s:
            for i in range(20):
                s.sendto(b"v6-%d" % i, addr)
            got = await recv_n(loop, s, 20)
            assert [d for d, _ in got] == [b"v6-%d" % i for i in range(20)]
            assert pr.got[0][1][:2] == s.getsockname()[:2]
            # A 2-tuple address works for sendto on an AF_INET6 socket.
            tr.sendto(b"short", s.getsockname()[:2])
            assert (await recv_n(loop, s, 1))[0][0] == b"short"
        tr.close()
        await asyncio.wait_for(pr.lost, IO)

    run_on(loop, main())


def test_callbacks_run_in_the_creating_context(loop):
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[tuple[str, str]] = []

    class P(Recorder):
        def connection_made(self, transport):
            seen.append(("made", var.get()))
            super().connection_made(transport)

        def datagram_received(self, data, addr):
            seen.append(("data", var.get()))
            super().datagram_received(data, addr)

        def connection_lost(self, exc):
            seen.append(("lost", var.get()))
            super().connection_lost(exc)

    async def create():
        var.set("creator")
        return await loop.create_datagram_endpoint(P, local_addr=(LOCAL, 0))

    async def main():
        tr, pr = await asyncio.create_task(create())
        assert var.get() == "unset"
        with peer() as s:
            s.sendto(b"x", tr.get_extra_info("sockname"))
            await pr.wait(1)
        tr.close()
        await asyncio.wait_for(pr.lost, IO)
        # (asyncio calls connection_lost in close()'s context; ringline and
        # uvloop in the transport's.)
        assert seen[:2] == [("made", "creator"), ("data", "creator")]
        assert seen[2][0] == "lost"

    run_on(loop, main())


def test_reuse_port_both_endpoints_receive(loop):
    async def main():
        t1, p1 = await loop.create_datagram_endpoint(
            Recorder, local_addr=(LOCAL, 0), reuse_port=True)
        port = t1.get_extra_info("sockname")[1]
        t2, p2 = await loop.create_datagram_endpoint(
            Recorder, local_addr=(LOCAL, port), reuse_port=True)
        socks = [peer() for _ in range(40)]
        try:
            for s in socks:         # the kernel spreads senders by their 4-tuple
                s.sendto(b"hello", (LOCAL, port))
            async with asyncio.timeout(IO):
                while len(p1.got) + len(p2.got) < len(socks):
                    await asyncio.sleep(0.005)
            assert p1.got and p2.got
        finally:
            for s in socks:
                s.close()
            t1.close()
            t2.close()
        await asyncio.wait_for(asyncio.gather(p1.lost, p2.lost), IO)

    run_on(loop, main())


def test_exception_in_datagram_received_is_reported_and_receiving_goes_on(
        loop, loop_exceptions):
    class Boom(Recorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if data == b"boom":
                raise ValueError("boom")

    async def main():
        tr, pr = await loop.create_datagram_endpoint(Boom, local_addr=(LOCAL, 0))
        with peer() as s:
            s.sendto(b"boom", tr.get_extra_info("sockname"))
            s.sendto(b"after", tr.get_extra_info("sockname"))
            await pr.wait(2)
        assert [d for d, _ in pr.got] == [b"boom", b"after"]
        tr.close()
        await asyncio.wait_for(pr.lost, IO)
        [ctx] = loop_exceptions.take()
        assert isinstance(ctx["exception"], ValueError)

    run_on(loop, main())


def test_host_name_destination_is_resolved(loop, loop_name):
    if loop_name == "uvloop":
        pytest.skip("uvloop refuses host names in sendto (ValueError)")

    async def main():
        with peer() as s:
            tr, pr = await loop.create_datagram_endpoint(Recorder, local_addr=(LOCAL, 0))
            tr.sendto(b"by name", ("localhost", s.getsockname()[1]))
            tr.sendto(b"bad name", ("no-such-host.invalid", 9))
            got = await recv_n(loop, s, 1)
            assert got[0][0] == b"by name"
            async with asyncio.timeout(IO):
                while not pr.errors:
                    await asyncio.sleep(0.005)
            assert isinstance(pr.errors[0], socket.gaierror)
            tr.close()
            await asyncio.wait_for(pr.lost, IO)

    run_on(loop, main())


def test_pause_reading_holds_datagrams_then_delivers_in_order(loop, loop_name):
    if loop_name == "uvloop":
        pytest.skip("uvloop's UDP transport has no pause_reading")

    async def main():
        tr, pr = await loop.create_datagram_endpoint(Recorder, local_addr=(LOCAL, 0))
        tr.pause_reading()
        assert not tr.is_reading()
        with peer() as s:
            for i in range(10):
                s.sendto(b"%d" % i, tr.get_extra_info("sockname"))
            await settle(loop)
            assert pr.got == []
            tr.resume_reading()
            await pr.wait(10)
        assert [d for d, _ in pr.got] == [b"%d" % i for i in range(10)]
        tr.close()
        await asyncio.wait_for(pr.lost, IO)

    run_on(loop, main())


# ---------------------------------------------------------------------------
# ringline's own
# ---------------------------------------------------------------------------


def test_ring_transport_is_used_and_is_an_asyncio_transport(loop, loop_name):
    ringline_only(loop_name)
    from ringline.aio import udp

    async def main():
        tr, pr = await loop.create_datagram_endpoint(Recorder, local_addr=(LOCAL, 0))
        assert type(tr) is udp.UDPTransport
        assert isinstance(tr, asyncio.Transport)
        assert isinstance(tr, asyncio.DatagramTransport)
        assert "open" in repr(tr)
        # asyncio's sock_* refuse a socket a transport owns.
        with pytest.raises(RuntimeError):
            await loop.sock_recv(tr.get_extra_info("socket")._sock, 1)
        tr.close()
        await asyncio.wait_for(pr.lost, IO)
        assert "closed" in repr(tr)

    run_on(loop, main())


def test_unix_datagram_sockets_keep_the_readiness_transport(loop, loop_name, tmp_path):
    ringline_only(loop_name)
    from ringline.aio import udp

    async def main():
        path = str(tmp_path / "d.sock")
        tr, pr = await loop.create_datagram_endpoint(
            Recorder, local_addr=path, family=socket.AF_UNIX)
        assert type(tr) is not udp.UDPTransport
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"unix", path)
            await pr.wait(1)
        assert pr.got[0][0] == b"unix"
        tr.close()
        await asyncio.wait_for(pr.lost, IO)

    run_on(loop, main())


def test_pause_and_resume_writing_follow_sends_in_flight(loop, loop_name):
    ringline_only(loop_name)

    async def main():
        with peer() as s:
            tr, pr = await loop.create_datagram_endpoint(Recorder, local_addr=(LOCAL, 0))
            tr.set_write_buffer_limits(high=4000, low=1000)
            assert tr.get_write_buffer_limits() == (1000, 4000)
            for _ in range(3):
                tr.sendto(bytes(1000), s.getsockname())
            assert tr.get_write_buffer_size() == 3000
            assert pr.paused == 0
            tr.sendto(bytes(1500), s.getsockname())
            assert tr.get_write_buffer_size() == 4500
            assert pr.paused == 1 and tr._protocol_paused
            tr.sendto(bytes(10), s.getsockname())     # no second pause_writing
            assert pr.paused == 1
            await recv_n(loop, s, 5)
            async with asyncio.timeout(IO):
                while tr.get_write_buffer_size():
                    await asyncio.sleep(0)
            assert pr.resumed == 1 and not tr._protocol_paused
            assert pr.calls == ["made", "pause", "resume"]
            with pytest.raises(ValueError):
                tr.set_write_buffer_limits(high=1, low=2)
            tr.close()
            await asyncio.wait_for(pr.lost, IO)

    run_on(loop, main())


def test_abort_forgets_sends_the_kernel_has_not_taken(loop, loop_name):
    ringline_only(loop_name)

    async def main():
        with peer() as s:
            tr, pr = await loop.create_datagram_endpoint(Recorder, local_addr=(LOCAL, 0))
            # More than the socket keeps in flight (256): the rest wait in order.
            for i in range(600):
                tr.sendto(b"%05d" % i, s.getsockname())
            st = tr.statistics()
            assert st["sends_in_flight"] == 256 and st["sends_pending"] == 344
            tr.abort()
            assert tr.is_closing()
            tr.sendto(b"after abort", s.getsockname())     # ignored, no exception
            assert await asyncio.wait_for(pr.lost, IO) is None
            await settle(loop)
            got = []
            while True:
                try:
                    got.append(s.recvfrom(100)[0])
                except BlockingIOError:
                    break
            assert got == [b"%05d" % i for i in range(256)]   # in flight: sent; rest: not
            assert tr.get_write_buffer_size() == 0

    run_on(loop, main())


def test_burst_beyond_the_buffer_ring_is_received_or_counted(loop, loop_name):
    ringline_only(loop_name)
    from ringline.aio import udp

    async def main():
        tr, pr = await loop.create_datagram_endpoint(Recorder, local_addr=(LOCAL, 0))
        tr.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        n = 8 * udp.RECV_BUFFERS
        with peer() as s:
            for i in range(n):
                s.sendto(b"%d" % i, tr.get_extra_info("sockname"))
            await pr.wait(n)
        # Delivered from the completion: nothing waits in the socket's queue.
        st = tr.statistics()
        assert st["datagrams_in"] == n and st["dropped"] == 0 and st["queued"] == 0
        assert [int(d) for d, _ in pr.got] == list(range(n))
        tr.close()
        await asyncio.wait_for(pr.lost, IO)

    run_on(loop, main())


def test_loop_close_with_an_open_endpoint_releases_everything(loop_name):
    ringline_only(loop_name)
    ringline = loops.require_ringline()
    lp = ringline.new_event_loop()
    try:
        async def main():
            tr, pr = await lp.create_datagram_endpoint(Recorder, local_addr=(LOCAL, 0))
            tr.sendto(b"x", tr.get_extra_info("sockname"))
            await pr.wait(1)
            return tr, pr
        tr, pr = lp.run_until_complete(main())
    finally:
        lp.close()
    assert not pr.lost.done()        # as asyncio: no callbacks on a closed loop
    assert tr.get_extra_info("socket").fileno() == -1
    del tr, pr
    gc.collect()


def test_transport_cycle_is_collected_after_close(loop, loop_name):
    ringline_only(loop_name)
    import weakref

    async def main():
        tr, pr = await loop.create_datagram_endpoint(Recorder, local_addr=(LOCAL, 0))
        tr.close()
        await asyncio.wait_for(pr.lost, IO)
        return weakref.ref(tr), weakref.ref(pr)

    wt, wp = run_on(loop, main())
    gc.collect()
    assert wt() is None and wp() is None



def test_reused_payload_objects_never_change_under_a_holder(loop, loop_name):
    ringline_only(loop_name)
    # Payloads of 480..4096 bytes come from a ring of 64 reusable objects
    # (_net/udp.pyx _payload): one is rewritten only when the transport holds
    # its last reference.
    held: list[tuple[bytes, bytes, int]] = []

    class Keep(Recorder):
        def datagram_received(self, data, addr):
            i = len(self.got)
            if i % 3 == 0:      # keep every third, with a copy and its hash
                held.append((data, bytes(bytearray(data)), hash(data)))
            super().datagram_received(b"", addr)    # count only; drop the rest

    async def main():
        tr, pr = await loop.create_datagram_endpoint(Keep, local_addr=(LOCAL, 0))
        tr.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        n = 600
        with peer() as s:
            for i in range(n):
                size = 480 + (i * 37) % 3600
                s.sendto(blob(size, i), tr.get_extra_info("sockname"))
                if i % 20 == 19:
                    await pr.wait(i + 1)
            await pr.wait(n)
        assert tr.statistics()["payloads_reused"] > n // 4
        for data, copy, h in held:
            assert data == copy and hash(data) == h
        for i, (data, _, _) in enumerate(held):
            assert data == blob(480 + (3 * i * 37) % 3600, 3 * i)
        # A reused object hashes as its new contents (the cached hash is reset).
        fresh = [bytes(d) for d, _, _ in held]
        assert [hash(d) for d, _, _ in held] == [hash(f) for f in fresh]
        tr.close()
        await asyncio.wait_for(pr.lost, IO)

    run_on(loop, main())


def test_closed_endpoints_buffer_rings_are_reused_and_released_at_loop_close(loop_name):
    ringline_only(loop_name)
    ringline = loops.require_ringline()
    from ringline._net import udp as net_udp

    for _ in range(2):      # a second loop (maybe at the same address) starts clean
        lp = ringline.new_event_loop()
        try:
            async def main(lp):
                for i in range(30):
                    tr, pr = await lp.create_datagram_endpoint(
                        lambda: Recorder(echo=True), local_addr=(LOCAL, 0))
                    with peer() as s:
                        s.sendto(b"round %d" % i, tr.get_extra_info("sockname"))
                        got = await recv_n(lp, s, 1)
                        assert got[0][0] == b"round %d" % i
                    tr.close()
                    await asyncio.wait_for(pr.lost, IO)
                    # Closed: its ring waits for the next endpoint.
                    assert net_udp.cached_rings(lp) == 1
                # Several open at once take the kept one, then make new ones.
                eps = [await lp.create_datagram_endpoint(Recorder, local_addr=(LOCAL, 0))
                       for _ in range(6)]
                assert net_udp.cached_rings(lp) == 0
                for tr, _ in eps:
                    tr.close()
                await asyncio.wait_for(asyncio.gather(*(pr.lost for _, pr in eps)), IO)
                assert net_udp.cached_rings(lp) == 4        # at most four are kept
            lp.run_until_complete(main(lp))
        finally:
            lp.close()
        assert net_udp.cached_rings(lp) == 0


def test_create_datagram_endpoint_cancel_sweep(loop_name):
    """Cancelled after 0, 1, 2, ... iterations, create_datagram_endpoint
    leaves no descriptor, slot or lent buffer behind (asyncio closes the
    transport of a cancelled create; its ring receive is cancelled)."""
    ringline_only(loop_name)
    from tests.support import run
    from tests.support.cancel_sweep import sweep

    async def main():
        loop = asyncio.get_running_loop()

        async def after(outcome, result):
            if result is not None:
                tr, pr = result
                tr.close()
                await asyncio.wait_for(pr.lost, IO)

        async def op():
            return await loop.create_datagram_endpoint(Recorder, local_addr=(LOCAL, 0))

        res = await sweep("create_datagram_endpoint", op, after=after)
        return res

    run(main)
