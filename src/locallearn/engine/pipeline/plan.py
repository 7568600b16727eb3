"""What crosses each pipeline boundary, worked out once from the learner: every rank derives the same plan.

- Carries: a dry run of every stage on two dummy samples gives the names, per-sample shapes and dtypes of
  each boundary's carry, and which stages read the input images (InfoPro's reconstruction target, ContSup's
  contexts), so that rank 0's input travels only as far as some stage needs it.
- Cascade windows (MLAAN, `learner.window` > 1): the loss of stage k reaches back to stage k - window + 1.
  The rank of stage k holds copies of the earlier stages it reaches on other ranks; their parameters and
  buffers travel forward with the carry (as they were before this step's update, which the cascade must
  see) and the gradients the copies collect travel back to the owners, which step only once they have them.
- EMA links (MAN, MLAAN): a twin in stage k follows a source module of a later stage on another rank; the
  source's tensors travel back to the twin's rank every `ema_interval` steps. Twins are updated after the
  twin stage's backward (`ema_pairs`' contract): the source arrives as it was before this step's update.
  A mechanism that updates them right after the source's optimizer step instead (MAN's `ema_timing:
  after_step`) gets the source as it is after that step, and its `after_step` for the source stage is
  replayed on the twin's rank.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ...config import PipelineOptions
from ...errors import ConfigError
from ...methods import Batch, LocalLearner
from ..step import autocast_context
from .topology import Topology
from .wire import Kind, Layout, TensorSpec, state_specs


def _unique(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    seen: set[int] = set()
    return [t for t in tensors if not (id(t) in seen or seen.add(id(t)))]


def module_tensors(modules: Iterable[nn.Module]) -> list[torch.Tensor]:
    """Parameters, then buffers, of `modules`, each once, in a fixed order."""
    modules = list(modules)
    return _unique([*(p for m in modules for p in m.parameters()), *(b for m in modules for b in m.buffers())])


def stage_state(learner: LocalLearner, k: int) -> list[torch.Tensor]:
    """Everything that makes stage k what it is: its units' and owned modules' parameters and buffers."""
    return module_tensors(learner.stage_modules(k))


def stage_buffers(learner: LocalLearner, k: int) -> list[torch.Tensor]:
    return _unique(b for m in learner.stage_modules(k) for b in m.buffers())


class _InputProbe(Batch):
    """A Batch that notes whether anything read the input images (x or x01)."""

    read_input = False

    def __getattribute__(self, name: str):
        if name in ("x", "x01"):
            object.__setattr__(self, "read_input", True)
        return object.__getattribute__(self, name)


@dataclass(frozen=True)
class Trace:
    carries: list[list[TensorSpec]]  # per boundary k (what stage k hands to stage k+1), k < K-1
    reads_input: list[bool]  # per stage, in training or inference
    x: TensorSpec
    y: TensorSpec


@torch.no_grad()
def trace_stages(learner: LocalLearner, device: torch.device, amp: str) -> Trace:
    """Run every stage once, in eval mode on two dummy samples, leaving the learner and the RNGs untouched."""
    was_training = learner.training
    learner.eval()  # BN then reads its running statistics instead of updating them
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), autocast_context(device, amp):
            x = torch.zeros(2, *learner.image_shape, device=device)
            y = torch.arange(2, device=device) % learner.num_classes
            plain = learner.make_batch(x, y)
            batch = _InputProbe(plain.x, plain.y, plain.x01)
            carry = learner.initial_carry(batch)
            carries, reads = [], []
            for k in range(learner.num_stages):
                batch.read_input = False
                learner.predict_stage(k, carry, batch)
                result = learner.train_stage(k, carry, batch)
                reads.append(batch.read_input)
                carry = {name: t.detach() for name, t in result.out.items()}
                if k < learner.num_stages - 1:
                    carries.append([_carry_spec(name, t, k) for name, t in carry.items()])
    finally:
        learner.train(was_training)
    return Trace(carries, reads, TensorSpec.of("x", x), TensorSpec.of("y", y))


def _carry_spec(name: str, t: torch.Tensor, k: int) -> TensorSpec:
    if t.dim() == 0 or t.shape[0] != 2:
        raise ConfigError(
            f"carry '{name}' of stage {k} has shape {tuple(t.shape)}: the pipeline needs batch-major carries"
        )
    return TensorSpec.of(name, t)


@dataclass(frozen=True, eq=False)
class EmaLink:
    twin_stage: int  # the stage whose after_backward updates the twin
    source_stage: int  # the stage whose modules hold the source
    source: nn.Module


class PipelinePlan:
    """The traffic of one topology: message layouts, cascade windows and EMA links, per position."""

    def __init__(self, learner: LocalLearner, topo: Topology, trace: Trace) -> None:
        self.learner, self.topo, self.trace = learner, topo, trace
        self.window = learner.window
        owner = {id(t): k for k in range(learner.num_stages) for t in stage_state(learner, k)}
        self.links: list[EmaLink] = []
        timings = set()
        for mech in learner.mechanisms:
            for k in range(learner.num_stages):
                for _, source in mech.ema_pairs(learner, k):
                    tensors = module_tensors([source])
                    if not tensors:
                        continue
                    link = EmaLink(k, owner[id(tensors[0])], source)
                    src, dst = topo.position_of(link.source_stage), topo.position_of(k)
                    if src < dst:
                        raise ConfigError(
                            f"the EMA source of stage {k} lives in stage {link.source_stage}, on an earlier pipeline "
                            "position; the pipeline ships sources from later positions only"
                        )
                    if src != dst:
                        self.links.append(link)
                        timings.add(mech.ema_after_step())
        if len(timings) > 1:
            raise ConfigError("EMA twins updated after the backward and after the step in one run cannot be piped")
        self.ema_after_step = timings == {True}

    def check(self, options: PipelineOptions) -> None:
        """Refuse settings this plan cannot honour, before any rank starts training."""
        if options.mode == "async" and (self.window > 1 or self.links or self.topo.replicas > 1):
            raise ConfigError(
                "pipeline.mode async needs gradient-isolated stages without cross-rank EMA links and one replica "
                "(a cascade, an EMA source or a gradient all-reduce needs the ranks in lock-step); use mode sync"
            )

    # ----------------------------------------------------------------------------------------- carries
    def reads_input(self, position: int) -> bool:
        """Whether any stage from `position` on reads the input images (then they travel to `position`)."""
        return any(self.trace.reads_input[self.topo.groups[position][0] :])

    def forward_layout(self, position: int, kind: Kind, capacity: int) -> Layout:
        """Messages into `position` (>= 1): carry, labels, [images], [cascade window states (training)]."""
        first = self.topo.groups[position][0]
        specs = [*self.trace.carries[first - 1], self.trace.y]
        if self.reads_input(position):
            specs.append(self.trace.x)
        if kind != Kind.EVAL:
            for j in self.window_stages(position):
                specs += state_specs(f"stage{j}", stage_state(self.learner, j))
        return Layout(tuple(specs), capacity)

    # ----------------------------------------------------------------------------------------- cascades
    def window_stages(self, position: int) -> list[int]:
        """Stages of earlier positions that the losses of `position`'s stages reach (it holds copies)."""
        first = self.topo.groups[position][0]
        return list(range(max(0, first - self.window + 1), first))

    def cascade_sends(self, position: int) -> dict[int, list[int]]:
        """Local stage k -> the copied stages whose gradients are complete after k's backward, to send home."""
        last = self.topo.groups[position][1]
        out: dict[int, list[int]] = {}
        for j in self.window_stages(position):
            out.setdefault(min(j + self.window - 1, last), []).append(j)
        return out

    def deferred(self, position: int) -> list[tuple[int, list[int]]]:
        """This position's stages that later positions' losses reach, each with those positions in order.

        They step after the step's carry has been sent on and their cascade gradients have come back.
        """
        first, last = self.topo.groups[position]
        out = []
        for j in range(max(first, last - self.window + 2), last + 1):
            reach = range(last + 1, min(j + self.window - 1, self.learner.num_stages - 1) + 1)
            out.append((j, sorted({self.topo.position_of(k) for k in reach})))
        return out

    def cascade_layout(self, j: int) -> Layout:
        """Gradients of stage j's trainable parameters (zero where none), which of them exist, its buffers."""
        params = self.learner.stage_parameters(j)
        grads = state_specs(f"grad{j}", params)
        mask = TensorSpec(f"mask{j}", (len(params),), torch.uint8, batched=False)
        return Layout((*grads, mask, *state_specs(f"buffers{j}", stage_buffers(self.learner, j))))

    # ----------------------------------------------------------------------------------------- EMA links
    def ema_links(self, source_position: int, twin_position: int) -> list[EmaLink]:
        topo = self.topo
        return [
            link
            for link in self.links
            if topo.position_of(link.source_stage) == source_position
            and topo.position_of(link.twin_stage) == twin_position
        ]

    def ema_sources(self, twin_position: int) -> list[int]:
        """Source stages of the links into `twin_position`, each once, in order."""
        return sorted(
            {link.source_stage for link in self.links if self.topo.position_of(link.twin_stage) == twin_position}
        )

    def ema_layout(self, links: list[EmaLink]) -> Layout:
        return Layout(tuple(s for i, l in enumerate(links) for s in state_specs(f"ema{i}", module_tensors([l.source]))))
