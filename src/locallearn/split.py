"""Cut a backbone's chain of units into K gradient-isolated stages.

A split is a list of *cut points*: unit indices after which a stage ends (K-1 of them for K stages). They
come from one of five sources, all resolved by `resolve_cuts`:

- a paper table (`table`, `balanced-memory`, `stem-merged`) keyed by arch, dataset and K (splits.yaml),
- `even`: K alone, cut points chosen to balance measured FLOPs (or `even-memory`: bytes held for backward),
- explicit `[stage, block]` coordinates, as in the papers' configs,
- explicit unit indices (`units:3,7,11`),
- module names where a stage begins (`cuts=["layer2.1", "layer3.0"]`): unit names, or for a traced model any
  module whose first operation begins a unit (`models/trace.py`).

`SplitNet` then holds the stages (sharing the backbone's modules) and one measured `StageRecord` each.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import yaml
from torch import nn

from .errors import ConfigError
from .measure.units import UnitCost, measure_units
from .models.base import Backbone

SPLIT_KINDS = ("table", "balanced-memory", "stem-merged", "even", "even-memory")


@functools.cache
def split_tables() -> dict:
    text = importlib.resources.files("locallearn").joinpath("splits.yaml").read_text()
    return yaml.safe_load(text)


@dataclass(frozen=True)
class StageRecord:
    """What one stage is and what leaves it; measured, never typed by hand."""

    index: int
    first_unit: int
    last_unit: int  # inclusive
    unit_names: tuple[str, ...]
    in_shape: tuple[int, ...]  # per sample
    out_shape: tuple[int, ...]  # per sample, (C, H, W) at a boundary, (classes,) for the last stage
    params: int
    flops: int  # forward FLOPs per sample
    saved_bytes: int  # activation bytes held for backward per sample
    last_coord: tuple[int, int] | None

    @property
    def channels(self) -> int:
        return self.out_shape[0]

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.out_shape[1:]


def _coords_to_cuts(backbone: Backbone, coords: list[list[int]] | list[tuple[int, int]]) -> list[int]:
    index = {c: i for i, c in enumerate(backbone.coords) if c is not None}
    if not index:
        raise ConfigError("this backbone has no [stage, block] coordinates; give unit indices (units:3,7)")
    cuts = []
    for c in coords:
        key = tuple(int(v) for v in c)
        if key not in index:
            raise ConfigError(
                f"boundary {list(key)} does not exist in this backbone; valid ones run from "
                f"{list(backbone.coords[0])} to {list(backbone.coords[-2])}"
            )
        cuts.append(index[key])
    return cuts


def balanced_cuts(costs: list[int], k: int) -> list[int]:
    """Contiguous partition of `costs` into k non-empty parts minimising the largest part (exact DP)."""
    n = len(costs)
    prefix = [0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[j][i]: minimal max-part cost of splitting costs[:i] into j parts; arg[j][i]: where part j starts.
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    arg = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0
    for j in range(1, k + 1):
        for i in range(j, n + 1):
            for s in range(j - 1, i):
                v = max(best[j - 1][s], prefix[i] - prefix[s])
                if v < best[j][i]:
                    best[j][i], arg[j][i] = v, s
    cuts, i = [], n
    for j in range(k, 1, -1):
        i = arg[j][i]
        cuts.append(i - 1)
    return sorted(cuts)


def table_cuts(backbone: Backbone, arch: str, kind: str, k: int, dataset: str | None) -> list[int]:
    tables = split_tables()
    section = {"table": "infopro", "balanced-memory": "infopro_balanced", "stem-merged": "stem_merged"}[kind]
    entry = tables.get(section, {}).get(arch)
    if entry is not None and kind == "balanced-memory":
        # Balanced for one dataset's image size and memory profile: never borrowed by another dataset.
        name = {None: "cifar10", "cifar10-sample": "cifar10"}.get(dataset, dataset)
        if name not in entry:
            raise ConfigError(
                f"no 'balanced-memory' split of '{arch}' for dataset '{name}' (tables exist for "
                f"{', '.join(sorted(entry))}); use --split even-memory to balance it by measurement"
            )
        entry = entry[name]
    if entry is None or k not in entry:
        have = sorted(entry) if entry else []
        raise ConfigError(
            f"no '{kind}' split for arch '{arch}' at K={k} (tables have K in {have}); "
            "use --split even for an automatic balanced split, or give boundaries explicitly"
        )
    coords = entry[k]
    if kind == "stem-merged":
        # K entries = the last block of every module; the last entry is the network's final block.
        coords = coords[:-1]
    return _coords_to_cuts(backbone, coords)


def resolve_cuts(
    backbone: Backbone,
    k: int,
    split: str | list | None,
    *,
    arch: str,
    dataset: str | None,
    costs: list[UnitCost],
) -> list[int]:
    """Turn a split description into sorted unit indices after which a stage ends."""
    n = len(backbone.units)
    if k < 1:
        raise ConfigError(f"K must be at least 1, got {k}")
    if k > n - 1:
        raise ConfigError(f"K={k} is larger than the {n - 1} units (stem and blocks) of '{arch}'; use K <= {n - 1}")
    if k == 1:
        return []
    if split is None:
        split = "table" if _has_table(arch, k) else "even"
    if isinstance(split, str) and split.startswith("units:"):
        try:
            cuts = [int(v) for v in split[len("units:") :].split(",") if v.strip()]
        except ValueError as e:
            raise ConfigError(f"bad --split '{split}': expected units:i,j,... with integers") from e
    elif isinstance(split, str) and split.strip().startswith("["):
        cuts = _coords_to_cuts(backbone, yaml.safe_load(split))
    elif isinstance(split, list) and all(isinstance(name, str) for name in split):
        cuts = sorted(_name_to_cut(backbone, name) for name in split)
    elif isinstance(split, list):
        cuts = _coords_to_cuts(backbone, split)
    elif split in ("table", "balanced-memory", "stem-merged"):
        cuts = table_cuts(backbone, arch, split, k, dataset)
    elif split in ("even", "even-memory"):
        key = "saved_bytes" if split == "even-memory" else "flops"
        # The head is merged into the last stage: it is not worth a stage of its own.
        unit_costs = [getattr(c, key) for c in costs[:-1]]
        unit_costs[-1] += getattr(costs[-1], key)
        cuts = balanced_cuts(unit_costs, k)
    else:
        raise ConfigError(
            f"unknown split '{split}'; use one of {', '.join(SPLIT_KINDS)}, [[stage, block], ...] or units:i,j"
        )
    if len(cuts) != k - 1:
        raise ConfigError(f"split '{split}' gives {len(cuts) + 1} stages but K={k}; make them agree")
    if sorted(set(cuts)) != cuts or cuts[0] < 0 or cuts[-1] >= n - 2:
        raise ConfigError(
            f"cut points {cuts} must be strictly increasing unit indices in [0, {n - 3}] "
            "(the last block stays with the head)"
        )
    return cuts


def _name_to_cut(backbone: Backbone, name: str) -> int:
    """The cut point before the unit that module `name` begins."""
    start = backbone.unit_starting_at(name)
    if not 0 < start < len(backbone.units) - 1:
        raise ConfigError(
            f"a stage cannot begin at '{name}': the first stage starts the network and the last one holds a "
            f"unit before the head; stages can begin at {', '.join(backbone.unit_names[1:-1])}"
        )
    return start - 1


def _has_table(arch: str, k: int) -> bool:
    return k in split_tables().get("infopro", {}).get(arch, {})


class SplitNet(nn.Module):
    """K stages of a backbone. Running `stages` in order equals `backbone(x)`; the stages share its modules."""

    def __init__(
        self, backbone: Backbone, cuts: list[int], input_shape: tuple[int, ...], costs: list[UnitCost]
    ) -> None:
        super().__init__()
        n = len(backbone.units)
        bounds = [-1, *cuts, n - 1]
        stages, records = [], []
        for k in range(len(bounds) - 1):
            first, last = bounds[k] + 1, bounds[k + 1]
            units = list(backbone.units[first : last + 1])
            stages.append(nn.Sequential(*units))
            seg = costs[first : last + 1]
            records.append(
                StageRecord(
                    index=k,
                    first_unit=first,
                    last_unit=last,
                    unit_names=tuple(backbone.unit_names[first : last + 1]),
                    in_shape=input_shape if first == 0 else costs[first - 1].out_shape,
                    out_shape=costs[last].out_shape,
                    params=sum(c.params for c in seg),
                    flops=sum(c.flops for c in seg),
                    saved_bytes=sum(c.saved_bytes for c in seg),
                    last_coord=backbone.coords[last],
                )
            )
        self.stages = nn.ModuleList(stages)
        self.records: list[StageRecord] = records
        self.cuts = list(cuts)
        self.unit_costs = costs
        self.coords = list(backbone.coords)
        self.init_weights = backbone.init_weights  # the backbone's init rule, for copies of its blocks
        # The model as given and how its keys map to the units', for `export_source`. Plain attributes: the
        # units are already registered (in `stages`), and activation checkpointing may wrap them there later.
        self.__dict__["source"] = backbone.source
        self.__dict__["_units"] = list(backbone.units)
        self.unit_prefixes = list(backbone.unit_prefixes)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def stem_is_module(self) -> bool:
        """True when the stem alone is a stage (InfoPro's [0, 0] boundary)."""
        return bool(self.cuts) and self.cuts[0] == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def export_source(self) -> nn.Module:
        """A copy of the model as it was given (its own class and state_dict keys) holding the trained weights."""
        model = copy.deepcopy(self.source)
        # A traced unit may hold its own reference to a tensor the model reads directly (a buffer outside any
        # layer), which `.to(device)` replaces in the unit only: the units' tensors are the trained ones.
        state = {
            prefix + key: value
            for unit, prefix in zip(self._units, self.unit_prefixes, strict=True)
            for key, value in unit.state_dict().items()
        }
        model.load_state_dict(state, strict=False)
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        return model.to(device)


def with_stem_module(cuts: list[int]) -> list[int]:
    """`cuts` with the stem a stage of its own (a cut after unit 0), as MAN++ trains it."""
    return cuts if cuts[:1] == [0] else [0, *cuts]


def split_request(split: str | list | None, cuts: Sequence[str] | None) -> str | list | None:
    """The split to resolve when stages may also be given as module names where they begin (`cuts`)."""
    if not cuts:
        return split
    if split is not None:
        raise ConfigError(f"give either split ({split}) or cuts ({','.join(cuts)}), not both")
    return list(cuts)


def split_model(
    backbone: Backbone,
    k: int,
    split: str | list | None = None,
    *,
    arch: str = "",
    dataset: str | None = None,
    input_shape: tuple[int, ...] = (3, 32, 32),
    stem_module: bool = False,
    cuts: Sequence[str] | None = None,
) -> SplitNet:
    """Split `backbone` into K stages; see the module docstring for what `split` accepts.

    `cuts` names the modules where stages 1..K-1 begin, instead of `split`. `stem_module=True` gives the stem
    a module of its own when the split has none (MAN++ trains it by its own local loss), so the result then
    has K+1 stages: the true number of gradient-isolated modules.
    """
    split = split_request(split, cuts)
    costs = measure_units(backbone.units, input_shape)
    cuts = resolve_cuts(backbone, k, split, arch=arch, dataset=dataset, costs=costs)
    if stem_module:
        cuts = with_stem_module(cuts)
    return SplitNet(backbone, cuts, input_shape, costs)
