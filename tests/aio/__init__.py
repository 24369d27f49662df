"""Tests of the asyncio face: EventLoop, transports, readiness, apps on top."""
