"""The method string, parsed once: `objective[:variant][+mechanism[:arg]]...` -> a typed `MethodSpec`.

Every consumer (trainer, `build_learner`, plan, profile, CLI) reads the spec instead of the string: whether
the run is E2E, its folder name, and whether the stem trains as a stage of its own beside the K modules.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .registry import MECHANISMS, OBJECTIVES

if TYPE_CHECKING:
    from .options import MethodOptions

E2E = "e2e"


@dataclass(frozen=True)
class MechanismSpec:
    name: str
    arg: str | None = None


@dataclass(frozen=True)
class MethodSpec:
    text: str
    """The method string as written, spaces removed (what configs and summaries record)."""
    objective: str
    """A registered objective, or `e2e`."""
    variant: str | None
    mechanisms: tuple[MechanismSpec, ...]

    @property
    def is_e2e(self) -> bool:
        return self.objective == E2E

    @property
    def slug(self) -> str:
        """The method as a folder-name part: `infopro:softmax+man` -> `infopro-softmax_man`."""
        return self.text.replace("+", "_").replace(":", "-")

    def stem_module(self, options: MethodOptions) -> bool:
        """Whether a mechanism trains the stem as a stage of its own (MAN++ unless switched off): the split of
        K modules then gains a stem stage unless it already has one, and `stages` (what is trained) exceeds K."""
        return any(MECHANISMS.get(m.name).stem_module(options) for m in self.mechanisms)


def list_methods() -> list[str]:
    return [E2E, *OBJECTIVES.names()]


@functools.cache
def parse_method(text: str) -> MethodSpec:
    """`infopro:softmax+man` -> MethodSpec("infopro", "softmax", (MechanismSpec("man"),)); a ConfigError
    names what is wrong. Cached: a method string is parsed once per process."""
    name = text.replace(" ", "")
    # "+" joins parts, but "man++" ends in two of them: a part is a name, an optional "++", an optional ":arg".
    parts = re.findall(r"[^+:]+(?:\+\+)?(?::[^+]+)?", name)
    if not parts or "+".join(parts) != name:
        raise ConfigError(f"cannot parse method '{text}'; write e.g. infopro:softmax+contsup:R1E+man")
    objective, _, variant = parts[0].partition(":")
    if objective != E2E and objective not in OBJECTIVES:
        raise ConfigError(f"unknown method '{objective}'; choose one of: {', '.join(list_methods())}")
    mechanisms = []
    for part in parts[1:]:
        mech, _, arg = part.partition(":")
        MECHANISMS.get(mech)
        mechanisms.append(MechanismSpec(mech, arg or None))
    names = [m.name for m in mechanisms]
    for m in names:
        for other in getattr(MECHANISMS.get(m), "incompatible", ()):
            if other in names:
                raise ConfigError(f"'{m}' and '{other}' cannot be combined in one method; drop one of them")
    if len(set(names)) != len(names):
        raise ConfigError(f"a mechanism appears twice in '{text}'")
    if objective == E2E and mechanisms:
        raise ConfigError("e2e trains one module end to end; mechanisms need a local objective")
    return MethodSpec(name, objective, variant or None, tuple(mechanisms))
