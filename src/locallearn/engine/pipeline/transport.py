"""The pipeline's transport: what one rank sends and receives around each step of the stages it owns.

The engine (`engine/step.py`) runs this rank's stages exactly as the local engine runs all of them, so with
`mode: sync` every stage sees the same inputs and weights as under the local engine and makes the same update.
The carry arrives from the previous position and goes on to the next; what else crosses ranks is in `plan`:
cascade windows (MLAAN) and EMA sources (MAN). Data-parallel replicas of a position average their gradients
before each optimizer step; one position holding every stage is plain data parallelism.

In `mode: async` a rank trains on a replay buffer of received carries instead of waiting for its
predecessor, and drops the carries its successor cannot take yet (DGL's asynchronous setting).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import torch
import torch.distributed as dist

from ...config import PipelineOptions
from ...methods import Batch, Carry, LocalLearner
from ..stats import StepStats
from ..transport import Transport
from .comm import Clock, Inbox, Outbox, peer_failure
from .groups import Groups, Launch
from .plan import PipelinePlan, module_tensors, stage_buffers, stage_state
from .replay import ReplayBuffer
from .wire import Header, Kind, Layout


class _Stream:
    """The messages one phase (a training epoch, an evaluation) brings from the previous rank.

    `count` messages, or (None) until END. The next receive is posted as soon as one is taken, never past the
    phase's last message, so that a receive of the wrong size is never pending.
    """

    def __init__(self, inbox: Inbox, layout: Layout, count: int | None, device: torch.device) -> None:
        self.inbox, self.layout, self.left, self.device = inbox, layout, count, device
        if count != 0:
            inbox.post(layout.nbytes)

    def ready(self) -> bool:
        return self.inbox.ready()

    def take(self) -> tuple[Header, list[torch.Tensor]]:
        buf = self.inbox.take()
        header = self.layout.header(buf)
        if self.left is not None:
            self.left -= 1
        if header.kind != Kind.END and self.left != 0:
            self.inbox.post(self.layout.nbytes)
        return header, self.layout.unpack(buf.to(self.device), header)


class PipelineTransport(Transport):
    """This rank's links to the ranks of the neighbouring positions, its replicas, and the traffic plan."""

    def __init__(
        self,
        learner: LocalLearner,
        *,
        plan: PipelinePlan,
        groups: Groups,
        launch: Launch,
        options: PipelineOptions,
        capacity: tuple[int, int],
        channels_last: bool = False,
    ) -> None:
        super().__init__(learner)
        self.device = launch.device
        self.plan, self.topo, self.groups, self.wire = plan, plan.topo, groups, launch.wire
        self.options, self.channels_last = options, channels_last
        self.asynchronous = options.mode == "async"
        topo, p = self.topo, self.topo.position
        self.first, self.last = topo.groups[p]
        self.stages = topo.stages
        self.cascade = plan.cascade_sends(p)  # stage k -> copied stages whose gradients go home after k's backward
        self.clock = Clock(self.device)
        timeout = timedelta(seconds=options.timeout)
        common = dict(timeout=timeout, clock=self.clock)
        train_cap, eval_cap = capacity
        self.inbox = Inbox(groups.forward, topo.rank_of(p - 1), device=self.wire, **common) if p > 0 else None
        self.outbox = (
            Outbox(groups.forward, topo.rank_of(p + 1), depth=options.depth, **common)
            if p < topo.positions - 1
            else None
        )
        self.layouts = {
            (side, kind): plan.forward_layout(q, kind, cap)
            for side, q in (("in", p), ("out", p + 1))
            if 0 < q < topo.positions
            for kind, cap in ((Kind.TRAIN, train_cap), (Kind.EVAL, eval_cap))
        }
        # Backward links, one per peer position: cascade gradients and EMA sources share each one in FIFO order.
        earlier = {topo.position_of(j) for j in plan.window_stages(p)} | {q for q in range(p) if plan.ema_links(p, q)}
        later = {q for _, qs in plan.deferred(p) for q in qs}
        later |= {q for q in range(p + 1, topo.positions) if plan.ema_links(q, p)}
        self.back_out = {q: Outbox(groups.backward, topo.rank_of(q), depth=options.depth, **common) for q in earlier}
        self.back_in = {q: Inbox(groups.backward, topo.rank_of(q), device=self.wire, **common) for q in later}
        # EMA sources this rank receives, each message before the first of its twins' updates.
        self.ema_in: dict[int, list[int]] = {}
        for q in range(p + 1, topo.positions):
            if links := plan.ema_links(q, p):
                self.ema_in.setdefault(min(link.twin_stage for link in links), []).append(q)
        self.replay: ReplayBuffer[tuple[Carry, Batch]] = ReplayBuffer(options.replay, options.max_reuse)
        self.stream: _Stream | None = None
        self.ended = False
        self.ema_origin = 0
        self.times = (0.0, 0.0)  # this rank's (busy, idle) seconds in the last epoch

    @property
    def reads_data(self) -> bool:
        return self.topo.position == 0

    @property
    def writes_outputs(self) -> bool:
        return self.topo.rank == 0

    def start_at(self, step: int) -> None:
        """Continue the step count at `step` (after --resume); EMA sources ship on this rank's first step."""
        self.step = self.ema_origin = step

    # ----------------------------------------------------------------------------------------- phases
    def begin_phase(self, train: bool, count: int | None) -> None:
        """Open the phase's stream of carries (`count` of them, or until END in async mode)."""
        if train:
            self.clock.lap()
            self.replay.clear()
            self.ended = False
        self._flush()  # async offers must not find the previous phase's sends still in flight and drop carries
        self.stream = None
        if self.inbox is not None:
            kind = Kind.TRAIN if train else Kind.EVAL
            self.stream = _Stream(self.inbox, self.layouts["in", kind], count, self.device)

    def end_epoch(self) -> None:
        if self.asynchronous:
            self._finish_async()
        self.times = self.clock.lap()
        self._average_buffers()
        self.stream = None

    # ----------------------------------------------------------------------------------------- step hooks
    # EMA sources travel every `ema_interval` steps: before the twins' after_backward update (their state
    # before this step), or with `ema_timing: after_step` after the source's step (their state after it).
    def _ema_due(self) -> bool:
        since = self.step - self.ema_origin
        return not self.plan.ema_after_step and since % self.options.ema_interval == 0

    def before_step(self) -> None:
        if self._ema_due():
            self._send_ema()

    def before_update(self, k: int) -> None:
        if self._ema_due():
            for q in self.ema_in.get(k, []):
                self._receive_ema(q)

    def after_update(self, k: int) -> None:
        for j in self.cascade.get(k, []):
            self._send_cascade(j)

    def deferred(self, window: int) -> Iterator[int]:
        """This rank's stages that later positions' losses reach step once their cascade gradients are back."""
        for j, positions in self.plan.deferred(self.topo.position):
            for q in positions:
                self._receive_cascade(j, q)
            yield j

    def after_step(self) -> None:
        if self.plan.ema_after_step:
            self._follow_remote_steps(ship=(self.step - self.ema_origin + 1) % self.options.ema_interval == 0)
        super().after_step()

    def _follow_remote_steps(self, ship: bool) -> None:
        """`ema_timing: after_step`: ship this rank's sources after its step and replay, on this rank's copy of
        every remote source stage, the `after_step` work that updates the twins here (with the last source
        state received: fresh when `ship`, else the one `ema_interval` allows)."""
        if ship:
            self._send_ema()
            for q in sorted(set().union(*self.ema_in.values())):
                self._receive_ema(q)
        for j in self.plan.ema_sources(self.topo.position):
            self.learner.after_step(j)

    def reduce_grads(self, k: int) -> None:
        if self.groups.replicas is not None:
            self._all_reduce_grads(k)

    # ----------------------------------------------------------------------------------------- carries
    def take(self, x: torch.Tensor | None, y: torch.Tensor | None, train: bool) -> tuple[Carry, Batch] | None:
        """At position 0, `x, y` are this replica's share of the global batch (`tensor_split` part r of n, as the
        loaders built with `share` deliver it); elsewhere the carry comes from the previous position."""
        if self.inbox is None:
            return super().take(x, y, train)
        if self.asynchronous and train:
            return self._replayed()
        return self._received(Kind.TRAIN if train else Kind.EVAL)

    def _received(self, kind: Kind) -> tuple[Carry, Batch] | None:
        header, tensors = self.stream.take()
        if header.kind == Kind.END:
            self.ended = True
            return None
        if header.kind != kind or (not self.asynchronous and kind == Kind.TRAIN and header.step != self.step):
            raise RuntimeError(
                f"rank {self.topo.rank} expected a {kind.name} carry for step {self.step}, got "
                f"{Kind(header.kind).name} step {header.step}: the ranks are out of step"
            )
        specs = self.plan.trace.carries[self.first - 1]
        carry = {s.name: self._layout(t) for s, t in zip(specs, tensors[: len(specs)], strict=True)}
        y = tensors[len(specs)]
        rest = tensors[len(specs) + 1 :]
        if self.plan.reads_input(self.topo.position):
            batch, rest = self.learner.make_batch(self._layout(rest[0]), y), rest[1:]
        else:
            batch = Batch(x=None, y=y, x01=None)  # the trace showed that no stage from here on reads them
        if kind == Kind.TRAIN:
            self._load_states(
                [t for j in self.plan.window_stages(self.topo.position) for t in stage_state(self.learner, j)], rest
            )
        return carry, batch

    def _layout(self, t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last and t.dim() == 4 else t

    def send(self, carry: Carry, batch: Batch, train: bool) -> None:
        if self.outbox is None:
            return
        kind = Kind.TRAIN if train else Kind.EVAL
        q = self.topo.position + 1
        layout = self.layouts["out", kind]
        tensors = [carry[s.name] for s in self.plan.trace.carries[self.last]] + [batch.y]
        if self.plan.reads_input(q):
            tensors.append(batch.x)
        if kind == Kind.TRAIN:
            tensors += [t for j in self.plan.window_stages(q) for t in stage_state(self.learner, j)]
        buf = layout.pack([t.detach() for t in tensors], Header(kind, self.step, batch.y.shape[0]), self.wire)
        if self.asynchronous and kind == Kind.TRAIN:
            self.outbox.offer(buf)  # a full queue means the successor is busy: it replays instead
        else:
            self.outbox.send(buf)

    def _flush(self) -> None:
        if self.outbox is not None:
            self.outbox.flush()

    # ----------------------------------------------------------------------------------------- asynchronous mode
    def _replayed(self) -> tuple[Carry, Batch] | None:
        while not self.ended and self.stream.ready():
            self._harvest()
        while True:
            if self.ended:
                return None
            item = self.replay.take()
            if item is not None:
                return item
            self._harvest()  # nothing left to replay: wait for a fresh carry

    def _harvest(self) -> None:
        taken = self._received(Kind.TRAIN)
        if taken is not None:
            self.replay.add(taken)

    def _finish_async(self) -> None:
        """Tell the next rank that the epoch is over, once every carry it may still take has been offered."""
        if self.outbox is not None:
            self.outbox.flush()
            layout = self.layouts["out", Kind.TRAIN]
            self.outbox.send(layout.signal(Header(Kind.END, self.step, 0), self.wire))
            self.outbox.flush()

    # ----------------------------------------------------------------------------------------- cascades and EMA
    def _send_cascade(self, j: int) -> None:
        """Send home the gradients this rank's losses put into its copy of stage j, and the copy's buffers."""
        params = self.learner.stage_parameters(j)
        grads = [torch.zeros_like(q) if q.grad is None else q.grad for q in params]
        mask = torch.tensor([q.grad is not None for q in params], dtype=torch.uint8, device=self.device)
        layout = self.plan.cascade_layout(j)
        tensors = [*grads, mask, *stage_buffers(self.learner, j)]
        self.back_out[self.topo.position_of(j)].send(layout.pack(tensors, Header(Kind.STATE, self.step, 0), self.wire))

    @torch.no_grad()
    def _receive_cascade(self, j: int, q: int) -> None:
        layout = self.plan.cascade_layout(j)
        tensors = layout.unpack(self.back_in[q].take(layout.nbytes).to(self.device))
        params = self.learner.stage_parameters(j)
        grads, mask, buffers = tensors[: len(params)], tensors[len(params)], tensors[len(params) + 1 :]
        for param, grad, present in zip(params, grads, mask.tolist(), strict=True):
            if present:
                param.grad = grad.clone() if param.grad is None else param.grad.add_(grad)
        self._load_states(stage_buffers(self.learner, j), buffers)

    def _send_ema(self) -> None:
        """Ship the EMA sources this rank owns to the ranks of their twins (their state before this step)."""
        for q, outbox in self.back_out.items():
            if links := self.plan.ema_links(self.topo.position, q):
                tensors = [t.detach() for link in links for t in module_tensors([link.source])]
                outbox.send(self.plan.ema_layout(links).pack(tensors, Header(Kind.STATE, self.step, 0), self.wire))

    def _receive_ema(self, q: int) -> None:
        links = self.plan.ema_links(q, self.topo.position)
        layout = self.plan.ema_layout(links)
        buf = self.back_in[q].take(layout.nbytes)
        header = layout.header(buf)
        if (header.kind, header.step) != (Kind.STATE, self.step):
            raise RuntimeError(
                f"rank {self.topo.rank} expected the EMA sources of step {self.step} from position {q}, "
                f"got {Kind(header.kind).name} step {header.step}: the ranks are out of step"
            )
        received = layout.unpack(buf.to(self.device), header)
        self._load_states([t for link in links for t in module_tensors([link.source])], received)

    @staticmethod
    @torch.no_grad()
    def _load_states(targets: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        for target, value in zip(targets, values, strict=True):
            target.copy_(value)

    # ----------------------------------------------------------------------------------------- reductions
    def sum(self, t: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(t)

    def _all_reduce(self, t: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
        """Sum `t` over `group` (default: every rank, over the host control group)."""
        group = group or self.groups.control
        wire = self.wire if group is not self.groups.control else torch.device("cpu")
        out = t.to(wire)
        with self.clock.waiting(), peer_failure("another rank"):
            dist.all_reduce(out, group=group)
        return out.to(t.device)

    def _all_reduce_grads(self, j: int) -> None:
        grads = [p.grad for p in self.learner.stage_parameters(j) if p.grad is not None]
        if not grads:
            return
        flat = self._all_reduce(torch.cat([g.reshape(-1) for g in grads]), self.groups.replicas)
        flat /= self.topo.replicas
        for g, avg in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(avg.view_as(g))

    @torch.no_grad()
    def _average_buffers(self) -> None:
        """Replicas saw different samples: average their BN statistics so that all evaluate and save alike."""
        if self.groups.replicas is None:
            return
        for k in range(self.first, self.last + 1):
            for b in stage_buffers(self.learner, k):
                if b.is_floating_point():
                    b.copy_(self._all_reduce(b, self.groups.replicas) / self.topo.replicas)

    def merged(self, stats: StepStats) -> StepStats:
        """Every rank's statistics of its own stages in one StepStats, as if one engine had run them all.

        Each stage's loss is averaged over its own steps (and replicas) and its accuracy over its own samples,
        then both are rescaled to the counts of stage 0, which `Trainer.epoch_record` divides by. (In async
        mode stages take different numbers of steps.)
        """
        n = self.learner.num_stages
        local = torch.zeros(5, n, dtype=torch.float64)
        for k in range(self.first, self.last + 1):
            local[:, k] = torch.tensor(
                [stats.loss[k].item(), stats.correct[k].item(), stats.has_logits[k], stats.steps, stats.seen],
                dtype=torch.float64,
            )
        loss, correct, has, steps, seen = self._all_reduce(local)
        first_steps = steps[0].item() / self.topo.replicas  # steps of one replica
        return StepStats(
            loss=(loss / steps.clamp(min=1) * first_steps).float().to(self.device),
            correct=(correct / seen.clamp(min=1) * seen[0]).to(self.device),
            has_logits=[bool(h) for h in has.tolist()],
            seen=int(seen[0].item()),
            steps=round(first_steps),
        )
