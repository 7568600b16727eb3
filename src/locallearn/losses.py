"""Local losses: cross-entropy, supervised contrastive (Khosla et al. 2020) and image reconstruction."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def widened(t: torch.Tensor) -> torch.Tensor:
    """`t` in at least float32: half-precision inputs (autocast) are widened, float64 stays float64, so a model
    run in float64 computes its losses in float64 too."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def supcon_loss(
    features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07, base_temperature: float = 0.07
) -> torch.Tensor:
    """Single-view supervised contrastive loss on (B, D) features (L2-normalised here).

    Positives are the other samples of the same class; the denominator runs over every other sample;
    anchors without a positive contribute 0 (their positive count is clamped to 1); mean over anchors.
    """
    z = F.normalize(widened(features), dim=1)
    b = z.shape[0]
    logits = z @ z.T / temperature  # (B, B)
    not_self = ~torch.eye(b, dtype=torch.bool, device=z.device)
    # Subtracting the row max (a constant per anchor) keeps exp() finite and leaves the loss unchanged.
    logits = logits - logits.masked_fill(~not_self, float("-inf")).amax(dim=1, keepdim=True).detach()
    positives = (labels[:, None] == labels[None, :]) & not_self
    log_denominator = torch.logsumexp(logits.masked_fill(~not_self, float("-inf")), dim=1, keepdim=True)
    log_prob = logits - log_denominator
    pos_count = positives.sum(1).clamp(min=1)
    mean_log_prob_pos = (log_prob * positives).sum(1) / pos_count
    return -(temperature / base_temperature) * mean_log_prob_pos.mean()


def reconstruction_loss(logits: torch.Tensor, x01: torch.Tensor) -> torch.Tensor:
    """BCE between sigmoid(logits), the decoder's image, and the image in [0, 1], both (B, 3, H, W).

    The papers' BCE(sigmoid(z), x), computed from z as softplus(z) - x z: one fused kernel each way, five times
    faster on CPU than a sigmoid followed by BCE, and exact where sigmoid(z) rounds to 0 or 1 (BCE's log of the
    rounded value would be clamped at -100 there, and its gradient would vanish).
    """
    # BCE is unsafe under autocast: widen half-precision inputs.
    logits = widened(logits)
    return F.binary_cross_entropy_with_logits(logits, x01.to(logits.dtype))


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(widened(logits), labels)
