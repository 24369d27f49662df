"""``import ringline`` touches no asyncio policy API; asking for the policy does.

CPython 3.14 deprecates the policy names (``asyncio.DefaultEventLoopPolicy``
and friends warn when read) and 3.16 removes them.  The child interpreter
below removes those names from the ``asyncio`` module and serves them from a
module ``__getattr__`` that records each read and warns, as 3.14 does, then
imports ringline under ``-W error::DeprecationWarning``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import ringline
import ringline.aio.eventloop as ev
from tests.support import loops

_CHILD = r"""
import asyncio, json, warnings

POLICY_NAMES = ("AbstractEventLoopPolicy", "DefaultEventLoopPolicy",
                "get_event_loop_policy", "set_event_loop_policy")
saved = {name: asyncio.__dict__.pop(name) for name in POLICY_NAMES}
reads = []

def __getattr__(name):
    if name in saved:
        reads.append(name)
        warnings.warn(f"asyncio.{name} is deprecated", DeprecationWarning, stacklevel=2)
        return saved[name]
    raise AttributeError(name)

asyncio.__getattr__ = __getattr__

import ringline
import ringline.aio.eventloop as ev

out = {
    "reads_at_import": list(reads),
    "in_ringline_dict": "EventLoopPolicy" in vars(ringline),
    "in_eventloop_dict": "EventLoopPolicy" in vars(ev),
}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    policy_cls = ringline.EventLoopPolicy
out["reads_after_ask"] = list(reads)
out["warned_after_ask"] = [str(w.message) for w in caught]
out["subclass"] = issubclass(policy_cls, saved["DefaultEventLoopPolicy"])
out["same_class"] = policy_cls is ev.EventLoopPolicy and policy_cls is ringline.EventLoopPolicy
out["name"] = f"{policy_cls.__module__}.{policy_cls.__qualname__}"
print(json.dumps(out))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(ringline.__file__).resolve().parents[1])
    return env


def test_import_ringline_reads_no_policy_attribute(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", _CHILD],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=_env())
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["reads_at_import"] == []
    assert out["in_ringline_dict"] is False
    assert out["in_eventloop_dict"] is False
    # Asking for the policy builds it, from the (wrapped) asyncio base class:
    # so the wrapper does see reads, and the import above really made none.
    assert out["reads_after_ask"] == ["DefaultEventLoopPolicy"]
    assert out["warned_after_ask"] == ["asyncio.DefaultEventLoopPolicy is deprecated"]
    assert out["subclass"] is True
    assert out["same_class"] is True
    assert out["name"] == "ringline.aio.eventloop.EventLoopPolicy"


def test_policy_is_built_once_and_install_uses_it():
    loops.require_ringline()
    cls = ringline.EventLoopPolicy
    assert cls is ringline.EventLoopPolicy is ev.EventLoopPolicy
    assert "EventLoopPolicy" in vars(ev)
    saved = asyncio.get_event_loop_policy()
    try:
        ringline.install()
        assert type(asyncio.get_event_loop_policy()) is cls
    finally:
        asyncio.set_event_loop_policy(saved)
