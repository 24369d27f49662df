"""Files on the ring: ``fs`` (buffered and O_DIRECT files), the file operations
and registered-buffer pool, and NVMe passthrough."""
