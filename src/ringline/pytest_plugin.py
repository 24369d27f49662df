"""pytest plugin: ringline as a named loop factory for pytest-asyncio >= 1.4.

Installed as a ``pytest11`` entry point, so after ``pip install ringline`` a
test can ask for ringline's loop by name::

    @pytest.mark.asyncio(loop_factories=["ringline"])
    async def test_something():
        ...

``loop_factories=["asyncio", "ringline"]`` runs the test once on each.  For a
test run from a checkout (no installed metadata), load it by hand:
``pytest -p ringline.pytest_plugin``.

pytest-asyncio >= 1.4 asks its ``pytest_asyncio_loop_factories(config, item)``
hook (first result wins) for a mapping of names to loop factories, and then
runs every asyncio test once per factory in the mapping, unless the test's
marker names the ones it wants.  So that installing ringline changes nothing
for tests that do not ask for it, this plugin is a wrapper around that hook:

* another plugin or conftest answered: its mapping is kept, and "ringline" is
  added only for a test whose marker names it;
* nobody answered: a test whose marker names "ringline" gets "ringline" and
  "asyncio"; any other test gets just ``asyncio.new_event_loop`` -- which, in
  pytest-asyncio's runner, makes the same loop as no factory at all (the
  ``event_loop_policy`` fixture's), with one hidden parametrization id
  (pytest >= 8.4).

Without pytest-asyncio, or with a version that lacks the hook, this plugin
does nothing (``optionalhook``).  Importing it does not build a loop: ringline
is only asked for a loop when a test that named it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Mapping

import pytest

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: The name tests use in ``@pytest.mark.asyncio(loop_factories=[...])``.
NAME = "ringline"


def ringline_loop_factory() -> asyncio.AbstractEventLoop:
    """Return a new ringline loop (:func:`ringline.new_event_loop`)."""
    from ringline import new_event_loop
    return new_event_loop()


def _requested(item: pytest.Item) -> tuple[str, ...]:
    """The factory names the closest ``asyncio`` marker of ``item`` asks for."""
    marker = item.get_closest_marker("asyncio")
    if marker is None:
        return ()
    names = marker.kwargs.get("loop_factories")
    if isinstance(names, (list, tuple)):
        return tuple(n for n in names if isinstance(n, str))
    return ()


@pytest.hookimpl(wrapper=True, optionalhook=True)
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item,
) -> Generator[None, Mapping[str, LoopFactory] | None, Mapping[str, LoopFactory] | None]:
    """Offer ringline's loop to pytest-asyncio >= 1.4 under the name ``"ringline"``."""
    others: Mapping[str, LoopFactory] | None = yield
    wanted = NAME in _requested(item)
    if others is not None:
        if wanted and NAME not in others:
            return {**others, NAME: ringline_loop_factory}
        return others
    if wanted:
        return {NAME: ringline_loop_factory, "asyncio": asyncio.new_event_loop}
    # pytest-asyncio refuses a None once any implementation exists: hand back
    # the default loop, so tests that did not ask for ringline are unchanged.
    return {"asyncio": asyncio.new_event_loop}
