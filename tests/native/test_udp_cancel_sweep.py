"""Cancellation sweep of the native UDP API (tests/support/cancel_sweep.py):
each receive, send and close awaitable cancelled after 0, 1, 2, ... loop
iterations leaves no descriptor, in-flight op or held receive buffer behind,
and a cancelled receive loses no datagram (the next receive gets it)."""

from __future__ import annotations

import asyncio
import socket

import pytest

import ringline
from tests.support import run
from tests.support.cancel_sweep import sweep
from tests.support.net import HOST, IO_TIMEOUT

pytestmark = pytest.mark.timeout(120)

RECEIVES = {
    "recv_from": lambda s: s.recv_from(),
    "recv_batch": lambda s: s.recv_batch(8),
    "with_datagram": lambda s: s.with_datagram(lambda v, a: (bytes(v), a)),
}


@pytest.mark.parametrize("what", list(RECEIVES))
def test_udp_receive_sweep(what):
    async def main():
        sock = await ringline.bind_udp(HOST, 0)
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind((HOST, 0))
        sent = []

        def tick(i):
            if i == 2:
                sent.append(b"dgram %d" % len(sent))
                peer.sendto(sent[-1], sock.local_addr)

        async def after(outcome, result):
            if not sent:
                assert outcome == "cancelled"
                return
            if outcome == "cancelled":
                # Not lost: the datagram waits for the next receive.
                data, _ = await asyncio.wait_for(sock.recv_from(), IO_TIMEOUT)
            elif what == "recv_batch":
                data = result[0][0]
            else:
                data = result[0]
            assert data == sent.pop()

        try:
            r = await sweep(f"udp {what}", lambda: RECEIVES[what](sock), tick=tick, after=after)
        finally:
            peer.close()
            sock.close()
            await sock.wait_closed()
        assert r.cancelled >= 2
        return r

    run(main)


@pytest.mark.parametrize("what", ["send_to_async", "drain", "wait_closed"])
def test_udp_send_and_close_sweep(what):
    async def main():
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind((HOST, 0))
        peer.setblocking(False)
        socks = []

        async def op():
            if what == "wait_closed":
                s = await ringline.bind_udp(HOST, 0)
                socks.append(s)
                s.send_to(b"bye", peer.getsockname())
                s.close()
                await s.wait_closed()
                return None
            s = socks[0]
            if what == "drain":
                for _ in range(20):
                    s.send_to(b"q", peer.getsockname())
                await s.drain()
                return None
            return await s.send_to_async(b"one", peer.getsockname())

        async def after(outcome, result):
            if what == "wait_closed":
                if socks:       # (a cancel before the close: close it here)
                    socks[-1].close()
                    await asyncio.wait_for(socks[-1].wait_closed(), IO_TIMEOUT)
            else:
                await asyncio.wait_for(socks[0].drain(), IO_TIMEOUT)
            try:
                while peer.recv(100):
                    pass
            except BlockingIOError:
                pass

        if what != "wait_closed":
            socks.append(await ringline.bind_udp(HOST, 0))
        try:
            r = await sweep(f"udp {what}", op, after=after)
        finally:
            for s in socks:
                s.close()
                await s.wait_closed()
            peer.close()
        return r

    run(main)
