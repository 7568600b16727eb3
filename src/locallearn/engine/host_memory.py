"""How a CPU run's tensors get their host memory: huge pages, and freed memory back to the OS (Linux, glibc).

Huge pages. A tensor of several MiB is new memory to the kernel each time it is made (glibc maps requests above
its mmap threshold afresh), and every 4 KiB page of it costs a page fault on first touch: a K = 16 InfoPro step
on ResNet-32 at batch 1024 took 5-7 million faults (20-30 GB of pages) and 40-48% of its CPU time in the kernel on
the virtual machine of docs/results.md. PyTorch's CPU allocator asks for transparent huge pages (2 MiB, one fault
each) on tensors of 2 MiB or more when `THP_MEM_ALLOC_ENABLE` is set at its first allocation, so
`ask_for_huge_pages` sets it unless the user did (`THP_MEM_ALLOC_ENABLE=0` declines). It takes effect only in a
process that has not made a CPU tensor yet: the CLI asks as it starts, a run built from Python asks when it is
built; elsewhere nothing changes. The kernel must allow huge pages on request
(`/sys/kernel/mm/transparent_hugepage/enabled`: `madvise` or `always`).

Freed memory. glibc serves a request below its mmap threshold from its heap, and raises that threshold (up to
32 MiB) each time a larger block is freed. Tensors of a few MiB then live on the heap, and what they free stays
in the process: a K-stage step whose stages use different tensor sizes keeps the freed memory of every earlier
stage resident beside the live one (ResNet-32, K = 16, batch 1024: 0.7 GiB resident between steps, a third
more at the peak). A fixed threshold sends every tensor of `THRESHOLD` bytes or more to its own mapping,
returned when the tensor dies, so the resident size follows the tensors alive. Smaller blocks (parameters,
small activations) stay on the heap, where reuse is cheap. The price is a fresh mapping, faulted in, for every
such tensor: small with huge pages at batch 1024, where it also made the K = 16 step faster, but +40% step time
at batch 256 (docs/results.md section 8). The run setting `return_freed_memory` chooses; unset, it is on for
batches of `AUTO_MIN_BATCH` or more.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

THRESHOLD = 4 * 1024**2  # bytes
AUTO_MIN_BATCH = 512  # between the batches measured: 256 (slower with it) and 1024 (faster and leaner with it)
HUGE_PAGES = "THP_MEM_ALLOC_ENABLE"  # read by PyTorch's CPU allocator at its first allocation
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


def ask_for_huge_pages() -> None:
    """Huge pages for the tensors of 2 MiB or more of this process, if it has made no CPU tensor yet and the
    user did not set `HUGE_PAGES`."""
    os.environ.setdefault(HUGE_PAGES, "1")


def prepare_host_memory(return_freed: bool | None, batch_size: int) -> None:
    """Before a CPU run builds anything: huge pages for large tensors, and freed memory back to the OS when
    `return_freed` (the run's `return_freed_memory` setting; None: for batches of `AUTO_MIN_BATCH` or more)."""
    ask_for_huge_pages()
    if return_freed or (return_freed is None and batch_size >= AUTO_MIN_BATCH):
        return_freed_memory()
