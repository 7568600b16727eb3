"""Host memory that training frees goes back to the operating system (glibc on Linux).

glibc serves a request below its mmap threshold from its heap, and raises that threshold (up to 32 MiB) each
time a larger block is freed. Tensors of a few MiB then live on the heap, and what they free stays in the
process: a K-stage step whose stages use different tensor sizes keeps the freed memory of every earlier
stage resident beside the live one (ResNet-32, K = 16, batch 1024: 0.7 GiB resident between steps, a third
more at the peak). A fixed threshold sends every tensor of `THRESHOLD` bytes or more to its own mapping,
returned when the tensor dies, so the resident size follows the tensors alive. Smaller blocks (parameters,
small activations) stay on the heap, where reuse is cheap. The price is page faults on every such tensor,
which made steps 2-3x slower at small batches on the machine of docs/results.md: hence a run setting
(`return_freed_memory`), off by default.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

THRESHOLD = 4 * 1024**2  # bytes
_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
_done = False


def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold at `THRESHOLD` for this process, once; True if it is set. Nothing happens
    on another C library, or when the user chose a threshold with the MALLOC_MMAP_THRESHOLD_ variable."""
    global _done
    if _done or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return _done
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        _done = bool(libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD))  # 1 on success
    except (OSError, AttributeError, TypeError):  # no mallopt: not glibc
        _done = False
    return _done
