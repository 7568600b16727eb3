"""FLOPs as PyTorch's FlopCounterMode counts them: every conv and matmul (attention, a decoder's matrix-product
upsample included), forward work only, equal to the hand formulas."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from locallearn.aux.upsample import upsample_bilinear
from locallearn.measure.flops import FlopCounter
from locallearn.measure.units import measure_units


def conv_flops(out: tuple[int, ...], in_channels: int, groups: int, kernel: int) -> int:
    """2 x multiply-accumulates: every output element sums in_channels / groups x kernel^2 products."""
    return 2 * torch.Size(out).numel() * (in_channels // groups) * kernel * kernel


def test_a_conv_and_linear_net_counts_the_hand_formula_forward_only():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # (2, 3, 8, 8) -> (2, 4, 8, 8)
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2),  # -> (2, 8, 4, 4)
        nn.BatchNorm2d(8),  # not counted, nor are ReLU and pooling
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),  # -> (2, 5)
    )
    x = torch.randn(2, 3, 8, 8)
    expected = conv_flops((2, 4, 8, 8), 3, 1, 3) + conv_flops((2, 8, 4, 4), 4, 2, 3) + 2 * 2 * 8 * 5
    with FlopCounter() as counter:
        net(x).sum().backward()  # the backward's kernels are not forward work
    assert counter.flops == expected == 2 * (2 * 4 * 64 * 27 + 2 * 8 * 16 * 18 + 2 * 8 * 5)
    assert counter.recompute_flops == 0
    assert [c.flops for c in measure_units(nn.ModuleList(net[:3]), (3, 8, 8), batch=2)] == [
        conv_flops((1, 4, 8, 8), 3, 1, 3), 0, conv_flops((1, 8, 4, 4), 4, 2, 3)
    ]  # fmt: skip


class SelfAttention(nn.Module):
    """One head of self-attention over (B, L, D) tokens, written with matmuls and PyTorch's fused kernel."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Parameter(torch.randn(3, dim, dim) / dim**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (x @ w for w in self.qkv)  # (B, L, D) each
        return F.scaled_dot_product_attention(q, k, v)  # (B, L, L) weights, (B, L, D) out


def test_matmuls_and_attention_are_counted():
    b, length, dim = 2, 6, 8
    with FlopCounter() as counter:
        SelfAttention(dim)(torch.randn(b, length, dim))
    projections = 3 * 2 * b * length * dim * dim
    attention = 2 * b * length * length * dim + 2 * b * length * length * dim  # Q K^T, then weights x V
    assert counter.flops == projections + attention


def test_the_decoders_matrix_product_upsample_is_counted():
    b, c, h, w, size = 2, 3, 4, 5, (8, 10)
    with FlopCounter() as counter:
        upsample_bilinear(torch.randn(b, c, h, w), size)
    # h @ cols.T: (B, C, h, w) x (w, W'); then rows @ that: (H', h) x (B, C, h, W')
    assert counter.flops == 2 * b * c * h * w * size[1] + 2 * b * c * size[0] * h * size[1]
