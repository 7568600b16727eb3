"""Losses against naive reference formulas."""

from __future__ import annotations

import math

import torch

from locallearn.losses import reconstruction_loss, supcon_loss


def naive_supcon(features: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Khosla et al.'s single-view loss, written with explicit loops over anchors."""
    z = torch.nn.functional.normalize(features, dim=1)
    n = z.shape[0]
    total = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        positives = [j for j in others if labels[j] == labels[i]]
        denom = sum(math.exp(float(z[i] @ z[j]) / tau) for j in others)
        if positives:
            total += -sum(float(z[i] @ z[p]) / tau - math.log(denom) for p in positives) / len(positives)
    return torch.tensor(total / n)


def test_supcon_matches_the_naive_reference():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(12, 16, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 0, 1, 4, 4, 5])  # 3 and 5 have no positive
    got = supcon_loss(feats, labels, temperature=0.07)
    torch.testing.assert_close(got.double(), naive_supcon(feats, labels, 0.07).double(), rtol=1e-5, atol=1e-5)


def test_supcon_ignores_anchors_without_positives():
    feats = torch.randn(4, 8)
    assert supcon_loss(feats, torch.tensor([0, 1, 2, 3])).item() == 0.0


def test_supcon_is_finite_with_a_tiny_temperature():
    feats = torch.randn(64, 32)
    labels = torch.randint(0, 3, (64,))
    assert torch.isfinite(supcon_loss(feats, labels, temperature=0.01))


def test_reconstruction_is_bce_against_the_unit_range_image():
    x01 = torch.rand(2, 3, 4, 4)
    out = torch.rand(2, 3, 4, 4).clamp(0.01, 0.99)
    expected = -(x01 * out.log() + (1 - x01) * (1 - out).log()).mean()
    torch.testing.assert_close(reconstruction_loss(out, x01), expected)
