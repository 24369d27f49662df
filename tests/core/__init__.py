"""Tests of ringline._core: the ring, completion tags and the compiled loop core."""
