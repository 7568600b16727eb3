"""Local objectives and cross-stage mechanisms, and `build_learner`, which composes them from a name.

A method name is `objective[:variant][+mechanism[:arg]]...`, e.g. `infopro:softmax+contsup:R1E+man`.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..split import SplitNet
from . import contsup, dgl, greedy, infopro, man, mlaan  # noqa: F401  (register the objectives and mechanisms)
from .base import AuxContext, AuxLoss, AuxOutput, Batch, Carry, Mechanism, Objective, StageResult
from .learner import LocalLearner
from .options import AuxOptions, compose_options
from .registry import MECHANISMS, OBJECTIVES
from .spec import MechanismSpec, MethodSpec, list_methods, parse_method

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
    "MechanismSpec",
    "MethodOptions",
    "MethodSpec",
    "Objective",
    "StageResult",
    "build_learner",
    "list_methods",
    "parse_method",
]


# The `method_options` a recipe may set: every registered part's options, flat (see options.py).
MethodOptions = compose_options(
    [AuxOptions]
    + [t for name in OBJECTIVES.names() for t in OBJECTIVES.get(name).options_types]
    + [t for name in MECHANISMS.names() for t in MECHANISMS.get(name).options_types],
    __name__,
)


def build_learner(
    method: str | MethodSpec,
    net: SplitNet,
    *,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    options: MethodOptions | None = None,
) -> LocalLearner:
    spec = parse_method(method) if isinstance(method, str) else method
    options = options or MethodOptions()
    if spec.is_e2e:
        if net.num_stages != 1:
            raise ConfigError("e2e trains a single module: use K=1 (or drop --K)")
        objective = None
    else:
        objective = OBJECTIVES.get(spec.objective)(options, spec.variant)
        defaults = [MECHANISMS.get(m.name).default_aux_net(spec.objective) for m in spec.mechanisms]
        objective.default_head = next((d for d in defaults if d is not None), objective.default_head)
    mechanisms = [MECHANISMS.get(m.name)(options, m.arg) for m in spec.mechanisms]
    return LocalLearner(net, objective, mechanisms, num_classes=num_classes, mean=mean, std=std)
