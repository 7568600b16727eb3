"""Per-unit costs measured by one dummy forward: output shape, parameters, FLOPs, bytes saved for backward.

FLOPs count 2 x multiply-accumulates of convolutions and linear layers (the usual convention; BN, ReLU and
pooling are ignored). Saved bytes are the storages autograd keeps for backward, deduplicated by storage,
for a training-mode forward: the activation memory a unit holds until its backward runs.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class UnitCost:
    out_shape: tuple[int, ...]  # per sample, e.g. (C, H, W)
    params: int
    flops: int  # forward FLOPs per sample
    saved_bytes: int  # bytes saved for backward per sample (training mode)


class FlopCounter:
    """Context manager summing the forward FLOPs of the Conv2d and Linear layers under `roots`.

    Counted with forward hooks, so it sees exactly the calls made (a module run twice counts twice) and works
    for any model built from standard layers. FLOPs are for the whole batch; divide by its size per sample.
    """

    def __init__(self, *roots: nn.Module) -> None:
        self._modules = list({id(m): m for root in roots for m in root.modules()}.values())
        self.flops = 0

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs = out.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            macs = out.numel() * module.in_features
        else:
            return
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


class SavedTensorMeter:
    """Context manager recording the distinct storages autograd saves for backward (CPU or CUDA).

    Tensors sharing storage with `exclude` (parameters and buffers: counted once as weights, not as
    activations) are skipped. `storages` maps each storage (`storage_key`) to its size, so that the meters of
    stages alive at the same time can be merged without counting a shared storage twice; `alive()` says which
    of them a graph still holds (after a backward has freed it, none).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._exclude = {storage_key(t) for t in exclude}
        self.storages: dict[int, int] = {}
        self._boxes: dict[int, list[weakref.ref]] = {}

    def _pack(self, t: torch.Tensor) -> _Saved:
        # Box a detached alias (same storage): a node that saves its own output would otherwise hold, through
        # the box, the output whose grad_fn is that node, a cycle outside Python's collector that leaks the
        # whole graph. Backward needs only the values.
        box = _Saved(t.detach())
        ptr = storage_key(t)
        if ptr not in self._exclude:
            self.storages.setdefault(ptr, t.untyped_storage().nbytes())
            self._boxes.setdefault(ptr, []).append(weakref.ref(box))
        return box

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())

    def alive(self) -> dict[int, int]:
        """The recorded storages that some graph still holds for backward."""
        return {ptr: self.storages[ptr] for ptr, refs in self._boxes.items() if any(r() is not None for r in refs)}

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
