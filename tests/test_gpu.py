"""The CUDA code paths against the CPU: one training step of every method, bf16 and fp16 autocast, the CUDA
memory meter, and checkpoints moved between devices.

Each check is written once over a pair of runs: a CPU reference and a candidate. Marked `gpu` (skipped without
CUDA), the candidate runs on CUDA the way `locallearn train` runs there (channels_last, fused SGD per stage,
cudnn.benchmark, autocast). Where the same assertions mean something on the CPU alone they also run in the
default suite: the channels_last layout (a `.view` on a channels_last tensor fails there as it would on a GPU)
and a checkpoint round trip through `map_location`, so the checks are known to work before a GPU runs them.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from helpers import ALL_LAMBDAS_ONE, all_methods
from locallearn.config import RunConfig
from locallearn.engine.checkpoint import load_checkpoint, save_checkpoint
from locallearn.engine.local import LocalEngine
from locallearn.engine.trainer import CHECKPOINT, Trainer, resolve_device
from locallearn.methods import MethodOptions, parse_method
from locallearn.profile.compare import measure
from locallearn.profile.probe import InputSpec, build_engine, input_spec, synthetic_batch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
SPEC = input_spec("cifar10")
METHODS = ["e2e", *all_methods()]


def parts(method: str) -> set[str]:
    """The objective and mechanisms a method name is made of, without variants or arguments."""
    spec = parse_method(method)
    return {spec.objective, *(m.name for m in spec.mechanisms)}


def covering(methods: list[str]) -> set[str]:
    """A few of `methods` that together contain every objective and mechanism any of them contains."""
    todo, chosen = set().union(*map(parts, methods)), set()
    while todo:
        best = max(methods, key=lambda m: len(parts(m) & todo))
        chosen.add(best)
        todo -= parts(best)
    return chosen


# The default suite steps a few methods that together use every part; the slow suite steps them all.
ON_CPU = [pytest.param(m, marks=() if m in covering(METHODS) else pytest.mark.slow) for m in METHODS]
# A step agrees with the step in float64 to within this relative (L2) error in every tensor it changes, or within
# twice the CPU's own float32 error where that is larger (sums that cancel). Not an elementwise bound: a rounding
# difference near 0 can flip one ReLU of the step, and with it part of a gradient (up to 0.6% seen on the CPU).
TOLERANCE = 2e-2
# Per element: the rounding of a quantity that is 0 in exact arithmetic (the gradient of a bias that a batch
# norm follows), whose relative error says nothing. Losses and gradients here are O(1e-3) and larger.
NOISE = 1e-6


def config(method: str, device: str, *, amp: str = "none", arch: str = "resnet8", k: int = 3, **fields) -> RunConfig:
    """A small run of `method` (every InfoPro term built) on `device`; e2e has one stage."""
    options = MethodOptions(**ALL_LAMBDAS_ONE)
    k = 1 if method == "e2e" else k
    base = RunConfig(arch=arch, method=method, K=k, dataset="cifar10", batch_size=16, lr=0.05, amp=amp)
    return dataclasses.replace(base, device=device, method_options=options, **fields)


@pytest.fixture
def exact_fp32() -> Iterator[None]:
    """fp32 without TF32 (cuDNN uses it for convolutions by default), so that CUDA and CPU agree to rounding."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def stepped(
    cfg: RunConfig,
    spec: InputSpec = SPEC,
    *,
    channels_last: bool = False,
    steps: int = 1,
    dtype: torch.dtype = torch.float32,
) -> tuple[LocalEngine, dict[str, torch.Tensor]]:
    """The engine `locallearn train` builds for `cfg` after `steps` steps on one synthetic batch, and what the
    steps changed (see `changes`). `channels_last` also lays a CPU run out as a CUDA run is (the library keeps
    CPU runs contiguous); float64 gives the step in (nearly) exact arithmetic."""
    device = resolve_device(cfg.device)
    engine = build_engine(cfg, spec, device)
    x, y = synthetic_batch(cfg, spec, device)
    engine.learner.to(dtype)
    x = x.to(dtype)
    if channels_last:
        engine.learner.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    before = {name: p.detach().clone() for name, p in engine.learner.named_parameters()}
    for _ in range(steps):
        engine.train_step(x, y)
    return engine, changes(engine, before)


def changes(engine: LocalEngine, before: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """On the CPU in float64: each parameter's gradient and update (the optimizer's doing), and every buffer
    (BN statistics, EMA twins)."""
    learner, out = engine.learner, {}
    for name, p in learner.named_parameters():
        out[f"update of {name}"] = (p.detach() - before[name]).double().cpu()
        if p.grad is not None:
            out[f"grad of {name}"] = p.grad.double().cpu()
    for name, b in learner.named_buffers():
        if b.is_floating_point():
            out[name] = b.double().cpu()
    return out


# ------------------------------------------------------------------------------------ one step, fp32


def check_same_step(method: str, device: str, *, channels_last: bool = False) -> None:
    """One step on `device` has the CPU step's losses and is as close as it is to the exact step."""
    reference, cpu = stepped(config(method, "cpu"))
    _, exact = stepped(config(method, "cpu"), dtype=torch.float64)
    candidate, got = stepped(config(method, device), channels_last=channels_last)
    torch.testing.assert_close(candidate.stats.loss.cpu(), reference.stats.loss, rtol=1e-4, atol=1e-5)
    assert got.keys() == exact.keys()
    for name, want in exact.items():
        err, cpu_err = (got[name] - want).norm().item(), (cpu[name] - want).norm().item()
        allowed = max(TOLERANCE * want.norm().item(), 2 * cpu_err, NOISE * want.numel() ** 0.5)
        assert err <= allowed, f"{name}: error {err:.3g}, allowed {allowed:.3g} (CPU: {cpu_err:.3g}, L2 norms)"


@pytest.mark.parametrize("method", ON_CPU)
def test_a_channels_last_step_equals_the_contiguous_one_on_cpu(method):
    check_same_step(method, "cpu", channels_last=True)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.usefixtures("exact_fp32")
@pytest.mark.parametrize("method", METHODS)
def test_a_cuda_step_in_fp32_equals_the_cpu_step(method):
    check_same_step(method, "cuda")
    engine, _ = stepped(config(method, "cuda"))  # the layout and kernels a CUDA run uses
    convs = [m.weight for m in engine.learner.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert all(group["fused"] for opt in engine.optimizers for group in opt.param_groups)
    assert torch.backends.cudnn.benchmark


# ------------------------------------------------------------------------------------ autocast


def stage_gradients(engine: LocalEngine) -> list[torch.Tensor]:
    """Each stage's gradients as one flat float32 vector on the CPU."""
    return [
        torch.cat([p.grad.float().flatten().cpu() for p in engine.learner.stage_parameters(k) if p.grad is not None])
        for k in range(engine.learner.num_stages)
    ]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("method", METHODS)
def test_a_bf16_autocast_step_stays_finite_and_close_to_fp32(method):
    reference, _ = stepped(config(method, "cpu"))
    candidate, _ = stepped(config(method, "cuda", amp="bf16"))
    loss = candidate.stats.loss.cpu()
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, reference.stats.loss, rtol=2e-2, atol=1e-3)  # bf16 keeps 8 bits of mantissa
    for k, (got, want) in enumerate(zip(stage_gradients(candidate), stage_gradients(reference), strict=True)):
        assert torch.isfinite(got).all(), f"stage {k}"
        assert torch.nn.functional.cosine_similarity(got, want, dim=0) > 0.99, f"stage {k}"


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("method", ["greedy", "infopro+man", "dgl+mlaan"])
def test_fp16_steps_with_the_grad_scaler_update_every_stage(method):
    # A step whose scaled gradients overflow is skipped (and the scale lowered); not all three can be.
    engine, changed = stepped(config(method, "cuda", amp="fp16"), steps=3)
    assert engine.scaler is not None and torch.isfinite(engine.stats.loss).all()
    names = {id(p): name for name, p in engine.learner.named_parameters()}
    for k in range(engine.learner.num_stages):
        params = engine.learner.stage_parameters(k)
        assert any(changed[f"update of {names[id(p)]}"].any() for p in params), f"stage {k} never stepped"


# ------------------------------------------------------------------------------------ the CUDA memory meter


def plain_step_peak(cfg: RunConfig, spec: InputSpec) -> int:
    """torch.cuda.max_memory_allocated around one warmed-up step of the engine `locallearn train` drives."""
    device = torch.device("cuda")
    engine = build_engine(cfg, spec, device)
    x, y = synthetic_batch(cfg, spec, device)
    engine.train_step(x, y)  # the warm-up `measure` runs too: optimizer state allocated, cuDNN tuned
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    engine.train_step(x, y)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del engine, x, y
    gc.collect()
    torch.cuda.empty_cache()
    return peak


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("amp", ["none", "bf16"])
@pytest.mark.parametrize("method", ["e2e", "greedy", "infopro", "infopro+man++", "greedy+mlaan"])
def test_the_cuda_memory_meter_equals_max_memory_allocated_around_a_step(method, amp):
    cfg = config(method, "cuda", amp=amp, arch="resnet32", k=4, batch_size=64)
    gc.collect()
    torch.cuda.empty_cache()
    want = plain_step_peak(cfg, SPEC)
    profile = measure(cfg, SPEC, warmup=1)
    assert profile.convention == "cuda-max-allocated"
    assert profile.peak_bytes == want, f"meter {profile.peak_bytes:,} vs max_memory_allocated {want:,}"


# ------------------------------------------------------------------------------------ checkpoints across devices


def run_config(device: str) -> RunConfig:
    """Two short epochs of a method with EMA twins (buffers) and aux nets on the bundled sample."""
    cfg = config("infopro+man", device, epochs=2, schedule="const", eval_batch_size=32)
    return dataclasses.replace(cfg, dataset="cifar10-sample", train_limit=64, test_limit=32)


def assert_holds(trainer: Trainer, saved: dict, device: str) -> None:
    """`trainer` holds exactly the state of checkpoint `saved`, on `device`, with `device`'s update kernel."""
    state = trainer.run.learner.state_dict()
    assert state.keys() == saved["learner"].keys()
    for name, value in saved["learner"].items():
        assert state[name].device.type == device, name
        torch.testing.assert_close(state[name].cpu(), value, rtol=0, atol=0, msg=name)
    for opt, want in zip(trainer.run.optimizers, saved["optimizers"], strict=True):
        got = opt.state_dict()
        for key, state_k in want["state"].items():
            buf = got["state"][key]["momentum_buffer"]
            assert buf.device.type == device
            torch.testing.assert_close(buf.cpu(), state_k["momentum_buffer"], rtol=0, atol=0)
        assert all(bool(g["fused"]) == (device == "cuda") for g in opt.param_groups)
        assert all(bool(g["foreach"]) == (device != "cuda") for g in opt.param_groups)
    assert trainer.start_epoch == saved["epoch"] + 1 and trainer.history == saved["history"]


def check_round_trip(tmp_path: Path, writer: str, reader: str) -> Trainer:
    """Epoch 1 on `writer`, resumed on `reader` for epoch 2, resumed again on `writer`: each resume holds
    exactly what was saved, on its own device. Returns the trainer that ran epoch 2."""
    run_dir = tmp_path / "run"
    Trainer(run_config(writer), run_dir, progress=False).fit(stop_after=1)
    second = Trainer(run_config(reader), run_dir, progress=False)
    second.resume()
    assert_holds(second, load_checkpoint(run_dir / CHECKPOINT), reader)
    second.fit()
    third = Trainer(run_config(writer), run_dir, progress=False)
    third.resume()
    assert_holds(third, load_checkpoint(run_dir / CHECKPOINT), writer)
    assert third.start_epoch == 2 and torch.isfinite(torch.tensor(second.history[-1]["train_loss"])).all()
    return second


def test_a_checkpoint_round_trip_on_cpu_continues_bit_for_bit(tmp_path):
    resumed = check_round_trip(tmp_path, "cpu", "cpu")
    whole = Trainer(run_config("cpu"), tmp_path / "whole", progress=False)
    whole.fit()
    for name, value in whole.run.learner.state_dict().items():
        torch.testing.assert_close(resumed.run.learner.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_a_checkpoint_from_another_device_resumes_with_this_devices_kernel(tmp_path):
    """A CUDA run saves fused=True in its optimizer state; resumed on the CPU, the CPU's kernel is kept."""
    Trainer(run_config("cpu"), tmp_path, progress=False).fit(stop_after=1)
    saved = load_checkpoint(tmp_path / CHECKPOINT)
    for state in saved["optimizers"]:
        for group in state["param_groups"]:
            group.update(fused=True, foreach=False)
    save_checkpoint(tmp_path / CHECKPOINT, saved)
    trainer = Trainer(run_config("cpu"), tmp_path, progress=False)
    trainer.resume()
    assert all(g["foreach"] and not g["fused"] for opt in trainer.run.optimizers for g in opt.param_groups)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("writer", "reader"), [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_moves_between_cuda_and_cpu_and_back(tmp_path, writer, reader):
    check_round_trip(tmp_path, writer, reader)
