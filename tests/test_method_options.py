"""Each objective and mechanism declares its options; `method_options` is their flat union, checked by them."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from locallearn.config import build_config
from locallearn.errors import ConfigError
from locallearn.fielddocs import field_docs
from locallearn.methods import MECHANISMS, OBJECTIVES, MethodOptions
from locallearn.methods.infopro import InfoProOptions
from locallearn.methods.options import AuxOptions, compose_options


def test_method_options_are_the_union_of_every_registered_part():
    parts = {AuxOptions}
    parts |= {t for n in OBJECTIVES.names() for t in OBJECTIVES.get(n).options_types}
    parts |= {t for n in MECHANISMS.names() for t in MECHANISMS.get(n).options_types}
    declared = [f.name for part in parts for f in dataclasses.fields(part)]
    assert len(declared) == len(set(declared))  # each key has one owner
    assert sorted(f.name for f in dataclasses.fields(MethodOptions)) == sorted(declared)
    defaults = MethodOptions()
    for part in parts:  # the same defaults as the part declares
        assert defaults.part(part) == part()


def test_every_option_is_documented():
    assert set(field_docs(MethodOptions)) == {f.name for f in dataclasses.fields(MethodOptions)}
    assert field_docs(MethodOptions)["ixx_1"] == field_docs(InfoProOptions)["ixx_1"]


def test_a_key_declared_by_two_parts_is_refused():
    @dataclasses.dataclass
    class Clash:
        ixx_1: float = 0.0

    with pytest.raises(ValueError, match="'ixx_1' is declared by InfoProOptions and Clash"):
        compose_options([InfoProOptions, Clash], __name__)


def test_flat_keys_reach_the_part_that_owns_them():
    cfg = build_config(overrides=["method_options.ixx_1=5", "method_options.aux_net=2c2f"])
    assert cfg.method_options.part(InfoProOptions).ixx_1 == 5.0
    assert cfg.method_options.part(AuxOptions).aux_net == "2c2f"


@pytest.mark.parametrize(
    "override",
    [
        "aux_net=3c3f",
        "aux_feature_dim=0",
        "decoder=tiny",
        "temperature=0",
        "ema_momentum=1.5",
        "ema_timing=never",
        "mlaan_window=1",
        "mlaan_wx=-1",
    ],
)
def test_each_part_checks_its_options(override):
    key, _, text = override.partition("=")
    with pytest.raises(ConfigError, match=f"method_options.{key}"):
        build_config(overrides=[f"method_options.{override}"])
    with pytest.raises(ConfigError, match=f"method_options.{key}"):  # also when built without a config
        MethodOptions(**{key: yaml.safe_load(text)})
