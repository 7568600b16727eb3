"""DGL's replay buffer (eugenium/DGL `buffer_experiments`) for the asynchronous pipeline mode.

A rank keeps the last `size` carries it received. Each step it trains on the least-used one, the freshest
among equals, and on none more than `max_reuse` times: when its predecessor is slower it replays recent
carries instead of waiting, and when its predecessor is faster the unused ones age out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    item: T
    arrival: int
    uses: int = 0


class ReplayBuffer(Generic[T]):
    def __init__(self, size: int, max_reuse: int) -> None:
        self.size, self.max_reuse = size, max_reuse
        self._entries: list[_Entry[T]] = []
        self._arrivals = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def arrivals(self) -> int:
        """Items added since the buffer was made."""
        return self._arrivals

    def add(self, item: T) -> None:
        """Keep `item`, dropping the oldest entry when full."""
        self._arrivals += 1
        self._entries.append(_Entry(item, self._arrivals))
        if len(self._entries) > self.size:
            self._entries.pop(0)

    def take(self) -> T | None:
        """The least-used, then freshest, entry still below `max_reuse` uses (None when there is none)."""
        usable = [e for e in self._entries if e.uses < self.max_reuse]
        if not usable:
            return None
        entry = min(usable, key=lambda e: (e.uses, -e.arrival))
        entry.uses += 1
        return entry.item

    def clear(self) -> None:
        self._entries.clear()
