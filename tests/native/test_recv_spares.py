"""The provided-buffer ring's spare pool (BufRing.steal / _fresh): buffers
handed out whole are taken back as fresh ring buffers once nothing else holds
them.  The kernel writes into a reused buffer, so the rule under test is the
ownership one: a buffer anyone still holds is never reused, one that was
released is, and a reused object shows no trace of its earlier life (length,
cached hash).
"""

from __future__ import annotations

import asyncio
import random

import pytest

from ringline._net import stream as _stream
from tests.support import HOST, IO_TIMEOUT, conn_pair, run

pytestmark = pytest.mark.timeout(60)


def _stats() -> dict:
    return _stream.net_state_for(asyncio.get_running_loop()).statistics()


def _hash_fresh(b: bytes) -> int:
    # bytes(b) and b[:] return b itself: build an equal object that has
    # never been hashed.
    return hash(bytes(bytearray(b)))


def test_held_buffers_are_never_reused_and_released_ones_are():
    """Native face, whole 64 KiB receives: 100 handed-out objects stay held
    while megabytes more flow through the same ring (others are released in
    random order and reused meanwhile); every held one still reads back as
    exactly what was sent, and the reuse counter moved."""
    rnd = random.Random(5)
    blocks = [rnd.randbytes(65536) for _ in range(64)]

    async def main():
        if not _stats()["recv_incremental"]:
            pytest.skip("whole-buffer native receives need incremental buffers (6.12+)")
        async with conn_pair() as (srv, cli):
            handed0, reused0 = _stats()["recv_buffers_handed_out"], _stats()["recv_buffers_reused"]
            held: dict[int, tuple[bytes, bytes]] = {}
            loose: list[bytes] = []
            for i in range(400):
                sent = blocks[rnd.randrange(len(blocks))]
                r = asyncio.ensure_future(srv.recv_exactly(65536))
                await asyncio.sleep(0)
                cli.send_nowait(sent)
                got = await asyncio.wait_for(r, IO_TIMEOUT)
                assert got == sent
                if len(held) < 100 and rnd.random() < 0.4:
                    held[i] = (got, sent)
                else:
                    loose.append(got)
                    if len(loose) > 8 or rnd.random() < 0.5:
                        # Released in random order, not the order received.
                        del loose[rnd.randrange(len(loose))]
            del got, r
            handed = _stats()["recv_buffers_handed_out"] - handed0
            reused = _stats()["recv_buffers_reused"] - reused0
            assert len(held) == 100
            assert handed > 300, handed
            assert reused > 100, reused
            for i, (got, sent) in held.items():
                assert got == sent, f"held receive {i} was written again"

    run(main)


@pytest.mark.parametrize("inc_allowed", [True, False], ids=["incremental", "plain"])
def test_protocol_hand_outs_of_any_length_are_reused_byte_exact(config_defaults, inc_allowed):
    """asyncio Protocol face: receives of at least half a buffer are handed
    out cut to their length (in place); released ones come back whole.  The
    stream is byte-exact while some of the objects are kept to the end."""
    config_defaults(_recv_buffers_incremental=inc_allowed)
    payload = random.Random(9).randbytes(12 << 20)

    async def main():
        loop = asyncio.get_running_loop()
        chunks: list[bytes] = []
        kept: list[bytes] = []
        total = 0
        done = asyncio.Event()
        rnd = random.Random(3)

        class Sink(asyncio.Protocol):
            def data_received(self, data):
                nonlocal total
                total += len(data)
                chunks.append(data)
                if rnd.random() < 0.05 and len(kept) < 100:
                    kept.append(data)
                if total >= len(payload):
                    done.set()

        handed0, reused0 = _stats()["recv_buffers_handed_out"], _stats()["recv_buffers_reused"]
        server = await loop.create_server(Sink, HOST, 0)
        tr, _ = await loop.create_connection(asyncio.Protocol, HOST,
                                             server.sockets[0].getsockname()[1])
        try:
            got = bytearray()
            off = 0
            while off < len(payload):
                n = rnd.choice((65536, 40000, 100000, 300))
                tr.write(payload[off:off + n])
                off += n
                if len(chunks) > 4:
                    # Consume and drop, so the pool sees releases.
                    for c in chunks:
                        got += c
                    chunks.clear()
                await asyncio.sleep(0)
            await asyncio.wait_for(done.wait(), IO_TIMEOUT)
            for c in chunks:
                got += c
            chunks.clear()
            assert bytes(got) == payload
            assert _stats()["recv_buffers_handed_out"] > handed0
            assert _stats()["recv_buffers_reused"] > reused0
            # Every kept object is still a true piece of the stream.
            for k in kept:
                assert payload.find(k) >= 0
        finally:
            tr.close()
            server.close()
            await server.wait_closed()

    run(main)


def test_a_reused_buffer_forgets_its_cached_hash():
    """Each handed-out object is hashed (bytes cache their hash) and then
    released; the ones reused later must hash as their new contents do."""
    rnd = random.Random(13)

    async def main():
        if not _stats()["recv_incremental"]:
            pytest.skip("whole-buffer native receives need incremental buffers (6.12+)")
        async with conn_pair() as (srv, cli):
            reused0 = _stats()["recv_buffers_reused"]
            for _ in range(200):
                sent = rnd.randbytes(65536)
                r = asyncio.ensure_future(srv.recv_exactly(65536))
                await asyncio.sleep(0)
                cli.send_nowait(sent)
                got = await asyncio.wait_for(r, IO_TIMEOUT)
                assert got == sent
                assert hash(got) == _hash_fresh(sent)
                del got, r
            assert _stats()["recv_buffers_reused"] - reused0 > 100

    run(main)


def test_native_recv_of_part_of_a_buffer_through_reused_buffers():
    """recv(65536) that gets 33..64 KiB: its result starts as a whole
    provided buffer the pool also holds, and is cut in place when sealed.
    Results, a third of them kept, are byte-exact and reuse happens."""
    rnd = random.Random(17)

    async def main():
        if not _stats()["recv_incremental"]:
            pytest.skip("whole-buffer native receives need incremental buffers (6.12+)")
        async with conn_pair() as (srv, cli):
            reused0 = _stats()["recv_buffers_reused"]
            kept: list[tuple[bytes, bytes]] = []
            for _ in range(300):
                sent = rnd.randbytes(rnd.randrange(33000, 65536))
                r = asyncio.ensure_future(srv.recv(65536))
                await asyncio.sleep(0)
                cli.send_nowait(sent)
                got = await asyncio.wait_for(r, IO_TIMEOUT)
                while len(got) < len(sent):
                    got += await asyncio.wait_for(srv.recv(65536), IO_TIMEOUT)
                assert got == sent
                assert hash(got) == _hash_fresh(sent)
                if rnd.random() < 0.3:
                    kept.append((got, sent))
                del got, r
            assert _stats()["recv_buffers_reused"] - reused0 > 50
            for got, sent in kept:
                assert got == sent

    run(main)
