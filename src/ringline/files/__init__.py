"""Files on the ring: ``fs`` (buffered and O_DIRECT files), the file operations
and registered-buffer pool, and NVMe passthrough."""

# fs first: it imports direct.py (DirectFile subclasses fs.AsyncFile) at its end, which
# then finds AsyncFile defined even when a caller imports ringline.files.direct first.
from ringline.files import fs as fs
