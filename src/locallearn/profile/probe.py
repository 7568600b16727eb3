"""A run's learner, optimizers and engine built from a RunConfig without reading any data.

Memory and speed do not depend on pixel values, so profile and the benchmarks measure on a synthetic batch shaped
like the dataset's (its class count, its image size unless told otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import RunConfig
from ..data.datasets import SPECS
from ..engine.local import LocalEngine
from ..engine.trainer import build_model, build_optimizers, resolve_amp, use_channels_last

# For a dataset without a spec (e.g. an ImageFolder tree): CIFAR-sized inputs, 10 classes, [-1, 1] scaling.
DEFAULT_IMAGE_SIZE = 32
DEFAULT_CLASSES = 10
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class InputSpec:
    image_shape: tuple[int, int, int]  # (3, H, W)
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def input_spec(dataset: str, image_size: int | None = None, num_classes: int | None = None) -> InputSpec:
    """The dataset's input shape and class count, with `image_size` / `num_classes` taking precedence."""
    spec = SPECS.get(dataset)
    size = image_size or (spec.aug.crop if spec else DEFAULT_IMAGE_SIZE)  # the training crop is the input size
    classes = num_classes or (spec.num_classes if spec else DEFAULT_CLASSES)
    return InputSpec((3, size, size), classes, spec.mean if spec else HALF, spec.std if spec else HALF)


def synthetic_batch(
    cfg: RunConfig, spec: InputSpec, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): normalised random images (B, 3, H, W) and labels (B,), laid out as the run's loader lays them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(cfg.batch_size, *spec.image_shape, generator=g).to(device)
    y = torch.randint(0, spec.num_classes, (cfg.batch_size,), generator=g).to(device)
    if use_channels_last(cfg, device):
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def build_engine(
    cfg: RunConfig, spec: InputSpec, device: torch.device, engine_cls: type[LocalEngine] = LocalEngine
) -> LocalEngine:
    """The engine `locallearn train` would drive for `cfg`, on a fresh model seeded from `cfg.seed`."""
    torch.manual_seed(cfg.seed)
    learner = build_model(cfg, spec.image_shape, spec.num_classes, mean=spec.mean, std=spec.std, device=device)
    learner.train()
    amp = resolve_amp(cfg.amp, device)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    return engine_cls(learner, build_optimizers(learner, cfg), amp=amp, scaler=scaler)
