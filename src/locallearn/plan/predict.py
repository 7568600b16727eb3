"""Predict a training step's peak memory for any K, split and batch size without running it at that size.

The backbone's part comes from the unit table (`units.py`, measured once). What each stage adds to it, its aux
nets, mechanisms, the batch and the carries, is measured on small batches by running the stage's local loss
with the backbone stage replaced by a *stand-in*: a module that returns a fresh tensor of the stage's output
shape and records the call. Every backbone stage that runs inside a local loss (the stage itself, a cascade
re-running earlier ones) is a recorded call, priced from the unit table; everything else autograd saves is
measured. Bytes are combined per storage into what stage k holds for backward (`live`: alive before stage k
united with what it saves). The peak is the profiler's (`profile/step.py`, the allocator's on CPU):

    peak = weights + optimizer state + max_k (grads of stages 0..k + live_k + transient_k)

`transient_k` is what the allocator sees beyond those while stage k runs: gradients of activations, the
backward's temporaries, outputs not yet consumed. It is the profiler's own measurement (`profile.compare.measure`)
of the same configuration at the small batches, less the other terms predicted at those batches.
Each stage's activation, aux, alive-beside and transient bytes are fitted in the batch size through three small
batches (a quadratic: the contrastive loss holds B x B matrices) and evaluated at the requested batch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..config import RunConfig
from ..engine.step import autocast_context
from ..engine.trainer import resolve_amp, resolve_device
from ..measure.flops import FlopCounter
from ..measure.saved import SavedTensorMeter, storage_key, storage_sizes
from ..measure.units import UnitCost, measure_units
from ..methods import LocalLearner, MethodOptions, build_learner
from ..models import build_backbone
from ..profile.compare import measure
from ..profile.probe import InputSpec
from ..profile.step import BACKWARD_FACTOR
from ..split import SplitNet, resolve_cuts, with_stem_module
from .units import UnitMemory, measure_unit_memory

FIT_BATCHES = (2, 3, 4)  # the smallest that BatchNorm allows; three, for the quadratic
COMPONENTS = ("activation", "aux", "beside")


def split_text(cuts: list[int]) -> str:
    """Cut points as the `--split` value that reproduces them exactly."""
    return "units:" + ",".join(str(c) for c in cuts) if cuts else "even-memory"


@dataclass(frozen=True)
class _Call:
    """One run of a backbone stage inside a local loss (by its stand-in). Holding the tensors keeps their
    addresses from being reused while the stage is measured (a real stage would save them)."""

    stage: int
    x: torch.Tensor
    out: torch.Tensor


@dataclass(frozen=True)
class _Extras:
    """What one stage's local loss adds to its backbone at one batch size. Storages are named by role (`x`,
    `carry:h`, `call0:out`, ...; `anon<n>` for the rest) instead of by address."""

    sizes: dict[str, int]  # role -> bytes of every named storage
    alive: frozenset[str]  # the batch and the carries entering the stage
    saved: dict[str, int]  # what the loss saved for backward (the backbone's own saves come from the table)
    calls: tuple[tuple[int, str, str], ...]  # backbone stages run: (stage - k, input role, output role)
    flops: int  # forward FLOPs outside the backbone (aux nets, mechanisms), whole batch


class _KeepingMeter(SavedTensorMeter):
    """A meter that also holds every tensor it saw saved until it is dropped: a storage a graph frees within the
    stage is still counted (as the profiler's meter counts it), and its key cannot be reused meanwhile."""

    def __init__(self, exclude) -> None:
        super().__init__(exclude)
        self.kept: list[torch.Tensor] = []

    def _pack(self, t: torch.Tensor):
        self.kept.append(t.detach())
        return super()._pack(t)


class _StandIn(nn.Module):
    """Takes the place of backbone stage `index`: a fresh leaf of the stage's output shape, the call logged."""

    def __init__(self, index: int, out_shape: tuple[int, ...], dtype: torch.dtype, log: list[_Call]) -> None:
        super().__init__()
        self.index, self.out_shape, self.dtype, self.log = index, out_shape, dtype, log

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.randn(x.shape[0], *self.out_shape, dtype=self.dtype, device=x.device, requires_grad=True)
        self.log.append(_Call(self.index, x, out))
        return out


def _quadratic(points: list[tuple[int, float]], batch: int) -> float:
    """The parabola through three (batch, bytes) points, at `batch` (Lagrange form)."""
    total = 0.0
    for i, (bi, vi) in enumerate(points):
        term = vi
        for j, (bj, _) in enumerate(points):
            if j != i:
                term *= (batch - bj) / (bi - bj)
        total += term
    return max(total, 0.0)


@dataclass
class StagePrediction:
    """One stage at one batch size. Bytes for the whole batch; FLOPs per image (training)."""

    stage: int
    units: str  # first-last backbone unit indices
    activation_bytes: int  # saved by the backbone units that run in the stage's loss (a cascade's included)
    aux_bytes: int  # saved by aux nets, mechanisms and the loss
    beside_bytes: int  # the batch and the carries, alive but not saved
    grads_bytes: int  # gradients of stages 0..k: allocated by their backwards, alive to the step's end
    transient_bytes: int  # gradients of activations and the backward's temporaries at the stage's peak
    peak_bytes: int  # weights + optimizer state + grads + activation + aux + beside + transient
    train_flops: int
    aux_train_flops: int

    @property
    def live_bytes(self) -> int:
        return self.activation_bytes + self.aux_bytes + self.beside_bytes


@dataclass
class StepPrediction:
    method: str
    K: int
    cuts: list[int]
    batch_size: int
    weights_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    stages: list[StagePrediction]
    peak_stage: int
    peak_bytes: int
    train_flops: int  # per image
    e2e_train_flops: int  # per image, the backbone alone
    flops_overhead: float
    bound: bool = False  # the transients were not measured: the peak is a lower bound

    @property
    def static_bytes(self) -> int:
        return self.weights_bytes + self.grads_bytes + self.optimizer_bytes

    def dominant(self) -> str:
        """What the peak stage spends most on: weights + optimizer state, activations, aux nets, or the batch."""
        s = self.stages[self.peak_stage]
        parts = {
            "weights + grads + optimizer state": self.static_bytes,
            "backbone activations (the batch size)": s.activation_bytes,
            "the aux nets": s.aux_bytes,
            "the batch and carries": s.beside_bytes,
            "the backward's transients": s.transient_bytes,
        }
        return max(parts, key=parts.__getitem__)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "static_bytes": self.static_bytes, "dominant": self.dominant()}


@dataclass
class StepModel:
    """A built configuration's memory as a function of the batch size; `at(B)` is the prediction."""

    method: str
    cuts: list[int]
    unit_ranges: list[tuple[int, int]]
    weights_bytes: int
    trainable_bytes: int  # grads, and the optimizer's momentum when there is one
    grads_through: list[int]  # per stage k: bytes of the gradients of stages 0..k
    transient_ratios: list[float] | None  # per stage: transient bytes per byte held; None: not measured
    momentum: bool
    points: list[dict[str, list[tuple[int, float]]]]  # per stage, per component: (batch, bytes) x 3
    # Per stage: forward FLOPs per image of its units, and (batch, forward FLOPs of the whole batch outside them)
    # x 3: aux work can grow faster than the batch (a contrastive loss compares every pair of images).
    flops: list[tuple[int, list[tuple[int, float]]]]
    e2e_flops: int

    def at(self, batch: int) -> StepPrediction:
        grads = self.trainable_bytes
        opt = self.trainable_bytes if self.momentum else 0
        stages = []
        for k, (points, (own_flops, extra_points)) in enumerate(zip(self.points, self.flops, strict=True)):
            part = {c: round(_quadratic(points[c], batch)) for c in COMPONENTS}
            extra_flops = round(_quadratic(extra_points, batch))  # the whole batch's
            ratio = self.transient_ratios[k] if self.transient_ratios is not None else 0.0
            part["transient"] = round(ratio * sum(part.values()))
            first, last = self.unit_ranges[k]
            stages.append(
                StagePrediction(
                    stage=k,
                    units=f"{first}-{last}",
                    activation_bytes=part["activation"],
                    aux_bytes=part["aux"],
                    beside_bytes=part["beside"],
                    grads_bytes=self.grads_through[k],
                    transient_bytes=part["transient"],
                    peak_bytes=self.weights_bytes + opt + self.grads_through[k] + sum(part.values()),
                    train_flops=BACKWARD_FACTOR * (own_flops * batch + extra_flops) // batch,
                    aux_train_flops=BACKWARD_FACTOR * extra_flops // batch,
                )
            )
        peak = max(range(len(stages)), key=lambda k: stages[k].peak_bytes)
        train_flops = sum(s.train_flops for s in stages)
        return StepPrediction(
            method=self.method,
            K=len(stages),
            cuts=list(self.cuts),
            batch_size=batch,
            weights_bytes=self.weights_bytes,
            grads_bytes=grads,
            optimizer_bytes=opt,
            stages=stages,
            peak_stage=peak,
            peak_bytes=stages[peak].peak_bytes,
            train_flops=train_flops,
            e2e_train_flops=BACKWARD_FACTOR * self.e2e_flops,
            flops_overhead=train_flops / (BACKWARD_FACTOR * self.e2e_flops) - 1,
            bound=self.transient_ratios is None,
        )


class MemoryPredictor:
    """Everything measured once for a backbone and method; `model(cuts)` prices one configuration, `predict(K,
    split, batch)` answers for one batch."""

    def __init__(self, cfg: RunConfig, spec: InputSpec) -> None:
        self.cfg, self.spec = cfg, spec
        self.device = resolve_device(cfg.device)
        amp = resolve_amp(cfg.amp, self.device)
        self.amp = lambda: autocast_context(self.device, amp)
        torch.manual_seed(cfg.seed)
        self.backbone = build_backbone(cfg.arch, spec.num_classes).to(self.device)
        self.costs: list[UnitCost] = measure_units(self.backbone.units, spec.image_shape)  # as train's split sees
        self.units: list[UnitMemory] = measure_unit_memory(self.backbone.units, spec.image_shape, self.device, self.amp)
        self.stem_module = cfg.spec.stem_module(cfg.method_options)
        # The stages' extras need shapes, not values: on a CPU target they are run on the meta device, which
        # allocates and computes nothing (an InfoPro decoder at 224 x 224 would take gigabytes even at batch 4).
        # A CUDA target keeps its own device, where autocast gives the extras the run's dtypes.
        self.extras_device = torch.device("meta") if self.device.type == "cpu" else self.device
        self._extras: dict[tuple, _Extras] = {}  # a stage's measured extras, shared by every split that has it

    def with_options(self, options: MethodOptions) -> MemoryPredictor:
        """The same backbone measurements for the method with other options (e.g. a lighter aux net)."""
        variant = copy.copy(self)
        variant.cfg = dataclasses.replace(self.cfg, method_options=options)  # the extras' keys tell modules apart
        return variant

    @property
    def num_units(self) -> int:
        return len(self.costs)

    def cuts(self, k: int, split: Any) -> list[int]:
        """The cut points `train` would use for K = k and `split` (a stem-only module added where needed)."""
        cuts = resolve_cuts(self.backbone, k, split, arch=self.cfg.arch, dataset=self.cfg.dataset, costs=self.costs)
        return with_stem_module(cuts) if self.stem_module else cuts

    # --------------------------------------------------------------------------------------- backbone alone
    def backbone_bytes(self, first: int, last: int, batch: float) -> tuple[float, dict[str, float]]:
        """Units first..last run as one stage: (bytes saved inside, {"in": ..., "out": ...} saved at its ends)."""
        units = self.units[first : last + 1]
        inner = sum(u.inner.at(batch) for u in units)
        for i in range(first, last):  # the output of unit i is the input of unit i+1: one storage
            if self.units[i].saves_output or self.units[i + 1].saves_input:
                inner += self.units[i].out_bytes.at(batch)
        ends = {}
        if units[0].saves_input:
            ends["in"] = self.units[first - 1].out_bytes.at(batch) if first else self.input_bytes(batch)
        if units[-1].saves_output:
            ends["out"] = units[-1].out_bytes.at(batch)
        return inner, ends

    def input_bytes(self, batch: float) -> float:
        return batch * torch.Size(self.spec.image_shape).numel() * 4

    def activation_bound(self, cuts: list[int], batch: int) -> float:
        """The largest stage's backbone bytes plus the batch: a lower bound of the live bytes of any method."""
        bounds = [-1, *cuts, self.num_units - 1]
        worst = 0.0
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            inner, ends = self.backbone_bytes(a + 1, b, batch)
            if a < 0:
                ends.pop("in", None)  # the image: counted with the batch below
            worst = max(worst, inner + sum(ends.values()))
        return worst + 2 * self.input_bytes(batch)  # x and its [0, 1] copy are alive through the step

    @functools.cached_property
    def static_bound(self) -> int:
        """Weights, grads and optimizer state of the backbone alone: a lower bound for every method."""
        params = sum(p.numel() * p.element_size() for p in self.backbone.parameters())
        buffers = sum(b.numel() * b.element_size() for b in self.backbone.buffers())
        return params * (3 if self.cfg.momentum else 2) + buffers

    # --------------------------------------------------------------------------------------- one configuration
    def build(self, cuts: list[int]) -> LocalLearner:
        net = SplitNet(self.backbone, cuts, self.spec.image_shape, self.costs)
        # Built on the meta device where the extras run there: initialising large aux nets is then free.
        where = self.extras_device if self.extras_device.type == "meta" else contextlib.nullcontext()
        with where:
            learner = build_learner(
                self.cfg.method,
                net,
                num_classes=self.spec.num_classes,
                mean=self.spec.mean,
                std=self.spec.std,
                options=self.cfg.method_options,
            )
        return learner.to(self.extras_device).train()

    def model(self, cuts: list[int], *, transients: bool = True) -> StepModel:
        """Price the configuration with these cut points: build it, measure its stages' extras, fit them.
        `transients=False` leaves the transients out (no step is run): the prediction is then a lower bound."""
        learner = self.build(cuts)
        trainable: dict[int, torch.Tensor] = {}
        grads_through = []
        for k in range(learner.num_stages):  # a module shared by two stages has one gradient
            trainable.update((id(p), p) for p in learner.stage_parameters(k))
            grads_through.append(sum(p.numel() * p.element_size() for p in trainable.values()))
        weights = storage_sizes([*learner.parameters(), *learner.buffers()])
        exclude = [*learner.parameters(), *learner.buffers()]
        log: list[_Call] = []
        ranges = [(r.first_unit, r.last_unit) for r in learner.net.records]
        for k, (_, last) in enumerate(ranges):
            dtype = self.units[last].out_dtype
            learner.net.stages[k] = _StandIn(k, tuple(self.costs[last].out_shape), dtype, log)
        points: list[dict[str, list[tuple[int, float]]]] = [{c: [] for c in COMPONENTS} for _ in ranges]
        flops: list[tuple[int, list[tuple[int, float]]]] = [(0, []) for _ in ranges]
        for b in FIT_BATCHES:
            for k, parts, (own, extra) in self._measure_stages(learner, b, exclude, log, ranges):
                for c in COMPONENTS:
                    points[k][c].append((b, parts[c]))
                flops[k] = (own, [*flops[k][1], (b, extra)])
        model = StepModel(
            method=self.cfg.method,
            cuts=list(cuts),
            unit_ranges=ranges,
            weights_bytes=sum(weights.values()),
            trainable_bytes=grads_through[-1],
            grads_through=grads_through,
            transient_ratios=None,
            momentum=bool(self.cfg.momentum),
            points=points,
            flops=flops,
            e2e_flops=sum(c.flops for c in self.costs),
        )
        return self.with_transients(model) if transients else model

    def with_transients(self, model: StepModel) -> StepModel:
        """`model` with each stage's transients per byte it holds, from the profiler's measured peak of the
        configuration at the largest fit batch: a real step on the target device, as `locallearn profile` runs
        it (the only part of a prediction that runs the model itself).

        The transients (gradients of activations, the backward's temporaries) scale with the activations they
        are made from, so a ratio carries them to any batch. At a batch this small the peak can fall where
        activations are already freed and gradients dominate: the ratio is then negative, and counted as 0.
        """
        b = FIT_BATCHES[-1]
        cfg = dataclasses.replace(
            self.cfg, K=len(model.cuts) + 1, split=split_text(model.cuts), cuts=None, batch_size=b
        )
        step = measure(dataclasses.replace(cfg, compile=False), self.spec)
        ratios = []
        for k, points in enumerate(model.points):
            live = sum(points[c][-1][1] for c in COMPONENTS)  # held at batch b
            extra = step.stages[k].peak_bytes - step.weights_bytes - step.optimizer_bytes - model.grads_through[k]
            ratios.append(max(extra - live, 0) / live if live else 0.0)
        return dataclasses.replace(model, transient_ratios=ratios)

    def _measure_stages(self, learner: LocalLearner, b: int, exclude, log: list[_Call], ranges):
        """Yield (k, bytes per component, (own FLOPs per image, FLOPs beyond them for the batch)) per stage at b."""
        g = torch.Generator().manual_seed(0)
        x = torch.randn(b, *self.spec.image_shape, generator=g).to(self.extras_device)
        y = torch.randint(0, self.spec.num_classes, (b,), generator=g).to(self.extras_device)
        batch = learner.make_batch(x, y)
        carry = learner.initial_carry(batch)
        last = learner.num_stages - 1
        for k in range(learner.num_stages):
            signature = tuple((name, tuple(t.shape), t.dtype) for name, t in carry.items())
            key = (repr(learner.owned[k]), signature, k == last, min(k, learner.window), b)
            if key in self._extras:
                with torch.no_grad():
                    _, out = learner._advance(k, carry, batch)  # the carry alone: stand-ins and context nodes
            else:
                self._extras[key], out = self._measure_stage(learner, k, carry, batch, exclude, log)
            yield k, *self._compose(self._extras[key], k, ranges, b)
            carry = {name: t.detach() for name, t in out.items()}

    def _measure_stage(self, learner: LocalLearner, k: int, carry, batch, exclude, log: list[_Call]):
        """Run stage k's local loss once; name the storages it touches by role, so that the measurement serves
        every split in which stage k looks the same (same modules, same carry)."""
        log.clear()
        meter = _KeepingMeter(exclude=exclude)
        with meter, FlopCounter() as counter, self.amp():
            result = learner.train_stage(k, carry, batch)
        roles: dict[int, str] = {}
        sizes: dict[str, int] = {}
        named = [("x", batch.x), ("y", batch.y), ("x01", batch.x01), *((f"carry:{n}", t) for n, t in carry.items())]
        for i, call in enumerate(log):
            named += [(f"call{i}:in", call.x), (f"call{i}:out", call.out)]
        for role, t in named:
            ptr = storage_key(t)
            if ptr not in roles:
                roles[ptr], sizes[role] = role, t.untyped_storage().nbytes()
        alive = {roles[storage_key(t)] for t in [batch.x, batch.y, batch.x01, *carry.values()]}
        extras = _Extras(
            sizes=sizes,
            alive=frozenset(alive),
            saved={roles.get(ptr, f"anon{ptr}"): n for ptr, n in meter.storages.items()},
            calls=tuple((c.stage - k, roles[storage_key(c.x)], roles[storage_key(c.out)]) for c in log),
            flops=counter.flops,
        )
        out = result.out
        log.clear()
        return extras, out

    def _compose(self, extras: _Extras, k: int, ranges, b: int) -> tuple[dict[str, float], tuple[int, int]]:
        """Stage k's bytes per component at batch b: the logged backbone calls priced from the unit table,
        united by role with what the loss saved and what was alive; and its forward FLOPs: per image of its own
        units, and of the whole batch beyond them (aux nets, mechanisms, a cascade's re-runs)."""
        inner, named, rerun_flops = 0.0, {}, 0
        for n, (offset, role_in, role_out) in enumerate(extras.calls):
            first, last = ranges[k + offset]
            bytes_in, ends = self.backbone_bytes(first, last, b)
            inner += bytes_in
            if "in" in ends:
                named[role_in] = extras.sizes[role_in]
            if "out" in ends:
                named[role_out] = extras.sizes[role_out]
            if n:  # a re-run (cascade): FLOPs beyond the stage's own forward
                rerun_flops += sum(c.flops for c in self.costs[first : last + 1])
        saved = {**named, **extras.saved}
        activation = inner + sum(named.values())
        held = inner + sum(saved.values())
        beside = sum(extras.sizes[role] for role in extras.alive if role not in saved)
        own = sum(c.flops for c in self.costs[ranges[k][0] : ranges[k][1] + 1])
        return {"activation": activation, "aux": held - activation, "beside": beside}, (
            own,
            rerun_flops * b + extras.flops,
        )

    def predict(self, k: int, split: Any, batch: int) -> StepPrediction:
        return self.model(self.cuts(k, split)).at(batch)
