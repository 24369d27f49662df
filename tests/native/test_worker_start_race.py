"""A WorkerPool stopped while its workers are still starting: every worker
exits cleanly (0), none dies of the default SIGTERM action."""

import ringline
from ringline.workers import WorkerPool


class Quiet(ringline.Handler):
    async def on_accept(self, conn):
        await conn.recv()


def test_shutdown_right_after_start_stops_every_worker_gracefully():
    for _ in range(5):
        pool = WorkerPool(Quiet, ("127.0.0.1", 0), ringline.Config(shutdown_timeout=0.5),
                          workers=2).start()
        pool.shutdown()            # before any worker can have installed its handler
        assert pool.wait(timeout=15) == [0, 0]
