"""The one engine with the one-process transport is the sequential training step the papers write down, and
its evaluation counts what the learner predicts."""

from __future__ import annotations

import pytest
import torch

from helpers import backward_every_stage, make_learner, random_batch
from locallearn.api import stage_optimizers
from locallearn.engine.local import LocalEngine, evaluate
from locallearn.engine.transport import Transport
from locallearn.methods import LocalLearner

STEPS = 3


def _sgd(learner: LocalLearner) -> list[torch.optim.Optimizer]:
    return stage_optimizers(learner, torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=1e-4)


def _sequential(learner: LocalLearner, optimizers: list[torch.optim.Optimizer], x, y) -> None:
    """Every stage's forward, local loss and backward on the detached carry, then every optimizer steps."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    backward_every_stage(learner, x, y)
    for k, opt in enumerate(optimizers):
        opt.step()
        learner.after_step(k)


@pytest.mark.parametrize("method", ["greedy", "dgl", "infopro", "greedy+contsup"])
def test_the_local_engine_is_the_sequential_step(method):
    """Isolated stages: stepping each stage as soon as its backward is done changes no bit of the update."""
    reference, engine_learner = make_learner(method, k=3), make_learner(method, k=3)
    ref_opts = _sgd(reference)
    engine = LocalEngine(engine_learner, _sgd(engine_learner))
    assert type(engine.transport) is Transport and list(engine.transport.stages) == [0, 1, 2]
    for t in range(STEPS):
        x, y = random_batch(8, seed=10 + t)
        _sequential(reference, ref_opts, x, y)
        assert engine.train_step(x, y)
    for key, value in reference.state_dict().items():
        assert torch.equal(engine_learner.state_dict()[key], value), key
    assert engine.stats.steps == STEPS and engine.stats.seen == 8 * STEPS


def test_evaluate_counts_the_learners_predictions():
    learner = make_learner("greedy", k=3)
    batches = [random_batch(6, seed=30 + t) for t in range(2)]
    acc, stage_acc, ce = evaluate(learner, batches)
    learner.eval()
    with torch.no_grad():
        outs = [learner.predict_stages(x) for x, _ in batches]
    pairs = list(zip(outs, (y for _, y in batches), strict=True))
    want = [sum((o[k].argmax(1) == y).sum().item() for o, y in pairs) / 12 for k in range(3)]
    assert stage_acc == pytest.approx(want) and acc == pytest.approx(want[-1])
    want_ce = sum(torch.nn.functional.cross_entropy(o[-1], y, reduction="sum") for o, y in pairs)
    assert ce == pytest.approx(want_ce.item() / 12, rel=1e-6)
    learner.train()
    evaluate(learner, batches)
    assert learner.training  # evaluate restores the mode it found
