"""MLAAN (Zhang et al., AAAI 2025): multilaminar local modules with leap augmented auxiliary networks.

Stage k (k >= W-1, W = `mlaan_window`) is trained by two streams:

    independent: w_x * aux_k(h_k)                  the objective's aux net on the stage's own output; its
                                                   gradient stays in stage k (the stage's input is detached)
    cascaded:    w_y * leap_aux_k(LAM_k(z_k))      z_k = stages k-W+1..k re-run from the detached input of
                                                   stage k-W+1, so this gradient reaches those W stages

with LAM_k(z) = Aug_0(z) + EMA_0(z), then Aug_j(z) for j >= 1: trainable copies of the backbone blocks in
module k's leap list, an EMA twin of the first one in parallel, then the objective's aux net built for the
chain's output (greedy: GAP + linear, as the released CIFAR and ImageNet nets for these widths; infopro:
decoder + head; dgl: its head). The last stage's loss is CE of the cascade's logits (released CIFAR code)
or, with `mlaan_final_both`, w_x * CE(own logits) + w_y * CE(cascade logits) (released ImageNet code).
The stage inputs the cascades start from travel in the carry as "in0" (input of stage k-1), "in1", ...

Stages k < W-1 have no full window. By default they train their independent stream alone (every stage then
has a loss and every aux net is trained); `legacy_mlaan_no_early_loss` gives them none, as released, so they
learn only through later stages' cascades. Their leap chains are never built.

EMA: theta_twin <- m * theta_twin + (1 - m) * theta_real over parameters only, right after stage k's
backward, so a source in stage k-W+1 or later has not stepped yet (the released order: all backward passes,
then the EMA, then the step); every chain by default, only the last one with `legacy_mlaan_ema_last_only`
(the released CIFAR code); `legacy_mlaan_last_twin_twice` updates the last one twice (the released ImageNet
code). The chains start as copies of the real blocks (CIFAR code) or, with `mlaan_fresh_chains`, as fresh
draws of the backbone's init rule (ImageNet code).

BatchNorm: a cascade recomputes stages that already ran this step on the same batch. It normalises with the
batch statistics as always (the values are the released ones) but leaves the running statistics alone, so
each BN layer of the backbone tracks every batch once, as under any other method; the released code updates
them once per recomputation too (2-3 times per step, an effective momentum of up to 1 - 0.9^3), except in the
stem, whose output it keeps; `legacy_mlaan_bn_updates` does the same.

Leap lists come from the `mlaan_leaps` tables of splits.yaml when the split's modules are exactly a
`stem_merged` entry that has one; otherwise module k's chain is the first block of every deeper backbone
layer, then the network's last residual block (just that block when module k ends in the last layer).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import ConfigError
from ..losses import cross_entropy
from ..split import SplitNet, split_tables
from .base import AuxLoss, AuxOutput, Batch, Carry, Mechanism, StageResult
from .ema import EmaOptions, ema_update, frozen_copy, reinitialised
from .learner import LocalLearner
from .registry import MECHANISMS

Coord = tuple[int, int]


@dataclass
class MlaanOptions:
    mlaan_window: int = 2
    """W of MLAAN's cascade: stage k's cascaded loss re-runs stages k-W+1..k, so its gradient reaches them all.
    2 = the released CIFAR code, 3 = the released ImageNet code (and the released InfoPro/DGL + MLAAN nets)."""
    mlaan_wx: float = 0.001
    """MLAAN weight of the independent stream: the objective's aux net on stage k's own output."""
    mlaan_wy: float = 0.999
    """MLAAN weight of the cascaded stream: the cascade's output through the leap chain and its aux net."""
    mlaan_final_both: bool = False
    """Last stage: w_x * CE(own output) + w_y * CE(cascade), as the released ImageNet code does, instead of
    CE(cascade) alone (the released CIFAR code)."""
    legacy_mlaan_no_early_loss: bool = False
    """Give the first W-1 stages no loss of their own, as the released code does (they then learn only through
    later stages' cascades and their aux nets stay untrained); otherwise they train their independent stream."""
    legacy_mlaan_ema_last_only: bool = False
    """EMA-update only the last leap chain's twin, as the released CIFAR code does; the others stay frozen."""
    mlaan_fresh_chains: bool = False
    """Start the leap blocks and their twins as fresh draws of the backbone's init rule (the released ImageNet
    code) instead of copies of the real blocks (the released CIFAR code)."""
    legacy_mlaan_last_twin_twice: bool = False
    """EMA-update the last leap chain's twin a second time after the last stage's backward, as the released
    ImageNet code does."""
    legacy_mlaan_bn_updates: bool = False
    """Let every recomputation of a cascade update the BN running statistics of the blocks it re-runs (the stem
    excepted), as the released code does: 2-3 updates per block and step instead of one."""

    def __post_init__(self) -> None:
        window = self.mlaan_window  # built from Python, not through a config's type conversion, it may be anything
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ConfigError(
                f"method_options.mlaan_window must be an integer >= 2 (2: CIFAR code, 3: ImageNet code), "
                f"got {self.mlaan_window}"
            )
        if self.mlaan_wx < 0 or self.mlaan_wy < 0:
            raise ConfigError(
                f"method_options.mlaan_wx and mlaan_wy must be >= 0, got {self.mlaan_wx}, {self.mlaan_wy}"
            )


# ----------------------------------------------------------------------------------------------- leap lists
def _table_chains(net: SplitNet) -> list[list[Coord]] | None:
    """The shipped leap table whose stem-merged modules are exactly this split's, or None."""
    ends = [r.last_coord for r in net.records[:-1]] + [net.coords[-2]]  # the last entry: the final block
    if any(c is None for c in ends):
        return None
    tables = split_tables()
    for arch, by_k in tables.get("mlaan_leaps", {}).items():
        for k, chains in by_k.items():
            modules = tables.get("stem_merged", {}).get(arch, {}).get(k)
            if modules is not None and [tuple(c) for c in modules] == ends:
                return [[tuple(c) for c in chain] for chain in chains]
    return None


def _rule_chains(net: SplitNet) -> list[list[Coord]]:
    """No table: the first block of every deeper layer, then the last residual block (shapes always chain)."""
    if any(c is None for c in net.coords[:-1]):
        raise ConfigError(
            "mlaan builds its leap chains from [stage, block] coordinates, which this backbone does not have; "
            "use a registered ResNet or give your units `coords`"
        )
    last_block = net.coords[-2]
    first_blocks: dict[int, Coord] = {}
    for s, b in net.coords[1:-1]:
        first_blocks.setdefault(s, (s, b))
    chains = []
    for record in net.records[:-1]:
        chain = [first for s, first in first_blocks.items() if s > record.last_coord[0]]
        if not chain or chain[-1] != last_block:
            chain.append(last_block)
        chains.append(chain)
    return chains


def leap_units(net: SplitNet) -> list[list[int]]:
    """Unit indices of module k's leap chain for k = 0..K-2, checked to chain from module k's output shape."""
    chains = _table_chains(net) or _rule_chains(net)
    index = {c: i for i, c in enumerate(net.coords) if c is not None}
    units = []
    for k, chain in enumerate(chains):
        shape = net.records[k].out_shape
        for coord in chain:
            u = index[coord]
            expects = net.unit_costs[u - 1].out_shape  # the unit's input in the backbone
            if tuple(expects) != tuple(shape):
                raise ConfigError(
                    f"mlaan leap chain of module {k}: block {list(coord)} takes {tuple(expects)} but receives "
                    f"{tuple(shape)}; fix its `mlaan_leaps` entry in splits.yaml"
                )
            shape = net.unit_costs[u].out_shape
        units.append([index[c] for c in chain])
    return units


def backbone_unit(net: SplitNet, u: int) -> nn.Module:
    """Unit u of the backbone, found in the stage that holds it."""
    for record, stage in zip(net.records, net.stages, strict=True):
        if record.first_unit <= u <= record.last_unit:
            return stage[u - record.first_unit]
    raise IndexError(f"unit {u} is in no stage")


# ----------------------------------------------------------------------------------------------- modules
class LeapChain(nn.Module):
    """LAM: trainable copies of the leap blocks, an EMA twin beside the first, then an aux net.

    (B, C_k, H_k, W_k) -> the aux net's output on (B, C_last, H_last, W_last).
    """

    def __init__(self, sources: list[nn.Module], aux: AuxLoss, init: Callable[[nn.Module], None] | None = None) -> None:
        """Copies of `sources` as they are now, or fresh draws of them by `init` when given."""
        super().__init__()
        self.blocks = nn.ModuleList(reinitialised(s, init) for s in sources)
        self.twin = frozen_copy(sources[0], init)  # parameters held as buffers: never optimised, saved in checkpoints
        self.aux = aux

    def forward(self, z: torch.Tensor, batch: Batch) -> AuxOutput:
        z = self.blocks[0](z) + self.twin(z)
        for block in self.blocks[1:]:
            z = block(z)
        return self.aux(z, batch)


@contextlib.contextmanager
def running_stats_frozen(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Inside: BN layers normalise as usual (batch statistics in training) but do not update running statistics."""
    norms = [
        m
        for module in modules
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


# ----------------------------------------------------------------------------------------------- mechanism
@MECHANISMS.register("mlaan")
class MLAAN(Mechanism):
    name = "mlaan"
    incompatible = ("man", "man++", "contsup")
    legacy_ratio_by_own_block = True  # the released MLAAN + InfoPro/DGL nets interpolate lambda by the own block
    options_types = (EmaOptions, MlaanOptions)

    def __init__(self, options, arg: str | None = None) -> None:
        super().__init__(options, arg)
        if arg is not None:
            raise ConfigError(f"'mlaan' takes no argument (got 'mlaan:{arg}'); set method_options.mlaan_window")
        self.window = options.mlaan_window
        self.sources: dict[int, nn.Module] = {}  # stage k -> the real block its twin follows
        self.ema_stages: set[int] = set()

    def setup(self, learner: LocalLearner) -> None:
        net, w = learner.net, self.window
        if net.num_stages < w:
            raise ConfigError(f"mlaan_window={w} needs at least {w} stages, got K={net.num_stages}")
        chains = leap_units(net)
        for k in range(w - 1, net.num_stages - 1):  # the only stages with a cascaded loss before the last
            sources = [backbone_unit(net, u) for u in chains[k]]
            ctx = learner.aux_context(k, net.unit_costs[chains[k][-1]].out_shape)
            init = net.init_weights if self.options.mlaan_fresh_chains else None
            learner.own(k, "leap", LeapChain(sources, learner.build_aux(ctx), init))
            self.sources[k] = sources[0]
        last_chain = net.num_stages - 2
        self.ema_stages = set(self.sources)
        if self.options.legacy_mlaan_ema_last_only:
            self.ema_stages &= {last_chain}

    def carry_out(self, learner: LocalLearner, k: int, h_in: torch.Tensor, carry: Carry) -> Carry:
        """Stage inputs a later cascade starts from: "in0" = stage k's input, "in<j>" = stage k-j's."""
        if k == learner.num_stages - 1:
            return {}
        out = {"in0": h_in}
        for j in range(1, self.window - 1):
            if f"in{j - 1}" not in carry:
                break
            out[f"in{j}"] = carry[f"in{j - 1}"]
        return out

    def cascade(self, learner: LocalLearner, k: int, carry: Carry) -> torch.Tensor:
        """Stage k's output recomputed through stages k-W+1..k from the (detached) input of stage k-W+1."""
        z = carry[f"in{self.window - 2}"]
        stages = learner.net.stages[k - self.window + 1 : k + 1]
        # Legacy: only the stem keeps its statistics (the release reuses the stem's output, never re-runs it).
        frozen = [learner.net.stages[0][0]] if self.options.legacy_mlaan_bn_updates else stages
        with running_stats_frozen(frozen):
            for stage in stages:
                z = stage(z)
        return z

    def stage_loss(self, learner: LocalLearner, k: int, carry: Carry, batch: Batch, result: StageResult) -> StageResult:
        o = self.options
        if k < self.window - 1:
            if o.legacy_mlaan_no_early_loss:
                # The engine still backpropagates something: a leaf zero, which reaches nothing.
                zero = torch.zeros((), device=result.loss.device, requires_grad=True)
                return StageResult(loss=zero, out=result.out, logits=None)
            return replace(result, loss=o.mlaan_wx * result.loss)
        z = self.cascade(learner, k, carry)
        if k == learner.num_stages - 1:
            ce = cross_entropy(z, batch.y)  # z: (B, classes), the head is part of the last stage
            loss = o.mlaan_wx * result.loss + o.mlaan_wy * ce if o.mlaan_final_both else ce
            return replace(result, loss=loss, logs={**result.logs, "ce_cascade": ce.detach()})
        leap = learner.owned[k]["leap"](z, batch)
        logs = {**result.logs, **{f"leap_{name}": value for name, value in leap.logs.items()}}
        return replace(result, loss=o.mlaan_wx * result.loss + o.mlaan_wy * leap.loss, logs=logs)

    def after_backward(self, learner: LocalLearner, k: int) -> None:
        if k not in self.ema_stages:
            return
        # Legacy: the release updates the last twin again at the end of the step. Its source has not stepped
        # in between, so the two updates are one with momentum m^2: m(m t + (1-m) s) + (1-m) s.
        m = self.options.ema_momentum
        last_twice = self.options.legacy_mlaan_last_twin_twice and k == learner.num_stages - 2
        ema_update(learner.owned[k]["leap"].twin, self.sources[k], m * m if last_twice else m)

    def ema_pairs(self, learner: LocalLearner, k: int) -> list[tuple[nn.Module, nn.Module]]:
        return [(learner.owned[k]["leap"].twin, self.sources[k])] if k in self.ema_stages else []
