"""Golden one-step fixtures of the released reference code: the init rule, the batch and the comparison.

`fixtures/README.md` defines the rules: every tensor starts from a value keyed by its *released* state_dict key,
one training step runs on a fixed batch in float64, and per-module losses, per-tensor gradient statistics and
post-step tensors are compared with a relative tolerance of 1e-9.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures"
RTOL = 1e-9
ABS_SCALE = 1e-3  # s = ABS_SCALE * sqrt(numel) * recorded norm for per-tensor sums, norms and dots
LOGITS_SCALE = 1e-6


def fixture_names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _draw(key: str, shape: list[int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    return torch.randn(shape, generator=g, dtype=torch.float64)


def initial_value(key: str, shape: list[int], kind: str, float_scale: float) -> torch.Tensor:
    """The `golden-v1` value of the released tensor `key`."""
    if kind == "int":
        return torch.zeros(shape, dtype=torch.long)
    base = _draw(key, shape)
    if kind == "bn_weight":
        return 1 + 0.1 * base
    if kind in ("bn_bias", "bn_running_mean"):
        return 0.1 * base
    if kind == "bn_running_var":
        return 1 + 0.1 * base.abs()
    if kind == "float":
        return float_scale * base
    raise ValueError(f"unknown init kind '{kind}'")


def probe(key: str, shape: list[int]) -> torch.Tensor:
    """r of the recorded grad statistic sum(grad * r)."""
    return _draw("r:" + key, shape)


def fixture_batch(spec: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(x normalised, y) exactly as recorded: uniform x01 in [0.01, 0.99], float32 mean/std widened to float64."""
    g = torch.Generator().manual_seed(spec["seed"])
    x01 = torch.rand(spec["B"], 3, 32, 32, generator=g, dtype=torch.float64) * 0.98 + 0.01
    mean = torch.tensor(spec["mean"], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(spec["std"], dtype=torch.float64).view(1, 3, 1, 1)
    x = (x01 - mean) / std
    assert close(x01.sum().item(), spec["x01_sum"], 0.0), "the fixture's batch is not reproduced"
    assert close(x.sum().item(), spec["x_sum"], 0.0), "the fixture's batch is not reproduced"
    return x, torch.tensor(spec["labels"])


def close(ours: float, ref: float, scale: float) -> bool:
    """|ours - ref| <= RTOL * max(|ref|, scale)."""
    return abs(ours - ref) <= RTOL * max(abs(ref), scale)


def grad_stats(key: str, grad: torch.Tensor) -> list[float]:
    """[sum, L2 norm, sum(grad * r)] of one gradient."""
    g = grad.detach().double()
    return [g.sum().item(), g.norm().item(), (g * probe(key, list(g.shape))).sum().item()]


def value_stats(t: torch.Tensor) -> list[float]:
    """[sum, L2 norm] of one tensor after the step."""
    t = t.detach().double()
    return [t.sum().item(), t.norm().item()]


@dataclass
class Report:
    """Every mismatch found, with the worst relative difference, so a failure names all that differs."""

    mismatches: list[str] = field(default_factory=list)
    worst: float = 0.0
    checked: int = 0

    def compare(self, what: str, ours: list[float], ref: list[float], scale: float) -> None:
        for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
            self.checked += 1
            rel = abs(a - b) / max(abs(b), scale, 1e-300)
            self.worst = max(self.worst, rel)
            if not close(a, b, scale):
                self.mismatches.append(f"{what}[{i}]: ours {a!r} released {b!r} (relative {rel:.1e})")

    def require(self, ok: bool, message: str) -> None:
        self.checked += 1
        if not ok:
            self.mismatches.append(message)


def tensor_scale(numel: int, recorded_norm: float) -> float:
    return ABS_SCALE * math.sqrt(numel) * recorded_norm
