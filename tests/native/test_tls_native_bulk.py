"""Native TLS bulk path: records written straight into send buffers and read
straight from the ring's provided buffers (the ring BIOs of native/tls.pyx),
and the MemoryBIO path they fall back to.

Every test runs with the ring BIOs on and off (``ring_bio``), against real
peers: ringline's own client and server, a stdlib blocking ``ssl`` socket
in a thread, and a relay that trickles ciphertext a few bytes per segment.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import struct

import pytest

import ringline
from tests.support import HOST, IO_TIMEOUT, pattern, run
from tests.support.backends import uring_only
from tests.support.tls import make_certs

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("native_backend")]

# Frame sizes around a record (16 KiB of plaintext), the 256 KiB encryption
# piece and beyond: frames start and end anywhere inside records.
SIZES = [0, 1, 5, 100, 16379, 16384, 16385, 40_000, 262_143, 262_144, 262_145, 1_000_003]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tlsbulk"))


@pytest.fixture(params=["ring", "memory"])
def bio(request):
    """The native TLS layer's BIOs for the test: "ring" or "memory"."""
    from ringline.native import tls
    if request.param == "ring" and not tls.ring_bio(True):
        pytest.skip("ring BIOs unavailable (libcrypto not found or not the ssl module's)")
    if request.param == "memory":
        tls.ring_bio(False)
        assert not tls.ring_bio()
    yield request.param
    tls.ring_bio(True)


def _frames() -> list[bytes]:
    return [pattern(n, seed=i) for i, n in enumerate(SIZES)]


async def _frame_server(conn: ringline.Connection) -> None:
    """Parse 4-byte length-prefixed frames with with_data (across records
    and receives), answer each with its length and SHA-256."""
    while True:
        box: list[bytes] = []

        def parse(view: memoryview, box=box) -> int:
            if len(view) < 4:
                return 0
            (n,) = struct.unpack_from("!I", view)
            if len(view) < 4 + n:
                return 0
            box.append(bytes(view[4:4 + n]))
            return 4 + n

        used = await conn.with_data(parse)
        if not used:
            return
        body = box[0]
        conn.send_nowait(struct.pack("!I", len(body)) + hashlib.sha256(body).digest())


@uring_only("the ring BIOs are the io_uring backend's")
def test_frames_across_records_with_data_both_ways(certs, bio):
    """Frames sent with send/send_nowait/send_parts/send_chain, bytes and
    other buffers, parsed by with_data on the server: every frame exact
    and in order; then the server streams 3 MB back in one send."""
    frames = _frames()

    async def handler(conn):
        await _frame_server(conn)
        big = pattern(3_000_000, seed=99)
        assert await conn.send(big) == len(big)
        conn.close()

    async def main():
        srv = await ringline.serve(handler, HOST, 0, ssl=certs.server_ctx())
        c = await ringline.connect(HOST, srv.port, ssl=certs.client_ctx(),
                                   server_hostname="localhost")
        try:
            for i, f in enumerate(frames):
                hdr = struct.pack("!I", len(f))
                how = i % 4
                if how == 0:
                    c.send_nowait(hdr + f)
                elif how == 1:
                    assert await c.send(bytearray(hdr + f)) == len(f) + 4
                elif how == 2:
                    assert await c.send_parts([hdr, memoryview(f)]) == len(f) + 4
                else:
                    assert await c.send_chain([hdr, f]) == len(f) + 4
            for f in frames:
                reply = await asyncio.wait_for(c.recv_exactly(36), IO_TIMEOUT)
                assert reply == struct.pack("!I", len(f)) + hashlib.sha256(f).digest()
            c.shutdown_write()
            got = bytearray()
            while chunk := await asyncio.wait_for(c.recv(1 << 20), IO_TIMEOUT):
                got += chunk
            assert bytes(got) == pattern(3_000_000, seed=99)
        finally:
            c.close()
            await asyncio.wait_for(c.wait_closed(), IO_TIMEOUT)
            await srv.shutdown(2.0)

    run(main)


@uring_only("the ring BIOs are the io_uring backend's")
def test_stdlib_peer_large_writes_and_close_notify(certs, bio):
    """A stdlib blocking ssl client sends 4 MB in odd-sized writes, each
    read back before the next; the native server echoes with send_nowait:
    the exact bytes come back, then the server's close_notify as a clean
    EOF."""
    data = pattern(4_000_000, seed=3)
    result: dict = {}

    async def handler(conn):
        got = 0
        while got < len(data):
            chunk = await conn.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
            conn.send_nowait(chunk)
            await conn.drain()
        conn.close()

    def client(port):
        ctx = certs.client_ctx()
        with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as s:
            # One SSL object is not for two threads: send a piece, read
            # its echo back, in turn.
            got = bytearray()
            off, step = 0, 77_777
            while off < len(data):
                s.sendall(data[off:off + step])
                off = min(off + step, len(data))
                while len(got) < off:
                    chunk = s.recv(1 << 16)
                    if not chunk:
                        break
                    got += chunk
            try:
                result["eof"] = "unclean" if s.recv(1 << 16) else "close_notify"
            except ssl.SSLEOFError:
                result["eof"] = "unclean"
            result["got"] = bytes(got)

    async def main():
        srv = await ringline.serve(handler, HOST, 0, ssl=certs.server_ctx())
        try:
            await asyncio.wait_for(asyncio.to_thread(client, srv.port), 40)
        finally:
            await srv.shutdown(2.0)

    run(main)
    assert result["got"] == data
    assert result["eof"] == "close_notify"


@uring_only("the ring BIOs are the io_uring backend's")
def test_ciphertext_trickled_a_few_bytes_per_segment(certs, bio):
    """A relay passes the client's ciphertext to the TLS server 1-13 bytes
    per segment (records arrive in many receives, a receive holds parts
    of several): handshake, frames and echo all exact."""
    frames = [pattern(n, seed=n) for n in (1, 300, 16385, 70_000)]

    async def echo(conn):
        while data := await conn.recv(1 << 20):
            conn.send_nowait(data)

    async def main():
        srv = await ringline.serve(echo, HOST, 0, ssl=certs.server_ctx())

        async def relay(down):
            up = await ringline.connect(HOST, srv.port)

            async def back():
                while d := await up.recv(1 << 16):
                    down.send_nowait(d)
                down.close()

            bt = asyncio.ensure_future(back())
            k = 0
            while d := await down.recv(1 << 16):
                off = 0
                while off < len(d):
                    step = 1 + k % 13
                    k += 1
                    await up.send(d[off:off + step])
                    off += step
            up.shutdown_write()
            await bt
            up.close()

        rel = await ringline.serve(relay, HOST, 0)
        c = await ringline.connect(HOST, rel.port, ssl=certs.client_ctx(),
                                   server_hostname="localhost")
        try:
            for f in frames:
                c.send_nowait(f)
                assert await asyncio.wait_for(c.recv_exactly(len(f)), 30) == f
        finally:
            c.close()
            await asyncio.wait_for(c.wait_closed(), IO_TIMEOUT)
            await rel.shutdown(2.0)
            await srv.shutdown(2.0)

    run(main)


@uring_only("the ring BIOs are the io_uring backend's")
def test_slow_reader_mixed_receives_under_backpressure(certs, bio):
    """The server reads nothing for a while (receive backpressure pauses
    the socket at a 512 KiB limit), then takes 3 MB with recv,
    recv_exactly and with_data in turn: every byte, in order."""
    data = pattern(3_000_000, seed=11)
    result: dict = {}

    async def handler(conn):
        await asyncio.sleep(0.3)
        got = bytearray()
        k = 0
        while len(got) < len(data):
            left = len(data) - len(got)
            if k % 3 == 0:
                chunk = await conn.recv(7000)
            elif k % 3 == 1:
                chunk = await conn.recv_exactly(min(50_000, left))
            else:
                box = []

                def parse(view, box=box):
                    n = min(len(view), 12_345)
                    box.append(bytes(view[:n]))
                    return n

                await conn.with_data(parse)
                chunk = box[0] if box else b""
            if not chunk:
                break
            got += chunk
            k += 1
        result["got"] = bytes(got)
        conn.send_nowait(b"ok")
        conn.close()

    async def main():
        srv = await ringline.serve(handler, HOST, 0, ssl=certs.server_ctx())
        c = await ringline.connect(HOST, srv.port, ssl=certs.client_ctx(),
                                   server_hostname="localhost")
        try:
            assert await asyncio.wait_for(c.send(data), 30) == len(data)
            assert await asyncio.wait_for(c.recv_exactly(2), 30) == b"ok"
        finally:
            c.close()
            await asyncio.wait_for(c.wait_closed(), IO_TIMEOUT)
            await srv.shutdown(2.0)

    run(main, config=ringline.Config(recv_accumulator_limit=512 * 1024))
    assert result["got"] == data


def test_ring_bio_detection_and_env_switch(monkeypatch):
    """The ring BIOs are on wherever ringline._net.openssl allows them (the
    ssl module's OpenSSL found, the MemoryBIO layout checked), and
    RINGLINE_TLS_DIRECT=0 turns them off."""
    from ringline._net import openssl
    from ringline.native import tls
    try:
        monkeypatch.delenv("RINGLINE_TLS_DIRECT", raising=False)
        found = openssl.info(refresh=True)
        assert tls.ring_bio(True) == (found["membio"] and found["bio_meth"])
        monkeypatch.setenv("RINGLINE_TLS_DIRECT", "0")
        assert openssl.info(refresh=True)["why"] == "off: RINGLINE_TLS_DIRECT=0"
        assert tls.ring_bio(True) is False
        assert tls.ring_bio() is False
    finally:
        monkeypatch.delenv("RINGLINE_TLS_DIRECT", raising=False)
        openssl.info(refresh=True)
        tls.ring_bio(True)
