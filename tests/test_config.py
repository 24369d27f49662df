"""Tests for ringline.config.Config: defaults, per-field rules, relations."""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from typing import Any

import pytest

from ringline import config as config_module
from ringline.config import Config
from ringline.errors import ConfigError

MiB = 1024 * 1024

DEFAULTS: dict[str, Any] = {
    "sq_entries": 256,
    "cq_entries": 0,
    "sqpoll": False,
    "sqpoll_idle_ms": 1000,
    "sqpoll_cpu": None,
    "coop_taskrun": None,
    "defer_taskrun": None,
    "single_issuer": True,
    "recv_buffer_count": None,
    "recv_buffer_size": None,
    "recv_buffer_group": 0,
    "send_pool_slots": 1024,
    "send_pool_slot_size": 16384,
    "send_zc_threshold": 4096,
    "send_queue_limit": 4 * MiB,
    "send_queue_low_water": None,
    "max_connections": 16000,
    "backlog": 1024,
    "reuse_port": False,
    "tcp_nodelay": True,
    "recv_accumulator_limit": 16 * MiB,
    "connect_timeout": None,
    "raise_fd_limit": False,
    "workers": 0,
    "pin_to_core": True,
    "core_offset": 0,
    "shutdown_timeout": 5.0,
    "registered_buffers": 0,
    "registered_buffer_size": MiB,
    "file_slots": 64,
    "nvme_cmds_in_flight": 256,
    "malloc_trim_threshold": 0,
    "backend": "auto",
    "debug": False,
    "tls": "auto",
    "ktls": None,
    "tls_handshake_timeout": 10.0,
    "tls_shutdown_timeout": 5.0,
}

# The public fields; the private switches (``_fixed_files`` ...) are for
# tests of the paths a kernel or host would pick otherwise, not documented.
FIELD_NAMES = [f.name for f in dataclasses.fields(Config) if not f.name.startswith("_")]
PRIVATE_NAMES = [f.name for f in dataclasses.fields(Config) if f.name.startswith("_")]


def test_private_switches_are_validated_flags() -> None:
    assert PRIVATE_NAMES == ["_fixed_files", "_recv_buffers_incremental", "_zc_to_local_peers"]
    for name in PRIVATE_NAMES:
        with pytest.raises(ConfigError):
            Config(**{name: "yes"})


def test_all_is_config_only() -> None:
    assert config_module.__all__ == ["Config"]


def test_fields_are_exactly_the_documented_ones() -> None:
    assert list(DEFAULTS) == FIELD_NAMES


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_default(name: str) -> None:
    assert getattr(Config(), name) == DEFAULTS[name]
    assert type(getattr(Config(), name)) is type(DEFAULTS[name])


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_every_field_is_in_the_docstring_table(name: str) -> None:
    assert Config.__doc__ is not None
    # cleandoc: 3.13 strips the docstring's common indentation at compile time.
    assert f"\n{name} " in inspect.cleandoc(Config.__doc__)


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_every_field_has_a_rule(name: str) -> None:
    field = next(f for f in dataclasses.fields(Config) if f.name == name)
    assert hasattr(field.metadata["rule"], "check")


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        Config(256)  # type: ignore[call-arg]


def test_unknown_field_is_type_error() -> None:
    with pytest.raises(TypeError):
        Config(sq_entrys=256)  # type: ignore[call-arg]


# ------------------------------------------------------ per-field validation

BAD: list[tuple[str, Any]] = [
    # ring
    ("sq_entries", 0), ("sq_entries", 3), ("sq_entries", 65536),
    ("sq_entries", -4), ("sq_entries", 256.0), ("sq_entries", True),
    ("sq_entries", "256"), ("sq_entries", None),
    ("cq_entries", 1000), ("cq_entries", 131072), ("cq_entries", -1),
    ("cq_entries", 128),  # < sq_entries
    ("cq_entries", 1024.0),
    ("sqpoll", 1), ("sqpoll", None), ("sqpoll", "yes"),
    ("sqpoll_idle_ms", -1), ("sqpoll_idle_ms", 1 << 32), ("sqpoll_idle_ms", 1.5),
    ("sqpoll_cpu", -1), ("sqpoll_cpu", 1.0), ("sqpoll_cpu", False),
    ("coop_taskrun", 1), ("coop_taskrun", "auto"),
    ("defer_taskrun", 0), ("defer_taskrun", "auto"),
    ("single_issuer", 1), ("single_issuer", None),
    # provided buffer ring
    ("recv_buffer_count", 0), ("recv_buffer_count", 100),
    ("recv_buffer_count", 65536), ("recv_buffer_count", 256.0),
    ("recv_buffer_size", 63), ("recv_buffer_size", (1 << 20) + 1),
    ("recv_buffer_size", 0), ("recv_buffer_size", 16384.0),
    ("recv_buffer_group", -1), ("recv_buffer_group", 65536),
    ("recv_buffer_group", None),
    # send
    ("send_pool_slots", 0), ("send_pool_slots", 65536),
    ("send_pool_slots", True),
    ("send_pool_slot_size", 63), ("send_pool_slot_size", (1 << 24) + 1),
    ("send_zc_threshold", -1), ("send_zc_threshold", 1 << 31),
    ("send_zc_threshold", 4096.0),
    ("send_queue_limit", 0), ("send_queue_limit", -1),
    ("send_queue_limit", math.inf),
    ("send_queue_low_water", -1), ("send_queue_low_water", 4 * MiB + 1),
    ("send_queue_low_water", 1.0),
    # connections
    ("max_connections", 0), ("max_connections", 1 << 24),
    ("max_connections", 16000.0),
    ("max_connections", (1 << 20) - 63),  # + 64 file_slots > fixed table
    ("backlog", 0), ("backlog", 1 << 31), ("backlog", None),
    ("reuse_port", 1), ("reuse_port", None),
    ("tcp_nodelay", 0), ("tcp_nodelay", "true"),
    ("recv_accumulator_limit", 0),
    ("recv_accumulator_limit", 1.0),
    ("recv_accumulator_limit", 16383),      # below the floor
    ("connect_timeout", 0), ("connect_timeout", -1.0),
    ("connect_timeout", math.inf), ("connect_timeout", math.nan),
    ("connect_timeout", True), ("connect_timeout", "5"),
    ("raise_fd_limit", 1), ("raise_fd_limit", None),
    # workers
    ("workers", -1), ("workers", 2.0), ("workers", None),
    ("pin_to_core", 1), ("pin_to_core", None),
    ("core_offset", -1), ("core_offset", None),
    ("shutdown_timeout", 0), ("shutdown_timeout", -5.0),
    ("shutdown_timeout", math.inf), ("shutdown_timeout", None),
    ("shutdown_timeout", False),
    # files
    ("registered_buffers", -1), ("registered_buffers", (1 << 14) + 1),
    ("registered_buffer_size", 0), ("registered_buffer_size", 4095),
    ("registered_buffer_size", 4096 + 512),
    ("registered_buffer_size", (1 << 30) + 4096),
    ("file_slots", -1), ("file_slots", 65536),
    ("nvme_cmds_in_flight", 0), ("nvme_cmds_in_flight", 65536),
    # memory
    ("malloc_trim_threshold", -1), ("malloc_trim_threshold", 1 << 31),
    ("malloc_trim_threshold", None),
    # debugging
    ("backend", "io_uring"), ("backend", None), ("backend", 1),
    ("debug", 1), ("debug", None),
    ("tls", "openssl"), ("tls", None), ("ktls", "yes"), ("ktls", 1),
    ("tls_handshake_timeout", 0), ("tls_handshake_timeout", None),
    ("tls_shutdown_timeout", -1.0), ("tls_shutdown_timeout", math.inf),
]


def test_bad_table_covers_every_field() -> None:
    assert {name for name, _ in BAD} == set(FIELD_NAMES)


@pytest.mark.parametrize(("name", "value"), BAD,
                         ids=[f"{n}={v!r}" for n, v in BAD])
def test_bad_value_names_the_field(name: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**{name: value})
    exc = info.value
    assert exc.field == name
    assert str(exc).startswith(f"Config.{name}: ")
    assert f"(got {value!r})" in str(exc)
    assert isinstance(exc, ValueError)


GOOD: list[tuple[str, Any]] = [
    ("sq_entries", 1), ("sq_entries", 32768),
    ("cq_entries", 256), ("cq_entries", 65536),
    ("sqpoll_idle_ms", 0), ("sqpoll_idle_ms", (1 << 32) - 1),
    ("coop_taskrun", True), ("coop_taskrun", False),
    ("defer_taskrun", True), ("defer_taskrun", False),
    ("single_issuer", False),
    ("recv_buffer_count", 1), ("recv_buffer_count", 32768),
    ("recv_buffer_size", 64), ("recv_buffer_size", 1 << 20),
    ("recv_buffer_size", 1000),  # need not be a power of two
    ("recv_buffer_group", 65535),
    ("send_pool_slots", 1), ("send_pool_slots", 65535),
    ("send_pool_slot_size", 64), ("send_pool_slot_size", 1 << 24),
    ("send_zc_threshold", 0),
    ("send_queue_limit", 1 << 40),
    ("send_queue_low_water", 0), ("send_queue_low_water", 4 * MiB),
    ("max_connections", 1), ("max_connections", (1 << 20) - 64),
    ("backlog", 1),
    ("recv_accumulator_limit", 16384),   # the floor (tests/test_config_combos.py)
    ("connect_timeout", 1), ("connect_timeout", 0.001),
    ("workers", 1), ("workers", 512),
    ("core_offset", 7),
    ("shutdown_timeout", 1), ("shutdown_timeout", 0.5),
    ("registered_buffers", 1 << 14),
    ("registered_buffer_size", 4096), ("registered_buffer_size", 1 << 30),
    ("file_slots", 0), ("nvme_cmds_in_flight", 65535),
    ("malloc_trim_threshold", 0), ("malloc_trim_threshold", (1 << 31) - 1),
    ("backend", "uring"), ("backend", "portable"),
    ("debug", True),
    ("tls", "ringline"), ("tls", "asyncio"), ("ktls", False), ("ktls", True),
]


@pytest.mark.parametrize(("name", "value"), GOOD,
                         ids=[f"{n}={v!r}" for n, v in GOOD])
def test_edge_value_accepted(name: str, value: Any) -> None:
    assert getattr(Config(**{name: value}), name) == value


# ------------------------------------------------------------- relations

def test_cq_entries_must_cover_sq_entries() -> None:
    Config(sq_entries=1024, cq_entries=1024)
    with pytest.raises(ConfigError) as info:
        Config(sq_entries=1024, cq_entries=512)
    assert info.value.field == "cq_entries"
    assert "sq_entries (1024)" in str(info.value)


def test_sqpoll_auto_turns_off_taskrun_flags() -> None:
    cfg = Config(sqpoll=True)
    assert cfg.coop_taskrun is None and cfg.defer_taskrun is None
    assert not cfg.effective_coop_taskrun
    assert not cfg.effective_defer_taskrun


def test_default_uses_taskrun_flags() -> None:
    cfg = Config()
    assert cfg.effective_coop_taskrun
    assert cfg.effective_defer_taskrun


@pytest.mark.parametrize("name", ["coop_taskrun", "defer_taskrun"])
def test_explicit_taskrun_flag_with_sqpoll_is_an_error(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config(sqpoll=True, **{name: True})
    assert info.value.field == name
    assert "sqpoll" in str(info.value)


@pytest.mark.parametrize("name", ["coop_taskrun", "defer_taskrun"])
def test_explicit_false_taskrun_flag_with_sqpoll_is_fine(name: str) -> None:
    cfg = Config(sqpoll=True, **{name: False})
    assert getattr(cfg, f"effective_{name}") is False


def test_explicit_false_overrides_auto() -> None:
    cfg = Config(coop_taskrun=False, defer_taskrun=False)
    assert not cfg.effective_coop_taskrun
    assert not cfg.effective_defer_taskrun


def test_defer_taskrun_needs_single_issuer() -> None:
    with pytest.raises(ConfigError) as info:
        Config(single_issuer=False, defer_taskrun=True)
    assert info.value.field == "defer_taskrun"
    assert "single_issuer" in str(info.value)
    assert not Config(single_issuer=False).effective_defer_taskrun


def test_sqpoll_cpu_needs_sqpoll() -> None:
    with pytest.raises(ConfigError) as info:
        Config(sqpoll_cpu=2)
    assert info.value.field == "sqpoll_cpu"
    assert Config(sqpoll=True, sqpoll_cpu=2).sqpoll_cpu == 2


def test_low_water_must_not_exceed_limit() -> None:
    Config(send_queue_limit=1000, send_queue_low_water=1000)
    with pytest.raises(ConfigError) as info:
        Config(send_queue_limit=1000, send_queue_low_water=1001)
    assert info.value.field == "send_queue_low_water"


def test_accumulator_limit_must_hold_one_buffer() -> None:
    Config(recv_buffer_size=32768, recv_accumulator_limit=32768)
    with pytest.raises(ConfigError) as info:
        Config(recv_buffer_size=32768, recv_accumulator_limit=32767)
    assert info.value.field == "recv_accumulator_limit"


def test_connections_and_file_slots_share_fixed_file_table() -> None:
    Config(max_connections=(1 << 20) - 10, file_slots=10)
    with pytest.raises(ConfigError) as info:
        Config(max_connections=(1 << 20) - 10, file_slots=11)
    assert info.value.field == "max_connections"


# ------------------------------------------------------- derived values

@pytest.mark.parametrize(("sq", "cq", "expected"), [
    (256, 0, 1024), (1, 0, 4), (16384, 0, 65536), (32768, 0, 65536),
    (256, 256, 256), (256, 4096, 4096),
])
def test_effective_cq_entries(sq: int, cq: int, expected: int) -> None:
    assert Config(sq_entries=sq, cq_entries=cq).effective_cq_entries == expected


def test_effective_send_queue_low_water() -> None:
    assert Config().effective_send_queue_low_water == MiB
    assert Config(send_queue_limit=100).effective_send_queue_low_water == 25
    assert Config(send_queue_low_water=7).effective_send_queue_low_water == 7


def test_effective_workers() -> None:
    assert Config(workers=3).effective_workers == 3
    assert Config().effective_workers >= 1


# --------------------------------------------------- immutability, replace

def test_frozen() -> None:
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sq_entries = 512  # type: ignore[misc]


def test_slots() -> None:
    assert not hasattr(Config(), "__dict__")


def test_equal_and_hashable() -> None:
    assert Config() == Config()
    assert hash(Config(sq_entries=512)) == hash(Config(sq_entries=512))
    assert Config() != Config(debug=True)


def test_replace_returns_validated_copy() -> None:
    base = Config()
    new = base.replace(sq_entries=512, debug=True)
    assert (new.sq_entries, new.debug) == (512, True)
    assert (base.sq_entries, base.debug) == (256, False)
    assert new.replace() == new


def test_replace_validates() -> None:
    with pytest.raises(ConfigError) as info:
        Config().replace(recv_buffer_count=3)
    assert info.value.field == "recv_buffer_count"


def test_replace_validates_relations() -> None:
    cfg = Config(sqpoll=True, sqpoll_cpu=1)
    with pytest.raises(ConfigError) as info:
        cfg.replace(sqpoll=False)
    assert info.value.field == "sqpoll_cpu"
    with pytest.raises(ConfigError) as info:
        Config(defer_taskrun=True).replace(sqpoll=True)
    assert info.value.field == "defer_taskrun"


def test_replace_unknown_field() -> None:
    with pytest.raises(TypeError, match="sq_entrys"):
        Config().replace(sq_entrys=512)


def test_debug_starts_the_loop_in_debug_mode() -> None:
    import ringline

    # The pure install has no io_uring: ask for the portable backend there,
    # or "auto" warns that it falls back (tests/test_pure.py checks that).
    pure = os.environ.get("RINGLINE_EXPECT_PURE") == "1"
    for debug in (False, True):
        loop = ringline.new_event_loop(Config(debug=debug, backend="portable" if pure else "auto"))
        try:
            assert loop.get_debug() is debug
        finally:
            loop.close()
