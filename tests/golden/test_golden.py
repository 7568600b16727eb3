"""Each paper recipe trains exactly the step the released code trains: one float64 step against its fixture.

The recipe is built as `locallearn train` builds it, every tensor is set from its released key's init value,
and one step runs through `LocalEngine.train_step` with the stage optimizers; the per-module losses, the
final logits, every gradient (before its optimizer step) and every tensor after the step must match the
recording to a relative 1e-9 (fixtures/README.md).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from released_keys import CASES, KeyMap

from golden import (
    LOGITS_SCALE,
    Report,
    fixture_batch,
    fixture_names,
    grad_stats,
    initial_value,
    load_fixture,
    tensor_scale,
    value_stats,
)
from locallearn.config import build_config
from locallearn.engine.local import LocalEngine
from locallearn.engine.trainer import build_model, build_optimizers
from locallearn.schedule import lr_at


class RecordingEngine(LocalEngine):
    """The local engine, keeping each stage's loss (float64) and the final logits of the step."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.losses: dict[int, float] = {}
        self.logits: torch.Tensor | None = None

    def close_stage(self, k, result, y):
        self.losses[k] = result.loss.detach().item()
        if k == self.learner.num_stages - 1:
            self.logits = result.logits.detach()
        return super().close_stage(k, result, y)


def run_fixture(name: str, overrides: list[str] | None = None) -> Report:
    """One step of fixture `name`'s recipe (with `--set` style `overrides`) compared with the recording."""
    fixture, case = load_fixture(name), CASES[name]
    tensors, spec = fixture["tensors"], fixture["batch"]
    cfg = build_config(case.recipe, overrides=overrides)
    assert cfg.amp == "none", f"{case.recipe.name} must train in fp32 like the release (amp: none)"
    opt = fixture["optimizer"]
    # The recipe's schedule gives the released first step's LR (the warm-up blend starts at 0.01).
    lr = lr_at(0, cfg.epochs, cfg.lr, cfg.schedule, cfg.warmup_epochs, cfg.milestones)
    assert (cfg.lr, cfg.epochs) == (opt["initial_learning_rate"], opt["epochs"]) and lr == pytest.approx(opt["lr"])
    assert (cfg.momentum, cfg.nesterov, cfg.weight_decay) == (opt["momentum"], opt["nesterov"], opt["weight_decay"])

    torch.manual_seed(0)
    learner = build_model(
        cfg, (3, 32, 32), 10, mean=tuple(spec["mean"]), std=tuple(spec["std"]), device=torch.device("cpu")
    ).double()
    keys = KeyMap(learner, tensors)
    case.mapper(keys, learner)
    state = learner.state_dict()
    missed = sorted(set(state) - set(keys.ours.values()))
    assert not missed, f"tensors of ours no released key reaches: {missed}"
    with torch.no_grad():
        for key, own in keys.ours.items():
            shape, kind = tensors[key][0], tensors[key][1]
            state[own].copy_(initial_value(key, shape, kind, fixture["float_scale"]))

    optimizers = build_optimizers(learner, dataclasses.replace(cfg, lr=lr))
    param_names = {id(p): n for n, p in learner.named_parameters()}
    grads: dict[str, torch.Tensor] = {}

    def snapshot(optimizer, args, kwargs) -> None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    grads[param_names[id(p)]] = p.grad.detach().clone()

    for optimizer in optimizers:
        optimizer.register_step_pre_hook(snapshot)
    engine = RecordingEngine(learner, optimizers, amp=cfg.amp)
    x, y = fixture_batch(spec)
    engine.train_step(x, y)
    return compare(fixture, keys, engine, grads, learner.state_dict())


def compare(fixture: dict, keys: KeyMap, engine: RecordingEngine, grads: dict, after: dict) -> Report:
    record, report = fixture["record"], Report()
    last = engine.learner.num_stages - 1
    for entry in record["local_losses"]:
        report.compare(f"loss of module {entry['module']}", [engine.losses[entry["module"]]], [entry["loss"]], 0.0)
    report.require(
        {e["module"] for e in record["local_losses"]} | {last} >= set(range(1, last)),
        "a stage with a local loss has no recorded counterpart",
    )
    report.compare("final loss", [engine.losses[last]], [record["final"]["loss"]], 0.0)
    report.compare("logits sum", [engine.logits.sum().item()], [record["logits_sum"]], LOGITS_SCALE)
    floor = record["grad_zero_floor"]
    for key, (shape, _kind, _role, grad_ref, after_ref, _changed) in fixture["tensors"].items():
        numel = int(torch.tensor(shape).prod().item()) if shape else 1
        own = keys.ours.get(key)
        grad = grads.get(own) if own is not None else None
        if grad_ref is None or grad_ref[1] <= floor:
            norm = 0.0 if grad is None else grad.double().norm().item()
            report.require(norm <= floor, f"{key}: the release has no gradient here, ours has norm {norm:.3e}")
        elif own is None:
            report.require(False, f"{key}: the release trains it, ours has no tensor for it")
        elif grad is None:
            report.require(False, f"{key}: the release has a gradient, ours none ({own})")
        else:
            report.compare(f"grad {key}", grad_stats(key, grad), grad_ref, tensor_scale(numel, grad_ref[1]))
        if own is not None:
            report.compare(f"after {key}", value_stats(after[own]), after_ref, tensor_scale(numel, after_ref[1]))
    return report


@pytest.mark.parametrize("name", fixture_names())
def test_one_step_matches_the_released_code(name: str) -> None:
    report = run_fixture(name)
    assert report.checked > 1000
    shown = "\n".join(report.mismatches[:20])
    assert not report.mismatches, f"{len(report.mismatches)} differences from the release:\n{shown}"


@pytest.mark.parametrize(
    ("name", "switch", "differs"),
    [
        ("manpp_k8", "legacy_manpp_stem_head", "aux_classifier_0_0"),  # not even the head's shapes agree
        ("mlaan_k8", "legacy_mlaan_bn_updates", "layer1.0.bn1.num_batches_tracked"),
        ("mlaan_k8", "legacy_mlaan_ema_last_only", "EMA_Net.1.0.conv1.weight"),
    ],
)
def test_the_recipes_legacy_switches_are_what_reproduce_the_release(name, switch, differs):
    try:
        mismatches = run_fixture(name, [f"method_options.{switch}=false"]).mismatches
    except AssertionError as e:  # the released keys no longer map onto our tensors
        mismatches = [str(e)]
    assert any(differs in m for m in mismatches), mismatches[:5]
