"""ringline.bind_udp / connect_udp: DatagramSocket on both backends.

The peer is the stdlib ``socket`` module (blocking, with a timeout, on the
test's thread or a reader thread when many datagrams are in flight).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import threading
import time

import pytest

import ringline
import ringline.metrics
from ringline.errors import ConnectionClosed, DatagramTooLarge
from tests.support import IO_TIMEOUT, open_fd_count, run, until
from tests.support.backends import uring_only

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("native_backend")]

V4 = "127.0.0.1"
V6 = "::1"


def _ipv6_ok() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind((V6, 0))
        return True
    except OSError:
        return False


def peer(family: int = socket.AF_INET) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:    # room for bursts (root may exceed net.core.rmem_max)
        s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)     # SO_RCVBUFFORCE
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((V4 if family == socket.AF_INET else V6, 0))
    s.settimeout(IO_TIMEOUT)
    return s


def is_uring() -> bool:
    return ringline.backend() == "uring"


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", [V4, V6])
def test_round_trip(host):
    """recv_from gives the stdlib peer's bytes and address; send_to,
    send_to_async and drain reach it, over IPv4 and IPv6."""
    if host == V6 and not _ipv6_ok():
        pytest.skip("no IPv6 loopback")
    family = socket.AF_INET if host == V4 else socket.AF_INET6

    async def main():
        sock = await ringline.bind_udp(host, 0)
        assert isinstance(sock, ringline.DatagramSocket)
        assert sock.local_addr[0] == host and sock.local_addr[1] > 0
        with peer(family) as p:
            p.sendto(b"ping", sock.local_addr[:2])
            data, addr = await sock.recv_from()
            assert data == b"ping"
            assert addr[:2] == p.getsockname()[:2]
            if family == socket.AF_INET6:
                assert len(addr) == 4       # (host, port, flowinfo, scope_id) as recvfrom
            sock.send_to(b"pong", addr)
            await sock.drain()
            assert p.recvfrom(100) == (b"pong", sock.local_addr)
            n = await sock.send_to_async(memoryview(b"xyz!"), addr)
            assert n == 4
            assert p.recvfrom(100)[0] == b"xyz!"
            # An empty datagram is a datagram.
            p.sendto(b"", sock.local_addr[:2])
            assert (await sock.recv_from())[0] == b""
        sock.close()
        await sock.wait_closed()
        assert sock.closed

    run(main)


def test_dual_stack_socket_talks_to_ipv4_peers():
    """A socket bound to "::" receives IPv4 datagrams (v4-mapped sender)
    and sends to an IPv4 address given as ("127.0.0.1", port)."""
    if not _ipv6_ok():
        pytest.skip("no IPv6")

    async def main():
        sock = await ringline.bind_udp("::", 0)
        with peer() as p:
            p.sendto(b"v4", (V4, sock.local_addr[1]))
            data, addr = await sock.recv_from()
            assert data == b"v4" and addr[0] == "::ffff:127.0.0.1"
            assert addr[1] == p.getsockname()[1]
            sock.send_to(b"mapped", addr)                   # as received
            sock.send_to(b"plain", p.getsockname())         # a plain IPv4 tuple
            await sock.drain()
            assert p.recvfrom(100)[0] == b"mapped"
            assert p.recvfrom(100)[0] == b"plain"
        sock.close()

    run(main)


def test_largest_datagram_round_trip():
    """65,507 bytes (the IPv4 limit) arrive whole: the default receive
    buffer has room for any datagram."""
    payload = bytes(range(256)) * 255 + b"abc"          # 65,283 bytes
    payload = (payload * 2)[:65507]

    async def main():
        sock = await ringline.bind_udp(V4, 0)
        with peer() as p:
            p.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            p.sendto(payload, sock.local_addr)
            data, addr = await sock.recv_from()
            assert data == payload
            assert await sock.send_to_async(data, addr) == 65507
            assert p.recvfrom(70000)[0] == payload
        sock.close()

    run(main)


def test_connect_udp():
    """A connected socket: send/recv with its one peer; its local address
    is what the peer sees."""
    async def main():
        with peer() as p:
            sock = await ringline.connect_udp(V4, p.getsockname()[1])
            assert sock.peer_addr == p.getsockname()
            sock.send(b"hello")
            await sock.drain()
            data, addr = p.recvfrom(100)
            assert data == b"hello" and addr == sock.local_addr
            p.sendto(b"back", addr)
            assert await sock.recv() == b"back"
            sock.close()
            await sock.wait_closed()

    run(main)


def test_connect_udp_refused():
    """ICMP port unreachable on a connected socket is raised by the next
    receive (ConnectionRefusedError), not lost; the socket still works."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
        gone.bind((V4, 0))
        port = gone.getsockname()[1]

    async def main():
        sock = await ringline.connect_udp(V4, port)
        sock.send(b"anyone?")
        await sock.drain()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(sock.recv(), IO_TIMEOUT)
        sock.close()
        await sock.wait_closed()

    run(main)


# ---------------------------------------------------------------------------
# receive API
# ---------------------------------------------------------------------------


def test_with_datagram_in_place():
    """with_datagram calls fn(view, addr) on the datagram; the view is
    released when fn returns; on io_uring it is a window into the receive
    buffer (its object is larger than the datagram: no copy was made)."""
    async def main():
        sock = await ringline.bind_udp(V4, 0)
        kept = []
        with peer() as p:
            p.sendto(b"in place", sock.local_addr)

            def fn(view, addr):
                kept.append(view)
                assert isinstance(view, memoryview)
                assert bytes(view) == b"in place"
                if is_uring():
                    assert len(view.obj) > len(view)    # the provided buffer itself
                return addr

            addr = await sock.with_datagram(fn)
            assert addr == p.getsockname()
            with pytest.raises(ValueError):
                bytes(kept[0])          # released: must not outlive the call
        sock.close()

    run(main)


def test_with_datagram_view_kept_stays_intact():
    """A callback that keeps a slice (a further export of the buffer) keeps
    valid bytes: the buffer leaves the ring instead of being overwritten by
    the next datagrams."""
    async def main():
        sock = await ringline.bind_udp(V4, 0, recv_buffers=4, queue_limit=2)
        slices = []
        with peer() as p:
            for i in range(3):
                p.sendto(b"%d" % i * 100, sock.local_addr)
                await sock.with_datagram(lambda v, a: slices.append(v[:50]))
            for _ in range(20):
                p.sendto(b"z" * 100, sock.local_addr)
                await sock.recv_from()
            for i, s in enumerate(slices):
                assert bytes(s) == (b"%d" % i) * 50
        slices.clear()
        sock.close()
        await sock.wait_closed()

    run(main)


def test_recv_batch():
    """recv_batch(n) returns what has arrived, at most n, in order; it
    waits for the first one."""
    async def main():
        sock = await ringline.bind_udp(V4, 0)
        with peer() as p:
            for i in range(10):
                p.sendto(b"d%d" % i, sock.local_addr)
            await until(lambda: sock.queued == 10, what="10 datagrams queued")
            first = await sock.recv_batch(4)
            rest = await sock.recv_batch(100)
            got = [d for d, _ in first + rest]
            assert got == [b"d%d" % i for i in range(10)]
            assert len(first) == 4
            assert all(a == p.getsockname() for _, a in first + rest)
            with pytest.raises(ValueError):
                await sock.recv_batch(0)
            waiter = asyncio.ensure_future(sock.recv_batch(8))
            await asyncio.sleep(0.01)
            assert not waiter.done()
            p.sendto(b"late", sock.local_addr)
            assert [d for d, _ in await asyncio.wait_for(waiter, IO_TIMEOUT)] == [b"late"]
        sock.close()

    run(main)


def test_queue_overflow_counted_as_dropped():
    """Datagrams beyond queue_limit are dropped and counted, on the socket
    and (io_uring) in the loop's metrics; the queued ones are intact."""
    async def main():
        sock = await ringline.bind_udp(V4, 0, queue_limit=8)
        before = ringline.metrics.snapshot()
        with peer() as p:
            for i in range(50):
                p.sendto(b"n%d" % i, sock.local_addr)
            await until(lambda: sock.statistics()["dropped"] == 42, what="42 dropped")
            assert sock.queued == 8
            got = [d for d, _ in await sock.recv_batch(100)]
            assert got == [b"n%d" % i for i in range(8)]
            if is_uring():
                after = ringline.metrics.snapshot()
                assert after.udp_dropped - before.udp_dropped == 42
                assert after.udp_datagrams_in - before.udp_datagrams_in == 8
            # Room again: the next datagram is delivered.
            p.sendto(b"again", sock.local_addr)
            assert (await sock.recv_from())[0] == b"again"
        sock.close()

    run(main)


def test_buffers_all_queued_parks_then_resumes():
    """More datagrams than receive buffers, with a queue as large as the
    ring: every buffer ends up queued, the multishot receive ends (ENOBUFS)
    and waits; taking datagrams gives buffers back and re-arms it, so all
    20 arrive, in order, none dropped (the rest waited in the kernel)."""
    async def main():
        sock = await ringline.bind_udp(V4, 0, recv_buffers=4, queue_limit=64)
        with peer() as p:
            for i in range(20):
                p.sendto(b"p%d" % i, sock.local_addr)
            got = []
            while len(got) < 20:
                got += [d for d, _ in await asyncio.wait_for(sock.recv_batch(3), IO_TIMEOUT)]
            assert got == [b"p%d" % i for i in range(20)]
            assert sock.statistics()["dropped"] == 0
            if is_uring():
                assert sock.statistics()["enobufs"] >= 1
        sock.close()
        await sock.wait_closed()

    run(main)


@uring_only("max_datagram sizes the io_uring socket's receive buffers")
def test_datagram_longer_than_buffer_is_dropped_not_cut():
    async def main():
        sock = await ringline.bind_udp(V4, 0, max_datagram=100)
        with peer() as p:
            p.sendto(b"L" * 101, sock.local_addr)
            p.sendto(b"S" * 100, sock.local_addr)
            assert (await sock.recv_from())[0] == b"S" * 100
            st = sock.statistics()
            assert st["truncated"] == 1 and st["dropped"] == 1
        sock.close()

    run(main)


def test_cancel_recv_from_loses_nothing():
    """Cancelling a waiting recv_from leaves the socket usable and the next
    datagram for the next receive."""
    async def main():
        sock = await ringline.bind_udp(V4, 0)
        with peer() as p:
            for _ in range(3):
                t = asyncio.ensure_future(sock.recv_from())
                await asyncio.sleep(0)
                t.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await t
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(sock.recv_from(), 0.01)
            p.sendto(b"after", sock.local_addr)
            assert (await sock.recv_from())[0] == b"after"
        sock.close()
        await sock.wait_closed()

    run(main)


def test_one_receiver_at_a_time():
    async def main():
        sock = await ringline.bind_udp(V4, 0)
        t = asyncio.ensure_future(sock.recv_from())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            await sock.recv_from()
        t.cancel()
        sock.close()

    run(main)


# ---------------------------------------------------------------------------
# send API
# ---------------------------------------------------------------------------


class Reader(threading.Thread):
    """Reads datagrams off a stdlib socket until ``n`` arrived or it times out."""

    def __init__(self, sock: socket.socket, n: int) -> None:
        super().__init__(daemon=True)
        self.sock, self.n, self.got = sock, n, []

    def run(self) -> None:
        try:
            while len(self.got) < self.n:
                self.got.append(self.sock.recvfrom(70000)[0])
        except OSError:
            pass


def test_queued_sends_in_order():
    """1,000 send_to calls (more than max_in_flight) reach the peer, all
    of them, in the order they were queued; drain() waits for them."""
    async def main():
        sock = await ringline.bind_udp(V4, 0)
        with peer() as p:
            r = Reader(p, 1000)
            r.start()
            r.sock.settimeout(2)
            for i in range(1000):
                sock.send_to(struct.pack("!I", i) + b"." * 60, p.getsockname())
            await sock.drain()
            # 1,000 small datagrams fit the peer's buffer when it could be
            # raised; else the kernel may drop some there (not our loss).
            complete = p.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 4 << 20
            if is_uring():
                st = sock.statistics()
                assert st["sends_in_flight"] == 0 and st["sends_pending"] == 0
                assert st["datagrams_out"] == 1000
            await asyncio.get_running_loop().run_in_executor(None, r.join, IO_TIMEOUT)
            seq = [struct.unpack("!I", d[:4])[0] for d in r.got]
            assert seq == sorted(set(seq))      # in order, none twice
            if complete:
                assert seq == list(range(1000))
        sock.close()

    run(main)


def test_oversized_datagram_typed_error():
    """More than one UDP datagram can carry: DatagramTooLarge (an OSError
    with errno EMSGSIZE) at once, nothing queued; the socket goes on."""
    async def main():
        sock = await ringline.bind_udp(V4, 0)
        with peer() as p:
            for call in (lambda: sock.send_to(b"x" * 65508, p.getsockname()),
                         lambda: sock.send_to_async(bytearray(100000), p.getsockname())):
                with pytest.raises(DatagramTooLarge) as info:
                    call()
                assert isinstance(info.value, OSError)
                assert info.value.errno == errno.EMSGSIZE
            await sock.drain()      # nothing was queued, nothing to report
            sock.send_to(b"fine", p.getsockname())
            await sock.drain()
            assert p.recvfrom(100)[0] == b"fine"
        sock.close()

    run(main)


def test_send_error_surfaces_on_drain():
    """A send the kernel refuses (no route to a broadcast address without
    SO_BROADCAST: EACCES) is not lost: drain() raises it, once."""
    async def main():
        sock = await ringline.bind_udp("0.0.0.0", 0)
        sock.send_to(b"x", ("255.255.255.255", 9))
        with pytest.raises(PermissionError):
            await sock.drain()
        await sock.drain()          # reported once
        with pytest.raises(PermissionError):
            await sock.send_to_async(b"x", ("255.255.255.255", 9))
        assert sock.statistics()["send_errors"] == 1
        sock.close()

    run(main)


@pytest.mark.expect_loop_errors
def test_unreported_send_error_reaches_the_exception_handler_at_close():
    """A failed send_to that no drain() raised is reported when the socket
    closes (to the loop's exception handler), not dropped."""
    reported = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda lp, ctx: reported.append(ctx))
        sock = await ringline.bind_udp("0.0.0.0", 0)
        sock.send_to(b"x", ("255.255.255.255", 9))
        await asyncio.sleep(0.05)
        sock.close()
        await sock.wait_closed()

    run(main)
    assert len(reported) == 1
    assert isinstance(reported[0]["exception"], PermissionError)
    assert "no drain()" in reported[0]["message"]


@uring_only("the ring has one issuer thread; asyncio loops do not check")
def test_other_thread_is_refused():
    async def main():
        sock = await ringline.bind_udp(V4, 0)
        errors = []

        def other():
            for call in (lambda: sock.send_to(b"x", (V4, 9)), sock.close):
                try:
                    call()
                except RuntimeError as exc:
                    errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(errors) == 2
        assert not sock.closed
        sock.close()

    run(main)


def test_bad_addresses():
    async def main():
        sock = await ringline.bind_udp(V4, 0)
        with pytest.raises(TypeError):
            sock.send_to(b"x", "127.0.0.1")
        with pytest.raises(ValueError):
            sock.send_to(b"x", ("not-an-ip", 9))
        with pytest.raises(TypeError):
            sock.send_to("text", (V4, 9))
        sock.close()

    run(main)


def test_gso_send():
    """segment_size: one call, several datagrams of that size on the wire."""
    async def main():
        sock = await ringline.bind_udp(V4, 0)
        with peer() as p:
            payload = bytes(range(250)) * 10            # 2,500 bytes
            n = await sock.send_to_async(payload, p.getsockname(), segment_size=1000)
            assert n == 2500
            got = [p.recvfrom(5000)[0] for _ in range(3)]
            assert [len(g) for g in got] == [1000, 1000, 500]
            assert b"".join(got) == payload
            if is_uring():
                assert sock.statistics()["datagrams_out"] == 3
        sock.close()

    run(main)


@uring_only("UDP_GRO is set on the io_uring socket only")
def test_gro_receive_split():
    """With gro=True the kernel may hand over a GSO train as one buffer;
    the socket splits it back into the datagrams that were sent."""
    async def main():
        sock = await ringline.bind_udp(V4, 0, gro=True)
        with peer() as p:
            p.sendmsg([bytes(range(200)) * 25], [(socket.SOL_UDP, 103, struct.pack("H", 1000))],
                      0, sock.local_addr)         # 5,000 bytes as 5 x 1,000 (UDP_SEGMENT)
            got = []
            while len(got) < 5:
                got += [d for d, _ in await sock.recv_batch(10)]
            assert [len(g) for g in got] == [1000] * 5
            assert b"".join(got) == bytes(range(200)) * 25
        sock.close()

    run(main)


# ---------------------------------------------------------------------------
# close
# ---------------------------------------------------------------------------


def test_send_and_recv_after_close():
    async def main():
        sock = await ringline.bind_udp(V4, 0)
        waiting = asyncio.ensure_future(sock.recv_from())
        await asyncio.sleep(0)
        sock.close()
        with pytest.raises(ConnectionClosed):
            await waiting
        with pytest.raises(ConnectionClosed):
            sock.send_to(b"x", (V4, 9))
        with pytest.raises(ConnectionClosed):
            await sock.recv_from()
        with pytest.raises(ConnectionClosed):
            await sock.with_datagram(lambda v, a: None)
        sock.close()        # idempotent
        await sock.wait_closed()

    run(main)


def test_close_with_ops_in_flight_leaks_nothing():
    """Close right after queueing sends, with datagrams queued and a
    receive armed: queued sends still go out, the fd is closed, and the
    suite's ring accounting (no live slot, no lent buffer) balances."""
    async def main():
        fds = open_fd_count()
        with peer() as p:
            r = Reader(p, 300)
            r.start()
            for _ in range(5):
                sock = await ringline.bind_udp(V4, 0)
                for i in range(60):
                    sock.send_to(b"q%d" % i, p.getsockname())
                p.sendto(b"unread", sock.local_addr)
                await asyncio.sleep(0.005)
                sock.close()
                await asyncio.wait_for(sock.wait_closed(), IO_TIMEOUT)
                assert sock.fileno() == -1 or not is_uring()
            await asyncio.get_running_loop().run_in_executor(None, r.join, IO_TIMEOUT)
            assert len(r.got) == 300
        assert open_fd_count() == fds

    run(main)


@uring_only("asyncio loops do not close their transports at close()")
def test_loop_close_with_socket_open():
    """A socket never closed: closing the loop cancels its receive and
    releases everything (the ring accounting fixture checks)."""
    loop = ringline.new_event_loop()
    try:
        async def main():
            sock = await ringline.bind_udp(V4, 0)
            sock.send_to(b"x", sock.local_addr)
            return sock

        sock = loop.run_until_complete(main())
    finally:
        loop.close()
    assert sock.closed


# ---------------------------------------------------------------------------
# launch(udp=...)
# ---------------------------------------------------------------------------


def test_launch_runs_on_udp_on_its_own_socket():
    """launch(udp=(host, 0)) binds a SO_REUSEPORT socket, runs the handler's
    on_udp on it, and at shutdown cancels it and closes the socket."""
    seen = {}

    class Udp(ringline.Handler):
        async def on_accept(self, conn):
            pass

        async def on_udp(self, sock):
            seen["sock"] = sock
            try:
                while True:
                    data, addr = await sock.recv_from()
                    sock.send_to(data[::-1], addr)
            except asyncio.CancelledError:
                seen["cancelled"] = True
                raise

    handle = ringline.ShutdownHandle()
    t = threading.Thread(target=ringline.launch, args=(Udp,),
                         kwargs={"shutdown": handle, "udp": (V4, 0)})
    t.start()
    try:
        assert handle.wait_ready(IO_TIMEOUT)
        assert handle.udp_bound is not None
        with peer() as p:
            p.sendto(b"abc", handle.udp_bound)
            assert p.recvfrom(10) == (b"cba", handle.udp_bound)
    finally:
        handle.shutdown()
        t.join(IO_TIMEOUT)
    assert not t.is_alive()
    assert seen["cancelled"] and seen["sock"].closed


def test_launch_udp_needs_on_udp():
    class NoUdp(ringline.Handler):
        async def on_accept(self, conn):
            pass

    with pytest.raises(TypeError, match="on_udp"):
        ringline.launch(NoUdp, udp=(V4, 0))


class UdpWho(ringline.Handler):
    """TCP: nothing.  UDP: replies with the worker's pid."""

    async def on_accept(self, conn):
        pass

    async def on_udp(self, sock):
        tag = str(os.getpid()).encode()
        while True:
            for _, addr in await sock.recv_batch(16):
                sock.send_to(tag, addr)


@uring_only("forks workers; the pool test of the portable backend is test_workers.py's")
def test_worker_pool_shares_one_udp_port():
    """WorkerPool(udp=(host, 0)): every worker binds the same port with
    SO_REUSEPORT; flows from many source ports reach both workers."""
    from ringline.workers import WorkerPool

    pool = WorkerPool(UdpWho, (V4, 0), ringline.Config(shutdown_timeout=1.0), workers=2,
                      udp=(V4, 0)).start()
    try:
        assert pool.ready(10)
        assert pool.udp[1] != 0
        pids = set()
        deadline = time.monotonic() + IO_TIMEOUT
        while len(pids) < 2 and time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                c.settimeout(2)
                c.sendto(b"who", pool.udp)
                try:
                    pids.add(int(c.recvfrom(100)[0]))
                except TimeoutError:
                    pass            # that worker had not bound yet
    finally:
        pool.shutdown()
        codes = pool.wait(timeout=15)
    assert codes == [0, 0]
    assert pids == set(pool.pids)
