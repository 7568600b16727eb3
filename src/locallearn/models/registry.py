"""The model registry, kept apart so that backbone files can register without import cycles."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("arch")
