"""Argument checks at the public entry points: a wrong type is a TypeError
at the call, naming the call and the argument, not an AttributeError (or a
silent success) later, when the value is first used.  Pure Python: the
portable backend and the pure install import it too."""

from __future__ import annotations

import math
from typing import Any

from ringline.config import Config

__all__ = ["callable_arg", "config_arg", "host_arg", "port_arg", "timeout_arg"]


def _kind(value: Any) -> str:
    return type(value).__name__


def config_arg(value: Any, where: str) -> Config | None:
    """``value`` when it is a :class:`Config` or None, else TypeError."""
    if value is not None and not isinstance(value, Config):
        raise TypeError(f"{where}: config must be a ringline.Config or None, "
                        f"not {_kind(value)}")
    return value


def callable_arg(value: Any, where: str, name: str) -> Any:
    if not callable(value):
        raise TypeError(f"{where}: {name} must be callable, not {_kind(value)}")
    return value


def host_arg(value: Any, where: str, *, optional: bool = True) -> Any:
    if value is None and optional:
        return value
    if not isinstance(value, str):
        alt = " or None" if optional else ""
        raise TypeError(f"{where}: host must be a str{alt}, not {_kind(value)}")
    return value


def port_arg(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: port must be an int, not {_kind(value)}")
    if not 0 <= value <= 65535:
        raise ValueError(f"{where}: port must be in 0..65535, got {value}")
    return value


def timeout_arg(value: Any, where: str) -> Any:
    if value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where}: timeout must be a number of seconds or None, "
                        f"not {_kind(value)}")
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{where}: timeout must be > 0, got {value}")
    return value
