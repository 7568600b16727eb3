"""Tiny learners and batches shared by the tests (imported as `from helpers import ...`)."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator

import torch

from locallearn.methods import MECHANISMS, OBJECTIVES, MethodOptions, build_learner, parse_method
from locallearn.models import build_backbone
from locallearn.split import split_model

CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
# Every InfoPro term built at every boundary, so that no part of a method goes untested.
ALL_LAMBDAS_ONE = dict(ixx_1=1.0, ixy_1=1.0, ixx_2=1.0, ixy_2=1.0)
# Mechanisms that need an argument are exercised with a representative one.
DEFAULT_ARG = {"contsup": "R1E"}


def _spelled(name: str) -> str:
    return f"{name}:{DEFAULT_ARG[name]}" if name in DEFAULT_ARG else name


def _compatible(names: tuple[str, ...]) -> bool:
    return all(other not in getattr(MECHANISMS.get(n), "incompatible", ()) for n in names for other in names)


def all_methods() -> list[str]:
    """Every objective (both InfoPro variants) alone and with every compatible set of one or two mechanisms,
    generated from the registries so that a newly registered one is covered without a new test."""
    objectives = [*OBJECTIVES.names(), "infopro:softmax"]
    mech_sets: list[tuple[str, ...]] = [()]
    for r in (1, 2):
        mech_sets += [c for c in itertools.combinations(MECHANISMS.names(), r) if _compatible(c)]
    return ["+".join([obj, *(_spelled(m) for m in mechs)]) for obj in objectives for mechs in mech_sets]


def make_learner(method: str = "greedy", k: int = 4, arch: str = "resnet8", split=None, seed: int = 0, **options):
    """A tiny learner on 32x32 inputs; `options` go to MethodOptions."""
    torch.manual_seed(seed)
    opts = MethodOptions(**options)
    stem_module = parse_method(method).stem_module(opts)
    net = split_model(build_backbone(arch, 10), k, split, arch=arch, dataset="cifar10", stem_module=stem_module)
    return build_learner(method, net, num_classes=10, mean=CIFAR_MEAN, std=CIFAR_STD, options=opts)


def assert_resumes_exactly(engine, optimizer_states, full, x, y, steps: int = 2) -> None:
    """Load the saved optimizer states into `engine`, train `steps` more steps and compare every tensor of its
    learner, bit for bit, with `full` (the same run without the interruption)."""
    for opt, state in zip(engine.optimizers, optimizer_states, strict=True):
        opt.load_state_dict(state)
    for _ in range(steps):
        engine.train_step(x, y)
    resumed = engine.learner.state_dict()
    for key, value in full.state_dict().items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)


def random_batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x01 = torch.rand(n, 3, 32, 32, generator=g)
    x = (x01 - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    y = torch.arange(n) % 10
    return x, y


def backward_every_stage(learner, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The written-out local step without its optimizer steps: per stage forward, local loss, backward,
    `after_backward`, and the carry detached for the next stage. Returns each stage's loss, detached."""
    batch = learner.make_batch(x, y)
    carry = learner.initial_carry(batch)
    losses = []
    for k in range(learner.num_stages):
        result = learner.train_stage(k, carry, batch)
        result.loss.backward()
        learner.after_backward(k)
        losses.append(result.loss.detach())
        carry = {name: t.detach() for name, t in result.out.items()}
    return losses


def each_stage_loss_alone(learner, x: torch.Tensor, y: torch.Tensor) -> Iterator[int]:
    """Backpropagate every stage's loss alone (gradients zeroed before each), on the detached carry of the stage
    before; yields k while stage k's gradients are in place."""
    batch = learner.make_batch(x, y)
    carry = learner.initial_carry(batch)
    for k in range(learner.num_stages):
        learner.zero_grad(set_to_none=True)
        result = learner.train_stage(k, carry, batch)
        result.loss.backward()
        yield k
        carry = {name: t.detach() for name, t in result.out.items()}


def stages_reached(learner) -> list[bool]:
    """Per stage: did any of its parameters receive a non-zero gradient?"""
    return [
        any(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.stage_parameters(k))
        for k in range(learner.num_stages)
    ]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m locallearn *args` in a fresh process: what a user's shell sees (exit status, stderr)."""
    return subprocess.run([sys.executable, "-m", "locallearn", *args], capture_output=True, text=True, timeout=timeout)
