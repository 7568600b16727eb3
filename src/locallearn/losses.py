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


def reconstruction_loss(decoded: torch.Tensor, x01: torch.Tensor) -> torch.Tensor:
    """BCE between a sigmoid decoder output and the image in [0, 1], both (B, 3, H, W)."""
    # BCE is unsafe under autocast: widen half-precision inputs.
    decoded = widened(decoded)
    return F.binary_cross_entropy(decoded, x01.to(decoded.dtype))


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(widened(logits), labels)
