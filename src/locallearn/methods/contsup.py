"""ContSup (Yu et al., IEEE TAI 2025): context supply at every boundary.

The input of stage k >= 1 is no longer h_{k-1} alone but

    h_{k-1} + Enc_k(x) [E] + sum_j ResEnc_{k,j}(ctx_j) [Rn, j = 0..n-1, for the contexts that exist]

where x is the normalised image and ctx_j is the (context-augmented) input of stage k-1-j. The local loss of
stage k-1 still sees h_{k-1} without context, so the objective's aux nets are unchanged. The context nodes run
inside stage k's graph: stage k owns them, they are trained by stage k's loss only, and they stay in the
deployed network. Contexts travel in the carry ("x", "ctx0", "ctx1", ...), which the engine detaches.

Queue start: without E the image is the input of stage 0, so R1 at the first boundary projects the image;
with E the image arrives through Enc only and the R terms start one boundary later. A context that never
exists gets no module (the released code builds such unused encoders).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..aux.heads import conv_bn_relu
from ..aux.tokens import is_token_shape
from ..errors import ConfigError
from .base import Batch, Carry, Mechanism
from .learner import LocalLearner
from .options import AuxOptions
from .registry import MECHANISMS

if TYPE_CHECKING:
    from . import MethodOptions

DEFAULT_MODE = "R1E"
_MODE = re.compile(r"(?:R(\d+))?(E?)")


@dataclass(frozen=True)
class ContextMode:
    encoder: bool  # E: the image through Enc_k at every boundary
    lags: int  # n of Rn: the inputs of the last n stages through ResEnc_{k,j}


def parse_mode(arg: str | None) -> ContextMode:
    """`E`, `Rn` or `RnE` (n >= 0, e.g. R0, R1, R1E, R2, R16E) -> ContextMode; None -> R1E."""
    text = (arg or DEFAULT_MODE).strip().upper()
    match = _MODE.fullmatch(text)
    if match is None or (match.group(1) is None and not match.group(2)):
        raise ConfigError(
            f"unknown contsup context mode '{arg}'; use E, Rn or RnE with n >= 0 (R0 = no context), "
            f"e.g. contsup:{DEFAULT_MODE}"
        )
    return ContextMode(encoder=bool(match.group(2)), lags=int(match.group(1) or 0))


class PoolTo(nn.AdaptiveAvgPool2d):
    """Adaptive average pooling to a boundary's size that passes an input already at that size through: on CPU
    the identity pool costs as much as a small conv, forward and backward, at every full-resolution boundary."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if tuple(x.shape[-2:]) == self.output_size else super().forward(x)


class ContextEncoder(nn.Sequential):
    """E: two conv3x3-BN-ReLU at image resolution, then pooled to the boundary. (B, 3, H, W) -> (B, D, S, S)."""

    def __init__(self, image_channels: int, shape: tuple[int, ...], widen: int = 1) -> None:
        super().__init__(
            conv_bn_relu(image_channels, 12 * widen, bias=True),
            conv_bn_relu(12 * widen, shape[0], bias=True),
            PoolTo(tuple(shape[1:])),
        )


class ResEncoder(nn.Sequential):
    """R: conv1x1-BN-ReLU, then pooled to the boundary. (B, D_src, H', W') -> (B, D, S, S)."""

    def __init__(self, in_channels: int, shape: tuple[int, ...]) -> None:
        super().__init__(conv_bn_relu(in_channels, shape[0], k=1, bias=True), PoolTo(tuple(shape[1:])))


class ContextNode(nn.Module):
    """The context terms added to one stage's input: Enc (reads carry "x") and ResEnc per lag j (carry "ctx<j>")."""

    def __init__(self, encoder: nn.Module | None, res: dict[int, nn.Module]) -> None:
        super().__init__()
        self.encoder = encoder
        self.res = nn.ModuleDict({str(j): m for j, m in res.items()})

    def forward(self, h: torch.Tensor, carry: Carry) -> torch.Tensor:
        # Out of place: carry["h"] shares storage with stage k-1's output (detach does not copy), which the
        # released in-place `ret += ...` overwrites.
        out = h
        if self.encoder is not None:
            out = out + self.encoder(carry["x"])
        for j, enc in self.res.items():
            out = out + enc(carry[f"ctx{j}"])
        return out


@MECHANISMS.register("contsup")
class ContSup(Mechanism):
    name = "contsup"
    # MLAAN's cascade re-runs earlier stages on their plain outputs; neither paper defines it with contexts.
    incompatible = ("mlaan",)
    options_types = (AuxOptions,)  # aux_widen sizes the context encoders

    def __init__(self, options: MethodOptions, arg: str | None = None) -> None:
        super().__init__(options, arg)
        self.mode = parse_mode(arg)

    def _first_source(self) -> int:
        """The earliest stage whose input is in the queue: stage 0's input is the image, queued only without E."""
        return 1 if self.mode.encoder else 0

    def setup(self, learner: LocalLearner) -> None:
        records = learner.net.records
        if any(is_token_shape(r.out_shape) for r in records[:-1]):
            # Context nodes are convolutions added to feature maps; a ViT's boundaries carry tokens.
            raise ConfigError(
                "contsup adds image-shaped contexts at every boundary, but this backbone's boundaries carry tokens "
                "(a ViT); drop +contsup, or use greedy, dgl, infopro, man, man++ or mlaan on it"
            )
        image_channels = learner.image_shape[0]
        for k in range(1, learner.num_stages):
            target = tuple(records[k].in_shape)  # (D, S, S): the boundary the context is added at
            encoder = ContextEncoder(image_channels, target, self.options.aux_widen) if self.mode.encoder else None
            # Lag j at stage k carries the input of stage k-1-j.
            res = {
                j: ResEncoder(records[k - 1 - j].in_shape[0], target)
                for j in range(self.mode.lags)
                if k - 1 - j >= self._first_source()
            }
            if encoder is None and not res:
                continue
            node = ContextNode(encoder, res)
            learner.net.init_weights(node)  # the released init loop covers the context nodes like the backbone
            learner.own(k, "context", node, inference=True)

    def initial_carry(self, batch: Batch) -> Carry:
        return {"x": batch.x} if self.mode.encoder else {}

    def stage_input(self, learner: LocalLearner, k: int, carry: Carry, batch: Batch) -> torch.Tensor | None:
        if "context" not in learner.owned[k]:
            return None
        return learner.owned[k]["context"](carry["h"], carry)

    def carry_out(self, learner: LocalLearner, k: int, h_in: torch.Tensor, carry: Carry) -> Carry:
        if k == learner.num_stages - 1:
            return {}
        out: Carry = {"x": carry["x"]} if self.mode.encoder else {}
        if self.mode.lags:
            if k >= self._first_source():
                out["ctx0"] = h_in  # stage k's (context-augmented) input; the engine detaches it
            for j in range(self.mode.lags - 1):  # shift the queue; the oldest entry falls off
                if f"ctx{j}" in carry:
                    out[f"ctx{j + 1}"] = carry[f"ctx{j}"]
        return out
