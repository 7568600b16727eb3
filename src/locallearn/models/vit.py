"""Vision Transformers (Dosovitskiy et al. 2021) as chains of units: patch embedding, blocks, head.

Units: the patch embedding (conv patchify, class token, learned position embedding) at (0, 0), transformer block
b at (1, b), then the head (final LayerNorm + Linear on the class token, coord None). Every unit after the
embedding maps tokens (B, N, C) with N = 1 + (image / patch)^2; the head gives (B, classes).

ViT-Tiny/Small/Base are the patch-16, 224^2 models with the standard widths (192/384/768, depth 12, 3/6/12
heads, MLP ratio 4, LayerNorm eps 1e-6, qkv bias), the models of MAN++'s ViT rows. Their init is the usual
one: truncated normal (std 0.02) for the Linear layers, the class token and the position embedding, zero
biases, PyTorch's default for the LayerNorms and the patchify conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Backbone
from .registry import MODELS

LN_EPS = 1e-6


class PatchEmbed(nn.Module):
    """Patchify conv, class token, position embedding: (B, 3, H, W) -> (B, 1 + (H/p)(W/p), C)."""

    def __init__(self, image_size: int, patch: int, dim: int, in_channels: int = 3) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
        self.image_size = image_size
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (image_size // patch) ** 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            # The learned position embedding has one entry per patch of the size it was built for.
            raise ConfigError(
                f"this ViT takes {self.image_size}x{self.image_size} images, got {x.shape[-2]}x{x.shape[-1]}; "
                f"give it {self.image_size}x{self.image_size} images (image_size: {self.image_size} on ImageNet "
                "folders) or use vit-cifar for 32x32 data"
            )
        tokens = self.proj(x).flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat((cls, tokens), dim=1) + self.pos_embed  # (B, 1 + h*w, C)


class Attention(nn.Module):
    """Multi-head self-attention: (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, N, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)). (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokenHead(nn.Module):
    """LayerNorm, class token or mean of the patch tokens, Linear: (B, N, C) -> (B, out_dim). With the class
    token it is the ViT's own classifier; the token aux nets (`aux/tokens.py`) are the same head."""

    def __init__(self, dim: int, out_dim: int, pool: str = "cls") -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', not '{pool}'")
        self.pool = pool
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.fc = nn.Linear(dim, out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.norm(h)
        pooled = h[:, 0] if self.pool == "cls" else h[:, 1:].mean(dim=1)  # (B, C)
        return self.fc(pooled)


def init_vit(module: nn.Module) -> None:
    """Linear weights ~ truncated N(0, 0.02) with zero bias, LayerNorm = (1, 0), class token and position
    embedding ~ truncated N(0, 0.02); the patchify conv keeps PyTorch's default."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, PatchEmbed):
            nn.init.trunc_normal_(m.cls_token, std=0.02)
            nn.init.trunc_normal_(m.pos_embed, std=0.02)


class VisionTransformer(Backbone):
    """Units: the patch embedding (0, 0), block b as (1, b), the class-token head (None)."""

    def __init__(
        self,
        image_size: int,
        patch: int,
        dim: int,
        depth: int,
        heads: int,
        num_classes: int,
        mlp_ratio: float = 4.0,
        in_channels: int = 3,
    ) -> None:
        units: list[nn.Module] = [PatchEmbed(image_size, patch, dim, in_channels)]
        units += [Block(dim, heads, mlp_ratio) for _ in range(depth)]
        units.append(TokenHead(dim, num_classes))
        names = ["embed", *(f"blocks.{b}" for b in range(depth)), "head"]
        coords: list[tuple[int, int] | None] = [(0, 0), *((1, b) for b in range(depth)), None]
        super().__init__(units, names, coords)
        self.image_size = image_size  # the only input side it takes (the position embedding's grid)
        init_vit(self)

    init_weights = staticmethod(init_vit)


@MODELS.register("vit-tiny")
def vit_tiny(num_classes: int = 1000) -> VisionTransformer:
    """ViT-Tiny/16 at 224^2: width 192, depth 12, 3 heads; 5.72 M parameters at 1000 classes."""
    return VisionTransformer(224, 16, 192, 12, 3, num_classes)


@MODELS.register("vit-small")
def vit_small(num_classes: int = 1000) -> VisionTransformer:
    """ViT-Small/16 at 224^2: width 384, depth 12, 6 heads; 22.05 M parameters at 1000 classes."""
    return VisionTransformer(224, 16, 384, 12, 6, num_classes)


@MODELS.register("vit-base")
def vit_base(num_classes: int = 1000) -> VisionTransformer:
    """ViT-Base/16 at 224^2: width 768, depth 12, 12 heads; 86.57 M parameters at 1000 classes."""
    return VisionTransformer(224, 16, 768, 12, 12, num_classes)


@MODELS.register("vit-cifar")
def vit_cifar(num_classes: int = 10) -> VisionTransformer:
    """A ViT for 32^2 images: patch 4 (an 8x8 grid, 65 tokens), ViT-Tiny's width 192 and 3 heads, depth 8.

    Depth 8 splits evenly into K = 2, 4 and 8 groups, and at K = 4 each group still holds the two blocks that
    MAN++'s ViT aux net copies. 3.58 M parameters at 10 classes.
    """
    return VisionTransformer(32, 4, 192, 8, 3, num_classes)
