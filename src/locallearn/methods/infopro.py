"""InfoPro (Wang et al., ICLR 2021): lambda_1 * reconstruction + lambda_2 * task loss at every stage.

The task loss estimates I(h, y) by CE of a classifier head (`infopro:softmax`) or by supervised contrastive
loss on an embedding head (`infopro:contrast`, the released default); the reconstruction BCE of a small
decoder estimates I(h, x). lambda is interpolated linearly from the first to the last local module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..aux import DECODERS, choose_decoder, choose_head, make_feature_decoder, make_feature_head
from ..errors import ConfigError
from ..losses import cross_entropy, reconstruction_loss, supcon_loss
from .base import AuxContext, AuxLoss, AuxOutput, Batch, Objective
from .options import AuxOptions
from .registry import OBJECTIVES


@dataclass
class InfoProOptions:
    decoder: str = "auto"
    """InfoPro reconstruction decoder: cifar (upsample to the image, two convs), imagenet (conv + 2x upsample
    steps up to the image, the released layers for the 512/1024-channel features of ImageNet ResNets, the same
    rule for other widths; like the imagenet head, it ignores aux_widen) or auto (per boundary: imagenet for an
    input side >= 112 or a feature of >= 256 channels, else cifar)."""
    ixx_1: float = 1.0
    """InfoPro lambda_1 (reconstruction weight) of the first local module."""
    ixy_1: float = 1.0
    """InfoPro lambda_2 (task-loss weight) of the first local module."""
    ixx_2: float = 1.0
    """InfoPro lambda_1 of the last local module (K-2); modules between are interpolated linearly."""
    ixy_2: float = 1.0
    """InfoPro lambda_2 of the last local module."""
    temperature: float = 0.07
    """SupCon temperature (and base temperature) of the contrast variant."""
    legacy_stage_ratio: bool = False
    """Interpolate lambda as the released MAN/MAN++/MLAAN code does: by the layer index of the next block (MLAAN:
    of the module's own last block) over the released config key minus 2, instead of by the module index."""

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ConfigError(f"method_options.decoder must be one of {', '.join(DECODERS)}, not '{self.decoder}'")
        if self.temperature <= 0:
            raise ConfigError(f"method_options.temperature must be > 0, got {self.temperature}")


def infopro_lambdas(
    k: int, num_stages: int, first: tuple[float, float], last: tuple[float, float], ratio: float | None = None
) -> tuple[float, float]:
    """(lambda_1, lambda_2) of local module k (0-based, k < K-1): ratio k/(K-2), 0 when K = 2."""
    if ratio is None:
        ratio = k / (num_stages - 2) if num_stages > 2 else 0.0
    return tuple(a * (1 - ratio) + b * ratio for a, b in zip(first, last, strict=True))


def legacy_stage_ratio(ctx: AuxContext) -> float:
    """The released MAN/MAN++/MLAAN lambda ratio: the layer index of a block over (K_cfg - 2).

    MAN and MAN++ take the next module's first block and K_cfg = their config key: the number of block modules
    (the stem merged into the first), one more for the one-module-per-block tables, keyed "K=16" for 15 modules
    of ResNet-32 and "K=55" for 54 of ResNet-110. MAN++'s own stem module gets ratio 0. MLAAN's InfoPro/DGL nets
    (`ratio_by_own_block`) take the module's own last block and K_cfg = the number of block modules.
    """
    if ctx.stem_is_module and ctx.k == 0:
        return 0.0
    modules = ctx.num_stages - (1 if ctx.stem_is_module else 0)
    if ctx.ratio_by_own_block:
        k_cfg, coord = modules, ctx.last_coord
    else:
        k_cfg, coord = modules + (1 if modules == ctx.num_blocks else 0), ctx.next_stage_coord
    layer = coord[0] if coord else 0
    return layer / (k_cfg - 2) if k_cfg > 2 else 0.0


class InfoProAux(AuxLoss):
    """lambda_1 * BCE(sigmoid(decoder(h)), x01) + lambda_2 * task(head(h), y); a zero-weight term is not built."""

    def __init__(
        self,
        head: nn.Module | None,
        decoder: nn.Module | None,
        lambdas: tuple[float, float],
        contrast: bool,
        temperature: float,
    ) -> None:
        super().__init__()
        self.head = head
        self.decoder = decoder
        self.lambda_rec, self.lambda_task = lambdas
        self.contrast = contrast
        self.temperature = temperature

    def forward(self, feature: torch.Tensor, batch: Batch) -> AuxOutput:
        loss = feature.new_zeros((), dtype=torch.promote_types(feature.dtype, torch.float32))
        logs: dict[str, torch.Tensor] = {}
        logits = None
        if self.decoder is not None:
            rec = reconstruction_loss(self.decoder(feature), batch.x01)
            loss = loss + self.lambda_rec * rec
            logs["rec"] = rec.detach()
        if self.head is not None:
            out = self.head(feature)
            if self.contrast:
                task = supcon_loss(out, batch.y, self.temperature, self.temperature)
                logs["supcon"] = task.detach()
            else:
                task = cross_entropy(out, batch.y)
                logits = out
                logs["ce"] = task.detach()
            loss = loss + self.lambda_task * task
        return AuxOutput(loss=loss, logits=logits, logs=logs)

    def predict(self, feature: torch.Tensor) -> torch.Tensor | None:
        return None if (self.contrast or self.head is None) else self.head(feature)


@OBJECTIVES.register("infopro")
class InfoPro(Objective):
    name = "infopro"
    variants = ("contrast", "softmax")
    default_head = "1c2f"
    options_types = (AuxOptions, InfoProOptions)

    def __init__(self, options, variant: str | None = None) -> None:
        variant = variant or "contrast"
        if variant not in self.variants:
            raise ConfigError(f"unknown infopro variant '{variant}'; use infopro:contrast or infopro:softmax")
        super().__init__(options, variant)

    def build_aux(self, ctx: AuxContext) -> AuxLoss:
        o = self.options
        ratio = legacy_stage_ratio(ctx) if o.legacy_stage_ratio else None
        l_rec, l_task = infopro_lambdas(ctx.k, ctx.num_stages, (o.ixx_1, o.ixy_1), (o.ixx_2, o.ixy_2), ratio)
        if l_rec == 0 and l_task == 0:
            raise ConfigError(
                f"lambda_1 and lambda_2 of local module {ctx.k} are both 0, so it would not train; give it a weight "
                "(ixx_1/ixy_1 for the first module, ixx_2/ixy_2 for the last)"
            )
        contrast = self.variant == "contrast"
        shape, image = ctx.feature_shape, ctx.image_shape
        head = decoder = None
        if l_task != 0:
            out_dim = o.aux_feature_dim if contrast else ctx.num_classes  # the embedding is D at any widen
            name = choose_head(o.aux_net, self.default_head, shape)
            head = make_feature_head(shape, name, out_dim, o.aux_feature_dim, o.aux_widen)
        if l_rec != 0:
            kind = choose_decoder(o.decoder, shape, image)
            decoder = make_feature_decoder(kind, shape, image[1:], o.aux_widen)
        return InfoProAux(head, decoder, (l_rec, l_task), contrast, o.temperature)
