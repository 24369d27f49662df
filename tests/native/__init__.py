"""Tests of the native face: Connection, handler tasks, serve/launch, workers."""
