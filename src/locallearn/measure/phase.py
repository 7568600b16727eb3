"""Which pass of a step is running, for meters that count the forward a checkpointed segment reruns apart.

The engine's activation checkpointing marks its rerun with `recomputation()`; meters ask `recomputing()`.
Kept here, below the engine, so that meters read the mark without importing the engine that sets it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_state = threading.local()  # per thread: a CUDA backward (and so its rerun) runs on the device's own thread


def recomputing() -> bool:
    """True while a checkpointed segment reruns its forward inside backward."""
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def recomputation() -> Iterator[None]:
    """Marks the block as a checkpointed segment's forward rerun inside backward."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1
