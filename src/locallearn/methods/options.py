"""Options of objectives and mechanisms: each part declares its own dataclass next to its code; the recipe /
CLI `method_options` section is their union, flat (`method_options.ixx_1`), composed here from them.

A part's dataclass is the one source of its options' names, types, defaults, docs (attribute docstrings) and
checks (`__post_init__`, which raises a ConfigError naming the key and the fix).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..aux import AUTO, HEADS
from ..errors import ConfigError
from ..fielddocs import field_docs

AUX_NETS = (*HEADS, "mlp-sr", AUTO)


@dataclass
class AuxOptions:
    """The aux-net options every objective reads."""

    aux_net: str | None = None
    """Aux head: 0c1f/0c2f/1c1f/1c2f/1c3f/2c2f, mlp-sr (DGL), man-dgl (the released MAN/MAN++ DGL head),
    mlaan-imagenet (MLAAN's ResNet-34 head), imagenet (InfoPro's 4-conv ImageNet head), or auto / null: chosen
    per boundary from the feature it is fed. auto: greedy 0c1f; dgl and infopro imagenet on features of >= 256
    channels, else dgl mlp-sr and infopro 1c2f (with man/man++: infopro 2c2f, dgl man-dgl)."""
    aux_feature_dim: int = 128
    """D: hidden width of the aux MLP and the contrastive embedding size."""
    aux_widen: int = 1
    """Width multiplier of aux nets (InfoPro's aux_net_widen)."""

    def __post_init__(self) -> None:
        if self.aux_net is not None and self.aux_net not in AUX_NETS:
            raise ConfigError(
                f"method_options.aux_net must be one of {', '.join(AUX_NETS)} (or null: auto, chosen by the feature), "
                f"not '{self.aux_net}'"
            )
        if self.aux_feature_dim < 1 or self.aux_widen < 1:
            raise ConfigError(
                "method_options.aux_feature_dim and aux_widen must be >= 1, "
                f"got {self.aux_feature_dim}, {self.aux_widen}"
            )


def compose_options(parts: Iterable[type], module: str) -> type:
    """One flat dataclass `MethodOptions` with the fields of every part (each part once, in order).

    Its `part(cls)` is the typed view of one part's options, and constructing one (or `validate()`) runs every
    part's checks. A field name declared by two parts is a programming error: the flat keys must stay unique."""
    parts = list(dict.fromkeys(parts))
    owner: dict[str, type] = {}
    fields: list[tuple[str, Any, dataclasses.Field]] = []
    for part in parts:
        hints, docs = typing.get_type_hints(part), field_docs(part)
        for f in dataclasses.fields(part):
            if f.name in owner:
                raise ValueError(f"option '{f.name}' is declared by {owner[f.name].__name__} and {part.__name__}")
            owner[f.name] = part
            default = {"default": f.default} if f.default is not dataclasses.MISSING else {}
            factory = {"default_factory": f.default_factory} if f.default_factory is not dataclasses.MISSING else {}
            meta = {"doc": docs[f.name]} if f.name in docs else {}
            fields.append((f.name, hints[f.name], dataclasses.field(**default, **factory, metadata=meta)))

    def part(self: Any, cls: type) -> Any:
        """This run's options of part `cls` (its `__post_init__` checks them)."""
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    def validate(self: Any) -> None:
        for p in parts:
            part(self, p)

    namespace = {"part": part, "validate": validate, "__post_init__": validate, "parts": tuple(parts)}
    doc = "Hyper-parameters of every objective and mechanism, flat: the recipe / CLI `method_options` section."
    cls = dataclasses.make_dataclass("MethodOptions", fields, namespace=namespace)
    cls.__doc__, cls.__module__ = doc, module  # where it is importable from
    return cls
