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


def test_reconstruction_is_bce_of_the_sigmoid_against_the_unit_range_image_with_its_gradient():
    g = torch.Generator().manual_seed(0)
    x01 = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64)
    z = (4 * torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)).requires_grad_()
    out = torch.sigmoid(z)
    expected = -(x01 * out.log() + (1 - x01) * (1 - out).log()).mean()
    got = reconstruction_loss(z, x01)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    ours, ref = (torch.autograd.grad(loss, z)[0] for loss in (got, expected))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-14)


def test_reconstruction_stays_exact_where_the_sigmoid_rounds_to_one():
    z = torch.tensor([30.0], requires_grad=True)  # float32 sigmoid(30) == 1: BCE on it would read log(0)
    loss = reconstruction_loss(z, torch.tensor([0.0]))
    torch.testing.assert_close(loss, torch.tensor(30.0))  # softplus(30) = 30 + log1p(exp(-30))
    torch.testing.assert_close(torch.autograd.grad(loss, z)[0], torch.tensor([1.0]))  # sigmoid(z) - x
