"""Received UDP payloads on the io_uring backend come from a ring of reusable
bytes objects (``_net/udp.pyx`` ``DatagramSocket._payload``): an object is
rewritten only when the socket holds its last reference, so a payload an
application keeps never changes."""

from __future__ import annotations

import random
import socket

import pytest

import ringline
from tests.support import IO_TIMEOUT, run
from tests.support.backends import uring_only

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("native_backend")]


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@uring_only("the payload pool is the ring socket's")
def test_kept_payloads_stay_intact_while_others_are_reused() -> None:
    async def main() -> None:
        sock = await ringline.bind_udp("127.0.0.1", 0)
        sock_opt = socket.socket(fileno=socket.dup(sock.fileno()))
        sock_opt.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock_opt.close()
        kept: list[tuple[int, bytes, int]] = []
        n = 700
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(IO_TIMEOUT)
            got = 0
            for i in range(n):
                size = 400 + (i * 53) % 3900     # below, inside and above the pooled sizes
                s.sendto(payload(size, i), sock.local_addr)
                if i % 20 == 19 or i == n - 1:
                    while got <= i:
                        for data, _ in await sock.recv_batch(64):
                            if got % 4 == 0:
                                kept.append((got, data, hash(data)))
                            got += 1
        st = sock.statistics()
        assert st["payloads_reused"] > n // 3
        for i, data, h in kept:
            assert data == payload(400 + (i * 53) % 3900, i)
            assert hash(data) == h == hash(bytes(bytearray(data)))
        sock.close()
        await sock.wait_closed()

    run(main)
