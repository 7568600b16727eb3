"""Hyper-parameters of objectives and mechanisms; the recipe/CLI `method_options` section fills them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MethodOptions:
    aux_net: str | None = None
    """Aux head: 0c1f/0c2f/1c1f/1c2f/1c3f/2c2f, mlp-sr (DGL), man-dgl (the released MAN/MAN++ DGL head),
    mlaan-imagenet (MLAAN's ResNet-34 head), imagenet (InfoPro's 4-conv ImageNet head), or auto / null: chosen
    per boundary from the feature it is fed. auto: greedy 0c1f; dgl and infopro imagenet on features of >= 256
    channels, else dgl mlp-sr and infopro 1c2f (with man/man++: infopro 2c2f, dgl man-dgl)."""
    decoder: str = "auto"
    """InfoPro reconstruction decoder: cifar (upsample to the image, two convs), imagenet (conv + 2x upsample
    steps up to the image, the released layers for the 512/1024-channel features of ImageNet ResNets, the same
    rule for other widths; like the imagenet head, it ignores aux_widen) or auto (per boundary: imagenet for an
    input side >= 112 or a feature of >= 256 channels, else cifar)."""
    aux_feature_dim: int = 128
    """D: hidden width of the aux MLP and the contrastive embedding size."""
    aux_widen: int = 1
    """Width multiplier of aux nets (InfoPro's aux_net_widen)."""
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
    ema_momentum: float = 0.995
    """m of the EMA twins (MAN, MAN++, MLAAN): twin <- m * twin + (1 - m) * source. 1 freezes them."""
    ema_timing: str = "after_backward"
    """When MAN/MAN++ twins are updated: after_backward (of the local loss, before any step; the released order)
    or after_step (after the source block's optimizer step; the papers' description)."""
    manpp_stem_module: bool = True
    """MAN++ trains the stem as a module of its own (CIFAR code); false keeps the split as given (ImageNet code)."""
    legacy_manpp_stem_head: bool = False
    """Build MAN++'s stem-module aux head as the released code does whatever the run's settings: 1c2f, D = 128,
    supervised contrastive loss (infopro only); otherwise it is built like every other module's."""
    man_copy_init: bool = False
    """Start MAN's trainable copy and EMA twin as exact copies of the next block (released: fresh random init)."""
    mlaan_window: int = 2
    """W of MLAAN's cascade: stage k's cascaded loss re-runs stages k-W+1..k, so its gradient reaches them all.
    2 = the released CIFAR code, 3 = the released ImageNet code (and the released InfoPro/DGL + MLAAN nets)."""
    mlaan_wx: float = 0.001
    """MLAAN weight of the independent stream: the objective's aux net on stage k's own output."""
    mlaan_wy: float = 0.999
    """MLAAN weight of the cascaded stream: the cascade's output through the leap chain and its aux net."""
    mlaan_final_both: bool = False
    """Last stage: w_x * CE(own output) + w_y * CE(cascade), as the released ImageNet code does, instead of
    CE(cascade) alone (the released CIFAR code)."""
    legacy_mlaan_no_early_loss: bool = False
    """Give the first W-1 stages no loss of their own, as the released code does (they then learn only through
    later stages' cascades and their aux nets stay untrained); otherwise they train their independent stream."""
    legacy_mlaan_ema_last_only: bool = False
    """EMA-update only the last leap chain's twin, as the released CIFAR code does; the others stay frozen."""
    mlaan_fresh_chains: bool = False
    """Start the leap blocks and their twins as fresh draws of the backbone's init rule (the released ImageNet
    code) instead of copies of the real blocks (the released CIFAR code)."""
    legacy_mlaan_last_twin_twice: bool = False
    """EMA-update the last leap chain's twin a second time after the last stage's backward, as the released
    ImageNet code does."""
    legacy_mlaan_bn_updates: bool = False
    """Let every recomputation of a cascade update the BN running statistics of the blocks it re-runs (the stem
    excepted), as the released code does: 2-3 updates per block and step instead of one."""
