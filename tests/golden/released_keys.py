"""Which released state_dict key each tensor of a locallearn learner is, per golden fixture.

A released module (a key prefix such as `layer2.0` or `decoder_1_2`) is paired with one of our modules: their
leaf modules (those holding tensors directly) are matched in registration order and, within a leaf, tensors by
name (`weight`, `running_mean`, ...), shapes checked. Released keys we have no module for (heads of blocks no
module ends at, unused copies) stay unmapped; the test checks that the reference gives them no gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from locallearn.methods import LocalLearner

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "cifar10"


def _leaves(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in module.named_modules() if m._parameters or m._buffers]


class KeyMap:
    """released key -> our state_dict name, built module by module."""

    def __init__(self, learner: LocalLearner, tensors: dict[str, list]) -> None:
        self.names = {id(m): n for n, m in learner.named_modules()}
        self.tensors = tensors
        self.ours: dict[str, str] = {}
        self.own_shapes = {n: tuple(t.shape) for n, t in learner.state_dict().items()}

    def _released_leaves(self, prefix: str) -> list[str]:
        leaves: list[str] = []
        for key in self.tensors:
            if key.startswith(prefix + "."):
                leaf = key.rsplit(".", 1)[0]
                if leaf not in leaves:
                    leaves.append(leaf)
        return leaves

    def tensor(self, key: str, module: nn.Module, attr: str) -> None:
        own = f"{self.names[id(module)]}.{attr}".lstrip(".")
        shape = tuple(self.tensors[key][0])
        if self.own_shapes[own] != shape:
            raise AssertionError(f"{key} {shape} paired with {own} {self.own_shapes[own]}")
        self.ours[key] = own

    def module(self, prefix: str, module: nn.Module) -> None:
        """Pair the released module `prefix` with `module`, leaf by leaf."""
        released = self._released_leaves(prefix)
        ours = _leaves(module)
        if len(released) != len(ours):
            raise AssertionError(f"{prefix} has {len(released)} leaf modules, ours {len(ours)}: {[n for n, _ in ours]}")
        for leaf, (_, mod) in zip(released, ours, strict=True):
            for key in self.tensors:
                if key.rsplit(".", 1)[0] == leaf:
                    self.tensor(key, mod, key.rsplit(".", 1)[1])


# ----------------------------------------------------------------------------------------------- pieces
def backbone(m: KeyMap, learner: LocalLearner, fc: str) -> None:
    """conv1/bn1 (stem), layer<s>.<b> (blocks) and the classifier `fc` (`fc64` in MAN, MAN++ and MLAAN)."""
    net = learner.net
    units = [u for stage in net.stages for u in stage]
    m.module("conv1", units[0][0])
    m.module("bn1", units[0][1])
    for unit, (s, b) in zip(units[1:-1], net.coords[1:-1], strict=True):
        m.module(f"layer{s}.{b}", unit)
    m.module(fc, units[-1].fc)


def infopro_aux(m: KeyMap, aux: nn.Module, coord: tuple[int, int], suffix: str = "") -> None:
    """decoder_<s>_<b> and aux_classifier_<s>_<b>: the released aux nets sized for block (s, b)."""
    s, b = coord
    if getattr(aux, "decoder", None) is not None:
        m.module(f"decoder_{s}_{b}{suffix}", aux.decoder)
    if aux.head is not None:
        m.module(f"aux_classifier_{s}_{b}{suffix}", aux.head)


def end_coord(learner: LocalLearner, k: int) -> tuple[int, int]:
    return learner.net.records[k].last_coord


def next_coord(learner: LocalLearner, k: int) -> tuple[int, int]:
    return learner.net.coords[learner.net.records[k + 1].first_unit]


# ----------------------------------------------------------------------------------------------- per fixture
def map_infopro(m: KeyMap, learner: LocalLearner) -> None:
    backbone(m, learner, "fc")
    for k in range(learner.num_stages - 1):
        infopro_aux(m, learner.owned[k]["aux"], end_coord(learner, k))


def map_contsup(m: KeyMap, learner: LocalLearner) -> None:
    map_infopro(m, learner)
    for k in range(1, learner.num_stages):
        node = learner.owned[k]["context"]
        m.module(f"cont_sup_node.encoder_{k - 1}.encoder", node.encoder)
        for j, res in node.res.items():
            m.module(f"cont_sup_node.resencoder_{k - 1}_{j}.encoder", res)


def _momentum(m: KeyMap, branch: nn.Module, lb: str, ema: str, scale: str | None) -> None:
    m.module(lb, branch.trainable)
    m.module(ema, branch.twin)
    if scale is not None:
        m.tensor(scale, branch, "scale")


def map_man(m: KeyMap, learner: LocalLearner) -> None:
    backbone(m, learner, "fc64")
    for k in range(learner.num_stages - 1):
        _momentum(m, learner.owned[k]["momentum"], f"LB.{k}", f"EMA_Net.{k}", None)
        infopro_aux(m, learner.owned[k]["aux"], next_coord(learner, k))


def map_manpp(m: KeyMap, learner: LocalLearner) -> None:
    """Stage 0 is the stem module (`*_first`, aux nets of block (0, 0)); stage k >= 1 is released module k-1."""
    backbone(m, learner, "fc64")
    _momentum(m, learner.owned[0]["momentum"], "LB_first", "EMA_first", "ema_s_first")
    infopro_aux(m, learner.owned[0]["aux"], (0, 0))
    for k in range(1, learner.num_stages - 1):
        _momentum(m, learner.owned[k]["momentum"], f"LB.{k - 1}", f"EMA_Net.{k - 1}", f"ema_s.{k - 1}")
        infopro_aux(m, learner.owned[k]["aux"], next_coord(learner, k))


def map_mlaan(m: KeyMap, learner: LocalLearner) -> None:
    """Independent heads `net_classifier_<s>_<b>`; stage k's leap chain is Aug_Net.k, its twin EMA_Net.k.0 and its
    head aux_classifier_<s>_<b>_<k> (the released EMA_Net.k.j, j >= 1, are never run)."""
    backbone(m, learner, "fc64")
    for k in range(learner.num_stages - 1):
        s, b = end_coord(learner, k)
        m.module(f"net_classifier_{s}_{b}", learner.owned[k]["aux"].head)
        if "leap" in learner.owned[k]:
            leap = learner.owned[k]["leap"]
            for j, block in enumerate(leap.blocks):
                m.module(f"Aug_Net.{k}.{j}", block)
            m.module(f"EMA_Net.{k}.0", leap.twin)
            m.module(f"aux_classifier_{s}_{b}_{k}", leap.aux.head)


@dataclass(frozen=True)
class Case:
    recipe: Path
    mapper: Callable[[KeyMap, LocalLearner], None]


CASES = {
    "infopro_contrast_k4": Case(CONFIGS / "resnet32_infopro_k4.yaml", map_infopro),
    "infopro_softmax_k16": Case(CONFIGS / "resnet32_infopro_softmax_k16.yaml", map_infopro),
    "infopro_star_r110_k2": Case(CONFIGS / "resnet110_infopro_star_k2.yaml", map_infopro),
    "contsup_r1e_contrast_k8": Case(CONFIGS / "resnet32_contsup_r1e_contrast_k8.yaml", map_contsup),
    "man_k16": Case(CONFIGS / "resnet32_infopro_man_k16.yaml", map_man),
    "manpp_k8": Case(CONFIGS / "resnet32_infopro_manpp_k8.yaml", map_manpp),
    "mlaan_k8": Case(CONFIGS / "resnet32_mlaan_k8.yaml", map_mlaan),
}
