"""Bilinear upsampling (align_corners=True) as constant linear maps whose backward saves no activation.

Upsampling is linear, separable and the same for every channel: U(h) = rows @ h @ cols.T with constant
interpolation matrices. Autograd's own matmuls would keep the intermediate (B, C, H', w) for backward; the
functions here save only the small matrices, since the backward of a constant linear map is its transpose.

`UpsampleConv2d` uses the same fact once more: conv3x3(U(h)) + b equals the sum over the 9 taps of
shift_tap(U(W_tap h)) + b, because U commutes with channel mixing. The channel mixing then runs as one 1x1
conv at h's own resolution, and each tap's shift (zero padding included) folds into shifted interpolation
matrices, so no map with h's channel count is ever made at the output resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def interpolation_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) weights of 1-D linear interpolation with aligned corners: output i reads input position
    i (n_in - 1) / (n_out - 1), split between its two neighbours (a hat function of the distance)."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32  # made on the device: no copy, no sync
    where = torch.arange(n_out, device=like.device, dtype=dtype) * scale
    taps = torch.arange(n_in, device=like.device, dtype=dtype)
    return (1 - (where[:, None] - taps[None, :]).abs()).clamp_(min=0).to(like.dtype)


def shifted_interpolation(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """(3, n_out, n_in): tap t of a 3-wide, zero-padded kernel reads upsampled position i + t - 1, so its
    matrix is the interpolation matrix moved by t - 1 rows, with zero rows where the padding is."""
    padded = F.pad(interpolation_matrix(n_in, n_out, like), (0, 0, 1, 1))  # (n_out + 2, n_in)
    return torch.stack([padded[t : t + n_out] for t in range(3)])


class _Separable(torch.autograd.Function):
    """rows @ h @ cols.T for constant rows (H', h) and cols (W', w); backward rows.T @ g @ cols."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows, cols)  # the constant matrices only, a few KiB
        return rows @ (h @ cols.T)  # (B, C, h, w) -> (B, C, h, W') -> (B, C, H', W')

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        rows, cols = ctx.saved_tensors
        return rows.T @ (g @ cols), None, None


def upsample_bilinear(h: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`F.interpolate(h, size, mode="bilinear", align_corners=True)` on (B, C, h, w) -> (B, C, H', W'): the
    same linear map (to float rounding), faster forward and backward on CPU, and nothing saved for backward."""
    rows = interpolation_matrix(h.shape[-2], size[0], h)
    cols = interpolation_matrix(h.shape[-1], size[1], h)
    return _Separable.apply(h, rows, cols)


class _TapUpsample(torch.autograd.Function):
    """sum over taps (i, j) of rows_i @ z_ij @ cols_j.T, plus a bias per channel.

    z: (B, 3, 3, O, h, w) per-tap maps, rows: (3, H, h), cols: (3, W, w), bias: (O,) -> (B, O, H, W).
    Both contractions are single matrix products over (tap, position) = 3h or 3w.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows, cols)  # constants; z is not needed: the map is linear
        b, _, _, o, h, w = z.shape
        big_h, big_w = rows.shape[1], cols.shape[1]
        cols_cat = cols.transpose(1, 2).reshape(3 * w, big_w)  # (3w, W): row (j, x) = cols_j[:, x]
        rows_cat = rows.permute(1, 0, 2).reshape(big_h, 3 * h)  # (H, 3h): column (i, y) = rows_i[:, y]
        # Columns: (B, i, O, h, j, w) @ (3w, W) -> (B, i, O, h, W); rows: (H, 3h) @ (B, O, 3h, W) -> (B, O, H, W).
        t = z.permute(0, 1, 3, 4, 2, 5).reshape(b, 3, o, h, 3 * w) @ cols_cat
        out = rows_cat @ t.transpose(1, 2).reshape(b, o, 3 * h, big_w)
        return out.add_(bias.view(1, -1, 1, 1))

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        rows, cols = ctx.saved_tensors
        b, o, big_h, big_w = g.shape
        h, w = rows.shape[2], cols.shape[2]
        cols_cat = cols.transpose(1, 2).reshape(3 * w, big_w)
        rows_cat = rows.permute(1, 0, 2).reshape(big_h, 3 * h)
        gt = (rows_cat.T @ g).reshape(b, o, 3, h, big_w).transpose(1, 2)  # (B, i, O, h, W)
        gz = (gt @ cols_cat.T).reshape(b, 3, o, h, 3, w).permute(0, 1, 4, 2, 3, 5)  # (B, i, j, O, h, w)
        return gz, g.sum((0, 2, 3)), None, None


class UpsampleConv2d(nn.Conv2d):
    """A zero-padded 3x3 conv (with bias) applied to the bilinear upsample of its input to `size`.

    Exactly `conv(upsample_bilinear(h, size))` up to float rounding, computed as one 1x1 conv with 9 x O outputs
    at h's resolution and the shifted interpolation maps of `_TapUpsample`. An input already at `size` is
    convolved directly. Parameters, their names and their init are those of `nn.Conv2d(cin, cout, 3, padding=1)`;
    FLOPs are counted for the kernels it runs, not for the conv it stands for.
    """

    def __init__(self, in_channels: int, out_channels: int, size: tuple[int, int]) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, bias=True)
        self.size = tuple(size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if tuple(h.shape[-2:]) == self.size:
            return super().forward(h)
        o, c = self.out_channels, self.in_channels
        # (O, C, 3, 3) -> (3, 3, O, C): output channel (i, j, o) of the 1x1 conv is tap (i, j) of channel o.
        taps = self.weight.permute(2, 3, 0, 1).reshape(9 * o, c, 1, 1)
        z = F.conv2d(h, taps)  # (B, 9 O, h, w)
        z = z.view(h.shape[0], 3, 3, o, *h.shape[-2:])
        rows = shifted_interpolation(h.shape[-2], self.size[0], h)
        cols = shifted_interpolation(h.shape[-1], self.size[1], h)
        return _TapUpsample.apply(z, self.bias, rows, cols)
