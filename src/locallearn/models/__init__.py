"""Backbones registered by name, and `build_backbone`, which also accepts `package.module:callable`."""

from __future__ import annotations

import importlib
import inspect

from torch import nn

from ..errors import ConfigError
from . import cifar_resnet  # noqa: F401  (registers resnet8/32/110)
from . import imagenet_resnet as imagenet_resnet  # noqa: F401  (registers resnet18..152, resnext101_32x8d)
from .base import Backbone, ClassifierHead
from .registry import MODELS

__all__ = ["MODELS", "Backbone", "ClassifierHead", "build_backbone", "list_archs"]


def list_archs() -> list[str]:
    return MODELS.names()


def _user_factory(spec: str):
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import '{module_name}' for --arch {spec}: {e}; check PYTHONPATH") from e
    if not hasattr(module, attr):
        raise ConfigError(f"module '{module_name}' has no attribute '{attr}' (from --arch {spec})")
    return getattr(module, attr)


def as_backbone(model: nn.Module) -> Backbone:
    """Wrap a user's model as a chain of units: a Backbone as is, an nn.Sequential by its children."""
    if isinstance(model, Backbone):
        return model
    if hasattr(model, "units") and isinstance(model.units, nn.ModuleList):
        names = getattr(model, "unit_names", [str(i) for i in range(len(model.units))])
        coords = getattr(model, "coords", None)
        return Backbone(list(model.units), names, coords)
    if isinstance(model, nn.Sequential):
        names = [name for name, _ in model.named_children()]
        return Backbone(list(model.children()), names)
    raise ConfigError(
        f"{type(model).__name__} is neither an nn.Sequential nor exposes `units` (an nn.ModuleList); "
        "return one of those from your --arch callable"
    )


def build_backbone(arch: str, num_classes: int) -> Backbone:
    """A registered name (`resnet32`) or a user factory (`mypkg.nets:build`) called with num_classes."""
    if ":" in arch:
        factory = _user_factory(arch)
        params = inspect.signature(factory).parameters
        model = factory(num_classes=num_classes) if "num_classes" in params else factory()
        return as_backbone(model)
    return as_backbone(MODELS.get(arch)(num_classes=num_classes))
