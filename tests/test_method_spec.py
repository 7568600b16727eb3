"""The method string is parsed once into a MethodSpec; K (asked for) and stages (trained) stay apart."""

from __future__ import annotations

import pytest
from tests.helpers import make_learner

from locallearn.config import build_config
from locallearn.errors import ConfigError
from locallearn.methods import MechanismSpec, parse_method


def test_spec_holds_objective_variant_and_mechanisms():
    spec = parse_method("infopro:softmax+contsup:R1E+man++")
    assert (spec.objective, spec.variant) == ("infopro", "softmax")
    assert spec.mechanisms == (MechanismSpec("contsup", "R1E"), MechanismSpec("man++"))
    assert not spec.is_e2e and parse_method("e2e").is_e2e
    assert spec.slug == "infopro-softmax_contsup-R1E_man__"


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("bogus", "unknown method 'bogus'"),
        ("infopro+man+man", "appears twice"),
        ("infopro+man+man++", "cannot be combined"),
        ("e2e+man", "mechanisms need a local objective"),
        ("+infopro", "cannot parse method"),
    ],
)
def test_bad_method_is_refused_when_the_config_is_built(method, message):
    with pytest.raises(ConfigError, match=message):
        build_config(flags={"method": method})


def test_config_keeps_one_parsed_spec():
    cfg = build_config(flags={"method": "dgl+man"})
    assert cfg.spec is cfg.spec is parse_method("dgl+man")


@pytest.mark.parametrize(
    ("method", "options", "stages"),
    [("infopro", {}, 3), ("infopro+man++", {}, 4), ("infopro+man++", {"manpp_stem_module": False}, 3)],
)
def test_k_is_asked_for_and_stages_are_trained(method, options, stages):
    overrides = [f"method_options.{k}={v}" for k, v in options.items()]
    cfg = build_config(flags={"method": method, "K": 3, "arch": "resnet8"}, overrides=overrides)
    assert cfg.K == 3 and cfg.spec.stem_module(cfg.method_options) == (stages == 4)
    assert make_learner(method, 3, split="units:1,2", **options).num_stages == stages


def test_e2e_has_one_module_whatever_k():
    assert build_config(flags={"method": "e2e", "K": 8}).K == 1
