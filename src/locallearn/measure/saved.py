"""Bytes autograd saves for backward, deduplicated by storage: the activation memory a graph holds.

Parameters and buffers are weights, not activations: a meter is told to skip their storages.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import NamedTuple

import torch

from .phase import recomputing


def storage_key(t: torch.Tensor) -> int:
    """Identifies the storage behind `t` (shared by its views) on every device, the meta device included, where
    every data pointer is 0: the address of the storage object itself."""
    return t.untyped_storage()._cdata


class _Saved:
    """What autograd keeps instead of a saved tensor: a box that dies with the graph node holding it."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


class Held(NamedTuple):
    """A storage some graph holds for backward."""

    bytes: int
    order: int  # how many storages the meter had recorded before this one
    recomputed: bool  # recorded while a checkpointed segment reran its forward inside backward


class SavedTensorMeter:
    """Context manager recording the distinct storages autograd saves for backward (CPU or CUDA).

    Tensors sharing storage with `exclude` (parameters and buffers: counted once as weights, not as
    activations) are skipped. `storages` maps each storage (`storage_key`) to its size, so that the meters of
    stages alive at the same time can be merged without counting a shared storage twice; `alive()` says which
    of them a graph still holds (after a backward has freed it, none). The held storages are followed as graph
    nodes are freed, so `peak()` is the largest set held at once: with activation checkpointing, that is the
    segments' inputs plus one segment's recomputed activations during backward, not everything ever saved.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._exclude = {storage_key(t) for t in exclude}
        self.storages: dict[int, int] = {}
        self._held: dict[int, tuple[Held, int]] = {}  # address -> (what is held, boxes still holding it)
        self._refs: set[weakref.ref] = set()
        self._records = 0
        self.held_bytes = 0
        self.peak_bytes = 0
        self._peak: dict[int, Held] | None = None  # the set at the peak, taken once the held set shrinks from it

    def _pack(self, t: torch.Tensor) -> _Saved:
        # Box a detached alias (same storage): a node that saves its own output would otherwise hold, through
        # the box, the output whose grad_fn is that node, a cycle outside Python's collector that leaks the
        # whole graph. Backward needs only the values.
        box = _Saved(t.detach())
        storage = t.untyped_storage()
        ptr = storage_key(t)
        if ptr in self._exclude:
            return box
        self.storages.setdefault(ptr, storage.nbytes())
        held, boxes = self._held.get(ptr, (None, 0))
        if held is None:
            held = Held(storage.nbytes(), self._records, recomputing())
            self._records += 1
            self.held_bytes += held.bytes
            if self.held_bytes > self.peak_bytes:
                self.peak_bytes, self._peak = self.held_bytes, None
        self._held[ptr] = (held, boxes + 1)
        self._refs.add(weakref.ref(box, lambda ref: self._release(ref, ptr)))
        return box

    def _release(self, ref: weakref.ref, ptr: int) -> None:
        self._refs.discard(ref)
        held, boxes = self._held[ptr]
        if boxes > 1:
            self._held[ptr] = (held, boxes - 1)
            return
        if self._peak is None:
            self._peak = self.held()
        del self._held[ptr]
        self.held_bytes -= held.bytes

    @property
    def bytes(self) -> int:
        """Every storage recorded so far (a forward pass: all still held)."""
        return sum(self.storages.values())

    @property
    def records(self) -> int:
        return self._records

    def held(self) -> dict[int, Held]:
        """The recorded storages that some graph still holds for backward."""
        return {ptr: held for ptr, (held, _) in self._held.items()}

    def alive(self) -> dict[int, int]:
        """Address -> bytes of the recorded storages that some graph still holds for backward."""
        return {ptr: held.bytes for ptr, held in self.held().items()}

    def peak(self) -> dict[int, Held]:
        """The storages held at the moment the most bytes were held at once."""
        return self._peak if self._peak is not None else self.held()

    def __enter__(self) -> SavedTensorMeter:
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda box: box.tensor)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def storage_sizes(tensors: Iterable[torch.Tensor]) -> dict[int, int]:
    """`storage_key` -> bytes of the distinct storages behind `tensors`."""
    return {storage_key(t): t.untyped_storage().nbytes() for t in tensors}
