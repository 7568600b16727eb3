"""The backbone contract: an ordered chain of units with optional (stage, block) coordinates.

Every backbone the splitter accepts is a `Backbone`: running `units` in order is the whole forward pass,
the last unit is the classifier head (GAP + FC for ResNets), and `coords[i]` names unit i in the papers'
`[stage, block]` notation (stem = (0, 0), residual block b of layer s = (s, b), head = None).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError


class Backbone(nn.Module):
    """A chain of units. Subclasses fill `units`, `unit_names` and `coords` in their constructor.

    `source` is the model as its author wrote it (this backbone itself for a registered one), sharing the units'
    modules; `unit_prefixes[i]` turns a key of `units[i].state_dict()` into the same tensor's key in
    `source.state_dict()`, so that trained weights go back into the author's class.
    """

    units: nn.ModuleList
    unit_names: list[str]
    coords: list[tuple[int, int] | None]
    image_size: int = 32  # the input side the backbone is designed for: what `create_learner` measures it at

    def __init__(
        self,
        units: Sequence[nn.Module],
        names: Sequence[str],
        coords: Sequence[tuple[int, int] | None] | None = None,
        *,
        source: nn.Module | None = None,
        unit_prefixes: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if len(units) != len(names):
            raise ValueError("one name per unit is required")
        self.units = nn.ModuleList(units)
        self.unit_names = list(names)
        self.coords = list(coords) if coords is not None else [None] * len(units)
        if source is not None:  # kept out of the module tree, where it would list every weight twice
            self.__dict__["_source"] = source
        self.unit_prefixes = (
            list(unit_prefixes) if unit_prefixes is not None else [f"units.{i}." for i in range(len(units))]
        )

    @property
    def source(self) -> nn.Module:
        # Not stored when it is the backbone itself: a module referring to itself is freed only by the garbage
        # collector, at a moment the allocation profiler then sees as a stray free.
        return self.__dict__.get("_source", self)

    def unit_starting_at(self, name: str) -> int:
        """The index of the unit named `name`: a stage may begin there (a cut given by name)."""
        if name in self.unit_names:
            return self.unit_names.index(name)
        raise ConfigError(f"no unit named '{name}'; stages can begin at {', '.join(self.unit_names[1:-1])}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit(x)
        return x

    @staticmethod
    def init_weights(module: nn.Module) -> None:
        """The backbone's initialisation rule, applied to copies of its blocks (MAN/MLAAN twins).

        The default is PyTorch's own per-layer init; backbones with a paper-specific rule override it.
        """
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


class ClassifierHead(nn.Module):
    """Global average pool + flatten + linear: (B, C, H, W) -> (B, classes)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
