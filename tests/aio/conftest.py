"""The every-loop fixtures for the asyncio-face tests: each test that takes
``loop_name``, ``loop_factory`` or ``loop`` runs once on asyncio's
SelectorEventLoop, uvloop and ringline (tests/support/loops.py)."""

import pytest

from tests.support.loops import loop, loop_exceptions, loop_factory, loop_name

__all__ = ["loop", "loop_exceptions", "loop_factory", "loop_name", "side"]


@pytest.fixture(params=["client", "server"])
def side(request: pytest.FixtureRequest) -> str:
    """Which end of the connection the transport under test is."""
    return request.param
