"""The generic method contract, for every objective and every compatible combination of mechanisms.

Generated from the registries, so a newly registered objective or mechanism is covered without a new test.
"""

from __future__ import annotations

import pytest
import torch

from helpers import ALL_LAMBDAS_ONE, all_methods, make_learner, random_batch
from locallearn.engine.local import LocalEngine

METHODS = all_methods()


def _engine(learner) -> LocalEngine:
    return LocalEngine(
        learner, [torch.optim.SGD(learner.stage_parameters(k), lr=0.05) for k in range(learner.num_stages)]
    )


@pytest.mark.parametrize("method", METHODS)
def test_gradient_reaches_exactly_the_declared_window(method):
    learner = make_learner(method, k=3, **ALL_LAMBDAS_ONE)
    x, y = random_batch()
    batch = learner.make_batch(x, y)
    carry = learner.initial_carry(batch)
    window = learner.window
    for k in range(learner.num_stages):
        learner.zero_grad(set_to_none=True)
        result = learner.train_stage(k, carry, batch)
        assert torch.isfinite(result.loss), f"stage {k}"
        result.loss.backward()
        reached = [
            any(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.stage_parameters(j))
            for j in range(learner.num_stages)
        ]
        allowed = [k - window < j <= k for j in range(learner.num_stages)]
        assert all(a or not r for r, a in zip(reached, allowed, strict=True)), f"stage {k}: {reached} vs {allowed}"
        assert reached[k], f"stage {k} got no gradient from its own loss"
        carry = {n: t.detach() for n, t in result.out.items()}


@pytest.mark.parametrize("method", METHODS)
def test_every_trainable_parameter_is_reached_in_a_step(method):
    learner = make_learner(method, k=3, **ALL_LAMBDAS_ONE)
    engine = _engine(learner)
    x, y = random_batch(16)
    engine.train_step(x, y)
    missing = [
        name for name, p in learner.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert not missing


@pytest.mark.parametrize("method", METHODS)
def test_loss_falls_on_a_fixed_batch(method):
    learner = make_learner(method, k=3, **ALL_LAMBDAS_ONE)
    engine = _engine(learner)
    x, y = random_batch(16)
    losses = []
    for _ in range(8):
        engine.train_step(x, y)
        losses.append(engine.reset_stats().loss.sum().item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("method", METHODS)
def test_state_dict_round_trip(method):
    a = make_learner(method, k=3, seed=1, **ALL_LAMBDAS_ONE)
    _engine(a).train_step(*random_batch(8))
    b = make_learner(method, k=3, seed=2, **ALL_LAMBDAS_ONE)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x, _ = random_batch(4, seed=3)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    for pa, pb in zip(a.predict_stages(x), b.predict_stages(x), strict=True):
        assert (pa is None) == (pb is None)
        if pa is not None:
            torch.testing.assert_close(pa, pb, rtol=0, atol=0)
