"""Tests of ringline._net on its own (most of it is exercised through both faces)."""
