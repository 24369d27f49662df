"""Reused big bytes (``_net/buffers.pyx`` "Big bytes"): the record buffers of
native TLS sends and the heads large receives land in are pooled and used
again only once nobody else holds them.

What would break if the rule were wrong: a received chunk the handler still
holds, or a record buffer the kernel has not sent yet, would be overwritten
by the next use.  So every test keeps what it received while more flows, and
checks every byte (and a cached hash) afterwards.
"""

from __future__ import annotations

import asyncio

import pytest

import ringline
from tests.support import HOST, IO_TIMEOUT, pattern, run
from tests.support.backends import uring_only
from tests.support.tls import make_certs

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("native_backend")]

CHUNK = 256 * 1024
ROUNDS = 24         # three times the pool's size (BIG_N = 8)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("bigbytes"))


def _msg(i: int) -> bytes:
    return pattern(CHUNK, seed=1000 + i)


@uring_only("the pool backs the io_uring backend's buffers")
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_held_chunks_keep_their_bytes(certs, tls):
    """The client sends 256 KiB messages, each a different pattern; the
    server keeps every chunk ``recv`` gave it (and hashes each at once, so a
    reused object would carry a stale cached hash), echoing each message
    once it has it.  Afterwards: every held chunk is still exactly what
    arrived, and every echo came back exact."""
    held: list[tuple[bytes, int]] = []
    server_done: asyncio.Future

    async def handler(conn):
        try:
            while chunk := await conn.recv(1 << 20):
                held.append((chunk, hash(chunk)))
        finally:
            server_done.set_result(None)

    async def echo_handler(conn):
        # Echo whole messages (recv_exactly), holding nothing.
        while True:
            try:
                m = await conn.recv_exactly(CHUNK)
            except asyncio.IncompleteReadError:
                return      # the client closed
            conn.send_nowait(m)

    async def main():
        nonlocal server_done
        server_done = asyncio.get_running_loop().create_future()
        ctx = certs.server_ctx() if tls else None
        kw = {"ssl": certs.client_ctx(), "server_hostname": "localhost"} if tls else {}
        srv = await ringline.serve(handler, HOST, 0, ssl=ctx)
        esrv = await ringline.serve(echo_handler, HOST, 0, ssl=ctx)
        c = await ringline.connect(HOST, srv.port, **kw)
        e = await ringline.connect(HOST, esrv.port, **kw)
        try:
            for i in range(ROUNDS):
                await asyncio.wait_for(c.send(_msg(i)), IO_TIMEOUT)
                e.send_nowait(_msg(i))
                back = await asyncio.wait_for(e.recv_exactly(CHUNK), IO_TIMEOUT)
                assert back == _msg(i), f"echo {i} differs"
            c.shutdown_write()
            await asyncio.wait_for(server_done, IO_TIMEOUT)
        finally:
            for x in (c, e):
                x.close()
                await asyncio.wait_for(x.wait_closed(), IO_TIMEOUT)
            await srv.shutdown(2.0)
            await esrv.shutdown(2.0)

    run(main)
    assert b"".join(ch for ch, _ in held) == b"".join(_msg(i) for i in range(ROUNDS))
    for ch, h in held:
        assert hash(ch) == h == hash(bytes(bytearray(ch)))


@uring_only("the pool backs the io_uring backend's buffers")
def test_pool_reuses_and_stays_bounded(certs):
    """A TLS echo of many 256 KiB messages whose echoes are dropped at once:
    the pool fills to at most its size, and once the transfer is over all
    of its buffers are free again (none leaked to a holder); hashes of
    reused objects are recomputed (none is cached across uses)."""
    from ringline._net import buffers

    async def echo(conn):
        while data := await conn.recv(1 << 20):
            conn.send_nowait(data)

    async def main():
        srv = await ringline.serve(echo, HOST, 0, ssl=certs.server_ctx())
        c = await ringline.connect(HOST, srv.port, ssl=certs.client_ctx(),
                                   server_hostname="localhost")
        try:
            for i in range(ROUNDS):
                m = _msg(i)
                c.send_nowait(m)
                back = await asyncio.wait_for(c.recv_exactly(CHUNK), IO_TIMEOUT)
                assert back == m
                assert hash(back) == hash(m)
        finally:
            c.close()
            await asyncio.wait_for(c.wait_closed(), IO_TIMEOUT)
            await srv.shutdown(2.0)

    run(main)
    n, free = buffers.big_stats()
    assert 1 <= n <= 8
    assert free == n
