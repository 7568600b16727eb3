"""Local objectives and cross-stage mechanisms, and `build_learner`, which composes them from a name.

A method name is `objective[:variant][+mechanism[:arg]]...`, e.g. `infopro:softmax+contsup:R1E+man`.
"""

from __future__ import annotations

import re

from ..errors import ConfigError
from ..split import SplitNet
from . import contsup, dgl, greedy, infopro, man, mlaan  # noqa: F401  (register the objectives and mechanisms)
from .base import AuxContext, AuxLoss, AuxOutput, Batch, Carry, Mechanism, Objective, StageResult
from .learner import LocalLearner
from .options import MethodOptions
from .registry import MECHANISMS, OBJECTIVES

__all__ = [
    "MECHANISMS",
    "OBJECTIVES",
    "AuxContext",
    "AuxLoss",
    "AuxOutput",
    "Batch",
    "Carry",
    "LocalLearner",
    "Mechanism",
    "MethodOptions",
    "Objective",
    "StageResult",
    "build_learner",
    "list_methods",
    "needs_stem_module",
    "parse_method",
]


def list_methods() -> list[str]:
    return ["e2e", *OBJECTIVES.names()]


def parse_method(name: str) -> tuple[str, str | None, list[tuple[str, str | None]]]:
    """`infopro:softmax+man` -> ("infopro", "softmax", [("man", None)])."""
    # "+" joins parts, but "man++" ends in two of them: a part is a name, an optional "++", an optional ":arg".
    parts = re.findall(r"[^+:]+(?:\+\+)?(?::[^+]+)?", name.replace(" ", ""))
    if not parts or "+".join(parts) != name.replace(" ", ""):
        raise ConfigError(f"cannot parse method '{name}'; write e.g. infopro:softmax+contsup:R1E+man")
    obj, _, variant = parts[0].partition(":")
    if obj != "e2e" and obj not in OBJECTIVES:
        raise ConfigError(f"unknown method '{obj}'; choose one of: {', '.join(list_methods())}")
    mechs = []
    for part in parts[1:]:
        mech, _, arg = part.partition(":")
        MECHANISMS.get(mech)
        mechs.append((mech, arg or None))
    names = [m for m, _ in mechs]
    for m in names:
        for other in getattr(MECHANISMS.get(m), "incompatible", ()):
            if other in names:
                raise ConfigError(f"'{m}' and '{other}' cannot be combined in one method; drop one of them")
    if len(set(names)) != len(names):
        raise ConfigError(f"a mechanism appears twice in '{name}'")
    if obj == "e2e" and mechs:
        raise ConfigError("e2e trains one module end to end; mechanisms need a local objective")
    return obj, variant or None, mechs


def needs_stem_module(method: str, options: MethodOptions | None = None) -> bool:
    """Whether a mechanism of `method` trains the stem as a module of its own (MAN++ unless switched off)."""
    options = options or MethodOptions()
    return any(MECHANISMS.get(m).stem_module(options) for m, _ in parse_method(method)[2])


def build_learner(
    method: str,
    net: SplitNet,
    *,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    options: MethodOptions | None = None,
) -> LocalLearner:
    options = options or MethodOptions()
    obj_name, variant, mechs = parse_method(method)
    if obj_name == "e2e":
        if net.num_stages != 1:
            raise ConfigError("e2e trains a single module: use K=1 (or drop --K)")
        objective = None
    else:
        objective = OBJECTIVES.get(obj_name)(options, variant)
        defaults = [MECHANISMS.get(m).default_aux_net(obj_name) for m, _ in mechs]
        objective.default_head = next((d for d in defaults if d is not None), objective.default_head)
    mechanisms = [MECHANISMS.get(m)(options, arg) for m, arg in mechs]
    return LocalLearner(net, objective, mechanisms, num_classes=num_classes, mean=mean, std=std)
