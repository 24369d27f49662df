"""One worker process per core: the public path of ``ringline.native.workers`` (see that module)."""

from ringline.native.workers import (
    WorkerPool,
    launch_workers,
)

__all__ = [
    "WorkerPool",
    "launch_workers",
]
