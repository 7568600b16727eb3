"""Per-unit costs measured by one dummy forward: output shape, parameters, FLOPs, bytes saved for backward.

FLOPs count 2 x multiply-accumulates of convolutions and linear layers (the usual convention; BN, ReLU and
pooling are ignored). Saved bytes are the storages autograd keeps for backward, deduplicated by storage,
for a training-mode forward: the activation memory a unit holds until its backward runs.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..engine.recompute import recomputing


@dataclass(frozen=True)
class UnitCost:
    out_shape: tuple[int, ...]  # per sample, e.g. (C, H, W)
    params: int
    flops: int  # forward FLOPs per sample
    saved_bytes: int  # bytes saved for backward per sample (training mode)


class FlopCounter:
    """Context manager summing the forward FLOPs of the Conv2d and Linear layers under `roots`.

    Counted with forward hooks, so it sees exactly the calls made (a module run twice counts twice) and works
    for any model built from standard layers; the forward a checkpointed segment reruns in backward is summed
    apart, in `recompute_flops`. FLOPs are for the whole batch; divide by its size per sample.
    """

    def __init__(self, *roots: nn.Module) -> None:
        self._modules = list({id(m): m for root in roots for m in root.modules()}.values())
        self.flops = 0
        self.recompute_flops = 0  # forward FLOPs rerun inside backward by checkpointed segments

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs = out.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            macs = out.numel() * module.in_features
        else:
            return
        if recomputing():
            self.recompute_flops += 2 * macs
        else:
            self.flops += 2 * macs

    def __enter__(self) -> FlopCounter:
        self._handles = [m.register_forward_hook(self._hook) for m in self._modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()


def inference_flops(learner: nn.Module, x: torch.Tensor) -> int:
    """Forward FLOPs per image of the deployed network on `x` (B, C, H, W): the backbone plus the modules a
    mechanism keeps at inference (`learner.inference_modules`, e.g. ContSup's context nodes), no aux nets."""
    training = learner.training
    learner.eval()  # eval mode: BN statistics are not touched
    try:
        with torch.no_grad(), FlopCounter(learner.net, *learner.inference_modules) as counter:
            learner(x)
    finally:
        learner.train(training)
    return counter.flops // x.shape[0]


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


def measure_units(units: nn.ModuleList, input_shape: tuple[int, ...], batch: int = 2) -> list[UnitCost]:
    """Run a dummy batch through `units` in training mode and measure each one.

    BN running statistics are restored afterwards, so measuring does not change the model.
    """
    snapshots = [{k: v.clone() for k, v in u.state_dict().items()} for u in units]
    modes = [u.training for u in units]
    device = next((p.device for p in units.parameters()), torch.device("cpu"))
    x = torch.randn(batch, *input_shape, device=device)
    costs: list[UnitCost] = []
    for unit in units:
        unit.train()
        params = list(unit.parameters())
        x = x.detach().requires_grad_(True)
        with SavedTensorMeter(exclude=params) as meter, FlopCounter(unit) as counter:
            out = unit(x)
        costs.append(
            UnitCost(
                out_shape=tuple(out.shape[1:]),
                params=sum(p.numel() for p in params),
                flops=counter.flops // batch,
                saved_bytes=meter.bytes // batch,
            )
        )
        x = out
    for unit, snap, mode in zip(units, snapshots, modes, strict=True):
        unit.load_state_dict(snap)
        unit.train(mode)
    return costs
