"""The portable Connection's compiled per-message path (``_fastconn``).

With the extension built, ``ringline.portable.Connection`` runs
``data_received``, ``recv`` and ``send_nowait`` from the Cython base
``_fastconn.Core``; the pure install runs the Python methods.  The native
suites check the contract on both; these tests aim at what the compiled
path does differently inside: the park reused without asking it, the
waiting Task's wake-up callback kept from one wait to the next (another
Task waiting must still be the one woken), parks handed out by the
pure-Python receives (``recv_exactly``, ``with_data``) in between, and the
thread check that skips asyncio's running-loop lookup.  Each runs on the
portable backend on asyncio's loop and on uvloop; the pure pass of
``make test`` runs them on the Python methods.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

import pytest

import ringline
from ringline.portable import connection as pconn
from tests.support import backends as nb

HOST = "127.0.0.1"

portable_name = nb.portable_name


async def _pair() -> tuple[Any, Any, Any]:
    """(server, server-side conn, client conn) on the running loop."""
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def handler(conn: Any) -> None:
        got.set_result(conn)
        await done.wait()

    server = await ringline.serve(handler, HOST, 0)
    client = await ringline.connect(HOST, server.port)
    srv = await asyncio.wait_for(got, 5)
    srv._test_done = done
    return server, srv, client


async def _close(server: Any, srv: Any, client: Any) -> None:
    client.close()
    srv._test_done.set()
    await server.shutdown(2.0)


def test_the_compiled_path_is_used_when_built(portable_name: str) -> None:
    if not pconn.COMPILED:
        pytest.skip("pure install: no compiled base")

    async def main() -> tuple[bool, bool]:
        server, srv, client = await _pair()
        try:
            r = srv.recv()
            # Not a Python coroutine frame, yet a coroutine to asyncio.
            one_shot = not inspect.iscoroutine(r) and asyncio.iscoroutine(r)
            client.send_nowait(b"x")
            assert await r == b"x"
            return isinstance(srv, pconn._Core), one_shot
        finally:
            await _close(server, srv, client)

    assert nb.run_native(portable_name, main) == (True, True)


def test_a_receive_is_awaited_once(portable_name: str) -> None:
    async def main() -> None:
        server, srv, client = await _pair()
        try:
            r = srv.recv()
            client.send_nowait(b"a")
            assert await r == b"a"
            if pconn.COMPILED:
                with pytest.raises(RuntimeError, match="already awaited"):
                    await r
        finally:
            await _close(server, srv, client)

    nb.run_native(portable_name, main)


def test_the_waiting_task_is_woken_when_tasks_take_turns(portable_name: str) -> None:
    # Each round a different Task waits on the same connection: the wake-up
    # kept from the previous wait belongs to another Task and must not be
    # the one called.
    async def main() -> list[tuple[int, bytes]]:
        server, srv, client = await _pair()
        got: list[tuple[int, bytes]] = []
        try:
            for i in range(20):
                async def reader(k: int = i) -> None:
                    got.append((k, await srv.recv()))
                t = asyncio.ensure_future(reader())
                await asyncio.sleep(0)          # parked
                client.send_nowait(bytes([65 + i]))
                await asyncio.wait_for(t, 5)
            return got
        finally:
            await _close(server, srv, client)

    assert nb.run_native(portable_name, main) == [(i, bytes([65 + i])) for i in range(20)]


def test_compiled_and_python_receives_share_the_park(portable_name: str) -> None:
    # recv (compiled), recv_exactly and with_data (Python) wait on the same
    # park in turn, with cancellations between: every byte arrives once, in
    # order, and nothing waits forever.
    async def main() -> bytes:
        server, srv, client = await _pair()
        out = bytearray()
        try:
            for i in range(12):
                kind = i % 3
                if kind == 0:
                    fut = asyncio.ensure_future(srv.recv())
                elif kind == 1:
                    fut = asyncio.ensure_future(srv.recv_exactly(2))
                else:
                    fut = asyncio.ensure_future(srv.with_data(lambda v: len(v)))
                await asyncio.sleep(0)
                if i % 4 == 3:
                    fut.cancel()                # a wait abandoned mid-way
                    with pytest.raises(asyncio.CancelledError):
                        await fut
                    continue
                chunk = bytes([97 + i]) * 2
                client.send_nowait(chunk)
                res = await asyncio.wait_for(fut, 5)
                if kind == 2:
                    out += chunk if res == 2 else b"?"
                else:
                    out += res
                    if len(res) < 2:
                        out += await asyncio.wait_for(srv.recv_exactly(2 - len(res)), 5)
            return bytes(out)
        finally:
            await _close(server, srv, client)

    want = b"".join(bytes([97 + i]) * 2 for i in range(12) if i % 4 != 3)
    assert nb.run_native(portable_name, main) == want


def test_a_timed_out_recv_leaves_the_bytes_for_the_next(portable_name: str) -> None:
    async def main() -> bytes:
        server, srv, client = await _pair()
        try:
            for _ in range(3):
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(srv.recv(), 0.01)
            client.send_nowait(b"kept")
            return await asyncio.wait_for(srv.recv(), 5)
        finally:
            await _close(server, srv, client)

    assert nb.run_native(portable_name, main) == b"kept"


def test_calls_from_another_thread_are_refused_after_traffic(portable_name: str) -> None:
    # The compiled check skips asyncio's lookup for the loop's own thread
    # (the one its callbacks ran in); any other thread still gets the error.
    async def main() -> list[str]:
        server, srv, client = await _pair()
        errors: list[str] = []
        try:
            for _ in range(3):
                client.send_nowait(b"p")
                assert await srv.recv() == b"p"
                srv.send_nowait(b"q")
                assert await client.recv() == b"q"

            def other() -> None:
                for call in (lambda: srv.send_nowait(b"x"), lambda: srv.recv()):
                    try:
                        call()
                    except RuntimeError as exc:
                        errors.append(str(exc).split(":")[0])

            th = threading.Thread(target=other)
            th.start()
            while th.is_alive():
                await asyncio.sleep(0.001)
            return errors
        finally:
            await _close(server, srv, client)

    errors = nb.run_native(portable_name, main)
    assert len(errors) == 2 and all("thread" in e or "loop" in e for e in errors), errors


def test_a_receive_runs_as_its_own_task(portable_name: str) -> None:
    # asyncio.create_task(conn.recv()) works on the portable backend
    # (compiled or not); cancelling such a task consumes nothing.
    async def main() -> tuple[bytes, bool]:
        server, srv, client = await _pair()
        try:
            t = asyncio.create_task(srv.recv())
            await asyncio.sleep(0.01)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            t = asyncio.create_task(srv.recv())
            await asyncio.sleep(0)
            client.send_nowait(b"task")
            return await asyncio.wait_for(t, 5), t.cancelled()
        finally:
            await _close(server, srv, client)

    assert nb.run_native(portable_name, main) == (b"task", False)
