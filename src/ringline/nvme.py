"""NVMe passthrough on the ring: the public path of ``ringline.files.nvme`` (see that module)."""

from ringline.files.nvme import (
    NVME_URING_CMD_ADMIN,
    NVME_URING_CMD_IO,
    AdminOpcode,
    IoOpcode,
    NvmeDevice,
    NvmeError,
    NvmeResult,
    open,
    parse_identify_namespace,
    rw_fields,
)

__all__ = [
    "NVME_URING_CMD_ADMIN",
    "NVME_URING_CMD_IO",
    "AdminOpcode",
    "IoOpcode",
    "NvmeDevice",
    "NvmeError",
    "NvmeResult",
    "open",
    "parse_identify_namespace",
    "rw_fields",
]
