"""What bulk work on many small objects shares."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused for the block.

    A page of records (or a chunk of store rows) makes tens of thousands of small objects
    that can form no cycle: the collector would run dozens of times over everything alive,
    for nothing (pausing it halves bulk read times). They are still freed by reference
    counting.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
