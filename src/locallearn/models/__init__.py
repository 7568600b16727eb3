"""Backbones registered by name, and `build_backbone`, which also accepts `package.module:callable`."""

from __future__ import annotations

import importlib
import inspect

from torch import nn

from ..errors import ConfigError
from . import cifar_resnet  # noqa: F401  (registers resnet8/32/110)
from . import imagenet_resnet as imagenet_resnet  # noqa: F401  (registers resnet18..152, resnext101_32x8d)
from . import vit as vit  # noqa: F401  (registers vit-tiny/small/base, vit-cifar)
from .base import Backbone, ClassifierHead
from .registry import MODELS

__all__ = ["MODELS", "Backbone", "ClassifierHead", "build_backbone", "list_archs", "user_module"]


def list_archs() -> list[str]:
    return MODELS.names()


def user_module(arch: str) -> str | None:
    """The module that building `arch` imports (and so runs), or None for a registered backbone."""
    return arch.partition(":")[0] if ":" in arch else None


def _user_factory(spec: str):
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--arch '{spec}' must be a registered name or package.module:callable (both parts)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import '{module_name}' for --arch {spec}: {e}; check PYTHONPATH") from e
    if not hasattr(module, attr):
        raise ConfigError(f"module '{module_name}' has no attribute '{attr}' (from --arch {spec})")
    factory = getattr(module, attr)
    if not callable(factory):
        raise ConfigError(
            f"'{attr}' in module '{module_name}' is a {type(factory).__name__}, not a callable (from --arch {spec}); "
            "name a function or class that returns the model"
        )
    return factory


def as_backbone(model: nn.Module) -> Backbone:
    """Wrap a user's model as a chain of units: a Backbone as is, an nn.Sequential by its children, a module
    exposing `units` by those, any other module by tracing its forward with torch.fx (`trace.py`)."""
    if isinstance(model, Backbone):
        return model
    if hasattr(model, "units") and isinstance(model.units, nn.ModuleList):
        n = len(model.units)
        names = getattr(model, "unit_names", [str(i) for i in range(n)])
        coords = getattr(model, "coords", None)
        prefixes = [f"units.{i}." for i in range(n)]
        return Backbone(list(model.units), names, coords, source=model, unit_prefixes=prefixes)
    if isinstance(model, nn.Sequential):
        names = [name for name, _ in model.named_children()]
        return Backbone(list(model.children()), names, source=model, unit_prefixes=[f"{n}." for n in names])
    from .trace import trace_backbone  # torch.fx is imported only for the models that need it

    return trace_backbone(model)


def build_backbone(arch: str, num_classes: int, *, zero_init_residual: bool = False) -> Backbone:
    """A registered name (`resnet32`) or a user factory (`mypkg.nets:build`) called with num_classes.

    `zero_init_residual` starts the last BN of every residual block at 0 (registered ImageNet ResNets only)."""
    if ":" in arch:
        if zero_init_residual:
            raise ConfigError(f"zero_init_residual is an option of the ImageNet ResNets, not of '{arch}'; drop it")
        factory = _user_factory(arch)
        try:
            signature = inspect.signature(factory)
        except ValueError:  # some builtins have none: just call them
            return as_backbone(factory())
        kwargs = {"num_classes": num_classes} if "num_classes" in signature.parameters else {}
        try:
            signature.bind(**kwargs)
        except TypeError as e:  # checked before calling, so that a bug inside the factory keeps its traceback
            raise ConfigError(
                f"--arch {arch} cannot be called as {arch.partition(':')[2]}(num_classes=...) or with no "
                f"arguments ({e}); give it defaults for its other parameters"
            ) from e
        return as_backbone(factory(**kwargs))
    factory = MODELS.get(arch)
    kwargs = {}
    if zero_init_residual:
        if "zero_init_residual" not in inspect.signature(factory).parameters:
            raise ConfigError(f"zero_init_residual is an option of the ImageNet ResNets, not of '{arch}'; drop it")
        kwargs["zero_init_residual"] = True
    return as_backbone(factory(num_classes=num_classes, **kwargs))
