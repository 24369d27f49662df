"""Whether a closed loop is freed by its last reference (no reference cycle
left for the collector): tornado's circlerefs_test, as a helper."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any


def freed_without_the_collector(make_and_close: Callable[[], Any]) -> tuple[bool, list[str]]:
    """Call ``make_and_close`` (builds a loop, uses it, closes it and returns
    it) twice, the second time with the collector off.  Returns whether that
    loop outlived its last reference, and the kinds of object a collection
    then found in cycles, counting only those of the loop's own package (the
    collection also finds whatever earlier tests left unreachable)."""
    make_and_close()        # first-use caches out of the way
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        loop = make_and_close()
        package = type(loop).__module__.partition(".")[0]
        ref = weakref.ref(loop)
        del loop
        alive = ref() is not None
        gc.collect()
        garbage = sorted({type(o).__name__ for o in gc.garbage
                          if type(o).__module__.partition(".")[0] == package})
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()
    return alive, garbage
