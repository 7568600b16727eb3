"""The pipeline engine makes the local engine's updates: same weights, optimizer state and losses after N steps.

Every registered objective, alone and with each registered mechanism, plus probe mechanisms for each kind of
cross-rank traffic (contexts, cascades, EMA leaps), on 2 ranks with more stages than ranks; then 4 ranks as
4 pipeline positions, or as 2 positions x 2 data-parallel replicas (against replicas simulated in-process,
evaluation included). One spawn per world size runs every case; each test checks its own case's files.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from launcher import spawn
from probes import probe_learner

from helpers import DEFAULT_ARG, backward_every_stage, make_learner, random_batch
from locallearn.config import PipelineOptions
from locallearn.engine.local import LocalEngine, evaluate
from locallearn.engine.pipeline.groups import launch
from locallearn.engine.pipeline.plan import module_tensors
from locallearn.engine.pipeline.run import build_pipeline_engine, stage_state_dict
from locallearn.methods import MECHANISMS, OBJECTIVES, LocalLearner

pytestmark = pytest.mark.dist

BATCH, STEPS = 8, 3
TOLERANCE = dict(rtol=1e-5, atol=1e-6)


@dataclass(frozen=True)
class Case:
    name: str
    method: str = "greedy"
    probe: str | None = None  # a mechanism of probes.py instead of a registered one
    k: int = 3
    method_options: dict = field(default_factory=dict)
    pipeline: dict = field(default_factory=dict)
    steps: int = STEPS

    def learner(self) -> LocalLearner:
        if self.probe is not None:
            return probe_learner(self.probe, self.k, objective=self.method)
        return make_learner(self.method, k=self.k, **self.method_options)

    @property
    def replicas(self) -> int:
        return self.pipeline.get("replicas", 1)


def registered_methods() -> list[str]:
    mechanisms = [None, *MECHANISMS.names()]
    return [
        obj if mech is None else f"{obj}+{mech}" + (f":{DEFAULT_ARG[mech]}" if mech in DEFAULT_ARG else "")
        for obj, mech in itertools.product(OBJECTIVES.names(), mechanisms)
    ]


TWO_RANKS = [
    *(Case(m.replace("+", "-").replace(":", "-"), m) for m in registered_methods()),
    Case("probe-context", probe="context"),
    Case("probe-cascade2-k4", probe="cascade2", k=4),
    Case("probe-leap-k4", probe="leap", k=4),
    Case("man-after-step", "greedy+man", method_options={"ema_timing": "after_step"}),
    Case("greedy-k4-depth1", "greedy", k=4, pipeline={"depth": 1}),
]
FOUR_RANKS = [
    Case("four-probe-cascade3", probe="cascade3", k=4),
    Case("four-probe-context-infopro", "infopro", probe="context", k=4),
    Case("four-probe-leap", probe="leap", k=4),
    Case("four-man++", "greedy+man++", k=3),
    Case("dp-greedy", "greedy", k=2, pipeline={"replicas": 2}),
    Case("dp-man", "greedy+man", k=2, pipeline={"replicas": 2}),
    # MLAAN's ImageNet cascade: stage k's loss reaches k-2 and k-1, on the two ranks before it.
    *(
        [Case("four-mlaan-window3", "greedy+mlaan", k=4, method_options={"mlaan_window": 3})]
        if "mlaan" in MECHANISMS
        else []
    ),
]
INTERVAL = Case("man-interval2", "greedy+man", steps=4, pipeline={"ema_interval": 2})
ASYNC = {  # which rank is slowed down -> case
    0: Case("async-slow-producer", k=2, steps=6, pipeline={"mode": "async", "depth": 1, "replay": 2, "max_reuse": 3}),
    1: Case("async-slow-consumer", k=2, steps=6, pipeline={"mode": "async", "depth": 1, "replay": 2, "max_reuse": 3}),
}
LEAD = Case("sync-lead", k=2, steps=6, pipeline={"depth": 1})
EVAL_BATCHES = 2


def batch(t: int, share: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    """Step t's global batch, or part r of n of it (`share`), as a replica's loader delivers it."""
    r, n = share
    return tuple(part.tensor_split(n)[r] for part in random_batch(BATCH, seed=100 + t))


def sgd(learner: LocalLearner) -> list[torch.optim.Optimizer]:
    return [
        torch.optim.SGD(learner.stage_parameters(k), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
        for k in range(learner.num_stages)
    ]


# ------------------------------------------------------------------------------------------------ ranks
def _engine(case: Case, learner: LocalLearner, optimizers, me):
    options = PipelineOptions(backend="gloo", timeout=60, **case.pipeline)
    return build_pipeline_engine(
        learner, optimizers, launch=me, options=options, batch_size=BATCH, eval_batch_size=BATCH
    )


def _train(case: Case, me, out: Path, rank: int) -> None:
    learner = case.learner()
    optimizers = sgd(learner)
    engine = _engine(case, learner, optimizers, me)
    topo = engine.transport.topo
    head, share = topo.position == 0, (topo.replica, topo.replicas)
    engine.begin_epoch(case.steps)
    for t in range(case.steps):
        engine.train_step(*(batch(t, share) if head else (None, None)))
    stats = engine.end_epoch()
    result = {
        "state": {key: v.clone() for key, v in stage_state_dict(learner, topo.stages).items()},
        "optimizers": {k: optimizers[k].state_dict() for k in topo.stages},
        "loss": stats.loss,
        "correct": stats.correct,
    }
    if case.replicas > 1:
        batches = [batch(50 + t, share) if head else (None, None) for t in range(EVAL_BATCHES)]
        result["eval"] = engine.evaluate(batches, EVAL_BATCHES)
    torch.save(result, out / f"{case.name}.{rank}.pt")


def _train_interval(case: Case, me, out: Path, rank: int) -> None:
    """Record every step's EMA sources on their owners, and the copies the twins' ranks end with."""
    learner = case.learner()
    engine = _engine(case, learner, sgd(learner), me)
    topo = engine.transport.topo
    here = topo.position
    links = engine.transport.plan.links
    mine = [i for i, link in enumerate(links) if topo.position_of(link.source_stage) == here]
    theirs = [i for i, link in enumerate(links) if topo.position_of(link.twin_stage) == here]
    before_step = []
    engine.begin_epoch(case.steps)
    for t in range(case.steps):
        before_step.append({i: [v.clone() for v in module_tensors([links[i].source])] for i in mine})
        engine.train_step(*(batch(t) if here == 0 else (None, None)))
    engine.end_epoch()
    copies = {i: [v.clone() for v in module_tensors([links[i].source])] for i in theirs}
    torch.save({"before_step": before_step, "copies": copies}, out / f"{case.name}.{rank}.pt")


def _train_async(case: Case, slow: int, me, out: Path, rank: int) -> None:
    learner = case.learner()
    engine = _engine(case, learner, sgd(learner), me)
    steps = 0
    engine.begin_epoch(case.steps)
    for t in itertools.count():
        if rank == 0 and t == case.steps:
            break
        if not engine.train_step(*(batch(t) if rank == 0 else (None, None))):
            break
        steps += 1
        if rank == slow:
            time.sleep(0.3)
    stats = engine.end_epoch()
    torch.save(
        {"steps": steps, "arrivals": engine.transport.replay.arrivals, "loss": stats.loss},
        out / f"{case.name}.{rank}.pt",
    )


def _train_slow_consumer(case: Case, me, out: Path, rank: int) -> None:
    """Record when each rank starts and ends each step while rank 1 is slow."""
    learner = case.learner()
    engine = _engine(case, learner, sgd(learner), me)
    starts, ends = [], []
    engine.begin_epoch(case.steps)
    for t in range(case.steps):
        starts.append(time.monotonic())
        engine.train_step(*(batch(t) if rank == 0 else (None, None)))
        ends.append(time.monotonic())
        if rank == 1:
            time.sleep(0.3)
    engine.end_epoch()
    torch.save({"starts": starts, "ends": ends}, out / f"{case.name}.{rank}.pt")


def _two_ranks(rank: int, world: int, out: Path) -> None:
    me = launch(PipelineOptions(backend="gloo", timeout=60), "cpu")
    for case in TWO_RANKS:
        _train(case, me, out, rank)
    _train_interval(INTERVAL, me, out, rank)
    for slow, case in ASYNC.items():
        _train_async(case, slow, me, out, rank)
    _train_slow_consumer(LEAD, me, out, rank)


def _four_ranks(rank: int, world: int, out: Path) -> None:
    me = launch(PipelineOptions(backend="gloo", timeout=60), "cpu")
    for case in FOUR_RANKS:
        _train(case, me, out, rank)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two_ranks")
    spawn(_two_ranks, 2, out)
    return out


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("four_ranks")
    spawn(_four_ranks, 4, out)
    return out


# ------------------------------------------------------------------------------------------------ references
def _local_reference(case: Case) -> tuple[LocalLearner, list[torch.optim.Optimizer], torch.Tensor]:
    learner = case.learner()
    optimizers = sgd(learner)
    engine = LocalEngine(learner, optimizers)
    for t in range(case.steps):
        engine.train_step(*batch(t))
    return learner, optimizers, engine.reset_stats().loss


def _replicas_reference(case: Case) -> tuple[LocalLearner, list[torch.optim.Optimizer], torch.Tensor]:
    """R copies, each on its share of every batch; gradients averaged before each step, BN statistics at the end.

    Stepping after every backward equals the local engine's schedule for the window-1 methods this is used for.
    """
    n = case.replicas
    learners = [case.learner() for _ in range(n)]
    assert learners[0].window == 1
    optimizers = [sgd(learner) for learner in learners]
    losses = torch.zeros(learners[0].num_stages)
    for t in range(case.steps):
        x, y = batch(t)
        for learner, opts, xs, ys in zip(learners, optimizers, x.tensor_split(n), y.tensor_split(n), strict=True):
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            losses += torch.stack(backward_every_stage(learner, xs, ys)) / n
        for k in range(learners[0].num_stages):
            for params in zip(*(learner.stage_parameters(k) for learner in learners), strict=True):
                mean = torch.stack([p.grad for p in params]).mean(0)
                for p in params:
                    p.grad = mean.clone()
            for learner, opts in zip(learners, optimizers, strict=True):
                opts[k].step()
                learner.after_step(k)
    with torch.no_grad():
        for buffers in zip(*(learner.buffers() for learner in learners), strict=True):
            if buffers[0].is_floating_point():
                buffers[0].copy_(torch.stack(buffers).mean(0))
    return learners[0], optimizers[0], losses


def _reference(case: Case):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the ranks, so that float reductions run in the same order
    try:
        return (_replicas_reference if case.replicas > 1 else _local_reference)(case)
    finally:
        torch.set_num_threads(threads)


def _check(case: Case, out: Path, world: int) -> None:
    learner, optimizers, losses = _reference(case)
    expected = learner.state_dict()
    covered: set[str] = set()
    for rank in range(world):
        got = torch.load(out / f"{case.name}.{rank}.pt", weights_only=False)
        for key, value in got["state"].items():
            torch.testing.assert_close(value, expected[key], **TOLERANCE, msg=f"rank {rank}: {key}")
            covered.add(key)
        for k, state in got["optimizers"].items():
            want = optimizers[k].state_dict()["state"]
            for i, slot in state["state"].items():
                torch.testing.assert_close(slot["momentum_buffer"], want[i]["momentum_buffer"], **TOLERANCE)
        # Every rank returns the statistics of all stages, merged.
        torch.testing.assert_close(got["loss"], losses, **TOLERANCE, msg=f"rank {rank}: losses")
    assert covered == set(expected), f"no rank owns {sorted(set(expected) - covered)}"
    if case.replicas > 1:
        with torch.no_grad():
            want_acc, want_stages, want_ce = evaluate(learner, [batch(50 + t) for t in range(EVAL_BATCHES)])
        acc, stage_acc, ce = torch.load(out / f"{case.name}.0.pt", weights_only=False)["eval"]
        assert acc == pytest.approx(want_acc) and ce == pytest.approx(want_ce, rel=1e-5)
        assert stage_acc == pytest.approx(want_stages)


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("case", TWO_RANKS, ids=lambda c: c.name)
def test_two_ranks_equal_the_local_engine(two_ranks, case):
    _check(case, two_ranks, 2)


@pytest.mark.parametrize("case", FOUR_RANKS, ids=lambda c: c.name)
def test_four_ranks_equal_the_reference(four_ranks, case):
    _check(case, four_ranks, 4)


def test_ema_sources_travel_every_interval_steps(two_ranks):
    """With ema_interval 2, a twin's rank holds the source as it was before the last due step, not the latest."""
    ranks = [torch.load(two_ranks / f"{INTERVAL.name}.{r}.pt", weights_only=False) for r in range(2)]
    history = {i: [step[i] for step in r["before_step"]] for r in ranks for i in r["before_step"][0]}
    copies = {i: c for r in ranks for i, c in r["copies"].items()}
    assert copies, "the case needs an EMA link that crosses ranks"
    last_due = (INTERVAL.steps - 1) // 2 * 2
    for i, held in copies.items():
        for got, shipped in zip(held, history[i][last_due], strict=True):
            torch.testing.assert_close(got, shipped, rtol=0, atol=0)
        assert any(not torch.equal(a, b) for a, b in zip(held, history[i][-1], strict=True))


def test_a_fast_rank_runs_at_most_depth_plus_one_steps_ahead(two_ranks):
    """With depth d, rank 0 ends step t only once rank 1 has started step t-d-1 (it has taken carry t-d-1)."""
    producer, consumer = (torch.load(two_ranks / f"{LEAD.name}.{r}.pt", weights_only=False) for r in range(2))
    lead = LEAD.pipeline["depth"] + 1
    for t in range(lead, LEAD.steps):
        assert producer["ends"][t] >= consumer["starts"][t - lead], t
    # ...and not later than it must: the queue does let it run ahead of the sleeping consumer.
    assert producer["ends"][lead - 1] < consumer["ends"][0] + 0.3


def test_async_replays_for_a_slow_producer_and_drops_for_a_slow_consumer(two_ranks):
    for slow, case in ASYNC.items():
        producer, consumer = (torch.load(two_ranks / f"{case.name}.{r}.pt", weights_only=False) for r in range(2))
        reuse = case.pipeline["max_reuse"]
        assert producer["steps"] == case.steps
        assert 1 <= consumer["arrivals"] <= producer["steps"]
        assert consumer["steps"] <= reuse * consumer["arrivals"]
        assert torch.isfinite(consumer["loss"]).all()
        if slow == 0:  # the consumer trains again on what it has instead of waiting
            assert consumer["steps"] > consumer["arrivals"], consumer
        else:  # the producer goes on, dropping the carries the busy consumer cannot take
            assert consumer["arrivals"] < producer["steps"], consumer
