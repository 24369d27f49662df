"""Config rejects combinations of fields that would break at run time or be
silently ignored (issue 20, item 4): each raises ConfigError (a ValueError)
naming the fields involved.  The per-field rules are in tests/test_config.py."""

from __future__ import annotations

import pytest

from ringline import Config
from ringline.errors import ConfigError

# (fields, the other field the message must name, a value that works)
BAD = [
    # recv_exactly/with_data of more than the limit fail: a tiny limit breaks
    # ordinary message sizes.
    ({"recv_accumulator_limit": 100}, "recv_exactly", {"recv_accumulator_limit": 16384}),
    ({"recv_accumulator_limit": 16383}, "ReceiveLimitExceeded",
     {"recv_accumulator_limit": 1 << 20}),
    # an explicit buffer must fit the limit
    ({"recv_buffer_size": 65536, "recv_accumulator_limit": 32768}, "recv_buffer_size",
     {"recv_buffer_size": 32768, "recv_accumulator_limit": 32768}),
    ({"send_queue_limit": 1000, "send_queue_low_water": 1001}, "send_queue_limit",
     {"send_queue_limit": 1000, "send_queue_low_water": 1000}),
    ({"sq_entries": 1024, "cq_entries": 512}, "sq_entries",
     {"sq_entries": 1024, "cq_entries": 1024}),
    ({"sqpoll_cpu": 1}, "sqpoll", {"sqpoll_cpu": 1, "sqpoll": True}),
    ({"single_issuer": False, "defer_taskrun": True}, "single_issuer",
     {"single_issuer": False}),
    ({"sqpoll": True, "coop_taskrun": True}, "sqpoll", {"sqpoll": True}),
    ({"max_connections": (1 << 20) - 10, "file_slots": 11}, "file_slots",
     {"max_connections": (1 << 20) - 10, "file_slots": 10}),
    # a pinning offset without pinning would be ignored
    ({"core_offset": 2, "pin_to_core": False}, "pin_to_core",
     {"core_offset": 2, "pin_to_core": True}),
]


@pytest.mark.parametrize(("fields", "other", "fixed"), BAD,
                         ids=["-".join(f"{k}={v}" for k, v in b[0].items()) for b in BAD])
def test_bad_combination_is_a_valueerror_naming_both(fields, other, fixed):
    with pytest.raises(ValueError) as info:
        Config(**fields)
    assert isinstance(info.value, ConfigError)
    msg = str(info.value)
    assert info.value.field in fields
    assert other in msg, msg
    # The fix the message suggests is accepted.
    cfg = Config(**fixed)
    for k, v in fixed.items():
        assert getattr(cfg, k) == v


def test_replace_checks_combinations_too():
    cfg = Config(pin_to_core=False)
    with pytest.raises(ConfigError) as info:
        cfg.replace(core_offset=3)
    assert info.value.field == "core_offset"


def test_auto_buffer_size_follows_a_small_limit():
    """A limit below the automatic buffer size is fine: the auto size is
    capped at it (only an explicit size must fit)."""
    cfg = Config(recv_accumulator_limit=16384)
    assert cfg.recv_buffer_size is None


def test_raise_fd_limit_is_off_by_default():
    assert Config().raise_fd_limit is False
    assert Config().reuse_port is False
