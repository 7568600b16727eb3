"""Tensor memory as the CPU allocator sees it: every allocation and free over a span, from `torch.profiler`.

Bytes saved for backward are not all a step needs: gradients of activations, a convolution's output before
the next layer consumes it, the upsampled maps of a decoder are alive for a while without being saved. On
CUDA `max_memory_allocated` sees them; on CPU the profiler's memory events do (sizes of allocations and
frees, in order). `AllocationMeter` turns them into the running total of tensor bytes allocated since it
started, and its high-water mark over any named window.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import os
from collections.abc import Iterator

import torch

_PREFIX = "locallearn.window:"


def cpu_profiler(**options: bool) -> torch.profiler.profile:
    """A CPU `torch.profiler.profile`, without the two log lines its tracing library prints to stderr at each
    start and stop (level 6 keeps its errors; read when the library first starts, so set before any profile)."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    return torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], **options)


class AllocationMeter:
    """Context manager recording the CPU allocator's events; `window(name)` marks a span to take a peak over.

    A free of a tensor allocated before the meter started is not seen (its size is unknown to the profiler),
    so totals are the bytes allocated since the start that are still alive: what the span added.
    """

    def __init__(self) -> None:
        self._profiler = cpu_profiler(profile_memory=True)
        self.peaks: dict[str, int] = {}
        self.peak = 0

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[None]:
        with torch.autograd.profiler.record_function(_PREFIX + name):
            yield

    def __enter__(self) -> AllocationMeter:
        self._profiler.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._profiler.__exit__(*exc)
        if exc[0] is None:
            self._read(self._profiler.profiler.kineto_results.events())

    def _read(self, events) -> None:
        memory = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
        times = [t for t, _ in memory]
        totals = list(itertools.accumulate(n for _, n in memory))  # bytes alive after each event
        self.peak = max(totals, default=0)
        for e in events:
            if e.name().startswith(_PREFIX):
                self.peaks[e.name()[len(_PREFIX) :]] = _peak_between(times, totals, e.start_ns(), e.end_ns())


def _peak_between(times: list[int], totals: list[int], start: int, end: int) -> int:
    """The largest running total over [start, end]: the level entering the window, or any event inside it."""
    first = bisect.bisect_left(times, start)
    last = bisect.bisect_right(times, end)
    entering = totals[first - 1] if first > 0 else 0
    return max([entering, *totals[first:last]])
