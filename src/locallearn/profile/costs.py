"""Per-unit costs measured by one dummy forward: output shape, parameters, FLOPs, bytes saved for backward.

FLOPs count 2 x multiply-accumulates of convolutions and linear layers (the usual convention; BN, ReLU and
pooling are ignored). Saved bytes are the storages autograd keeps for backward, deduplicated by storage,
for a training-mode forward: the activation memory a unit holds until its backward runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class UnitCost:
    out_shape: tuple[int, ...]  # per sample, e.g. (C, H, W)
    params: int
    flops: int  # forward FLOPs per sample
    saved_bytes: int  # bytes saved for backward per sample (training mode)


def _flop_hook(counter: list[int]):
    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs = out.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            macs = out.numel() * module.in_features
        else:
            return
        counter[0] += 2 * macs

    return hook


class SavedTensorMeter:
    """Context manager summing the distinct storages autograd saves for backward (CPU or CUDA).

    Parameters are excluded: they are counted once as weights, not as activations.
    """

    def __init__(self, exclude: list[torch.Tensor] | tuple[torch.Tensor, ...] = ()) -> None:
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self._seen: dict[int, int] = {}

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self._exclude and ptr not in self._seen:
            self._seen[ptr] = storage.nbytes()
        return t

    @property
    def bytes(self) -> int:
        return sum(self._seen.values())

    def __enter__(self) -> SavedTensorMeter:
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
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
        counter = [0]
        handles = [m.register_forward_hook(_flop_hook(counter)) for m in unit.modules()]
        params = list(unit.parameters())
        x = x.detach().requires_grad_(True)
        with SavedTensorMeter(exclude=params) as meter:
            out = unit(x)
        for h in handles:
            h.remove()
        costs.append(
            UnitCost(
                out_shape=tuple(out.shape[1:]),
                params=sum(p.numel() for p in params),
                flops=counter[0] // batch,
                saved_bytes=meter.bytes // batch,
            )
        )
        x = out
    for unit, snap, mode in zip(units, snapshots, modes, strict=True):
        unit.load_state_dict(snap)
        unit.train(mode)
    return costs
