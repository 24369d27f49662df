"""Tests of ringline.files: fs, O_DIRECT files and NVMe passthrough."""
