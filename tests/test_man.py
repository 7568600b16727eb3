"""MAN and MAN++: the fused branch, EMA twins (buffers, formula, timing), stem module, legacy lambda ratio."""

from __future__ import annotations

import copy

import pytest
import torch

from helpers import assert_resumes_exactly, make_learner, random_batch
from locallearn.engine.local import LocalEngine
from locallearn.errors import ConfigError

STEM_SPLIT = "[[0, 0], [2, 0]]"  # resnet8: stem | layer1.0 layer2.0 | layer3.0 + head


def _engine(learner, lr: float = 0.05) -> LocalEngine:
    opts = [
        torch.optim.SGD(learner.stage_parameters(k), lr=lr, momentum=0.9, weight_decay=1e-4)
        for k in range(learner.num_stages)
    ]
    return LocalEngine(learner, opts)


def _state_after(learner, steps: int = 3) -> dict[str, torch.Tensor]:
    engine = _engine(learner)
    x, y = random_batch(16)
    for _ in range(steps):
        engine.train_step(x, y)
    return learner.state_dict()


def test_man_plus_plus_with_s_frozen_at_one_equals_man():
    man = make_learner("infopro:softmax+man", k=3, split=STEM_SPLIT, seed=4)
    manpp = make_learner("infopro:softmax+man++", k=3, split=STEM_SPLIT, seed=4)
    for owned in manpp.owned[:-1]:
        owned["momentum"].scale.requires_grad_(False)
    a, b = _state_after(man), _state_after(manpp)
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=0, msg=key)


def test_twins_are_buffers_that_get_no_gradient():
    learner = make_learner("greedy+man", k=3)
    twin = learner.owned[0]["momentum"].twin
    assert list(twin.parameters()) == []
    assert any(key.startswith("owned.0.momentum.twin.") for key in learner.state_dict())
    param_ids = {id(p) for k in range(learner.num_stages) for p in learner.stage_parameters(k)}
    assert all(id(b) not in param_ids for b in twin.buffers())
    _state_after(learner, 1)
    assert all(b.grad is None for b in twin.buffers())


def test_ema_with_m_one_stays_constant_and_with_m_below_one_follows_the_formula():
    frozen = make_learner("greedy+man", k=3, ema_momentum=1.0)
    before = copy.deepcopy(frozen.owned[0]["momentum"].twin.state_dict())
    _state_after(frozen, 2)
    after = frozen.owned[0]["momentum"].twin.state_dict()
    for name, value in before.items():
        if "running" not in name and "num_batches" not in name:  # BN statistics move with forwards
            assert torch.equal(after[name], value), name

    m = 0.9
    learner = make_learner("greedy+man", k=3, ema_momentum=m)
    twin, source = learner.owned[0]["momentum"].twin, learner.net.stages[1][0]
    expected = {n: m * twin.get_buffer(n) + (1 - m) * p.detach() for n, p in source.named_parameters()}
    _state_after(learner, 1)  # released order: updated after stage 0's backward, before any step
    for name, value in expected.items():
        torch.testing.assert_close(twin.get_buffer(name), value, rtol=0, atol=1e-7)


def test_after_step_timing_uses_the_stepped_source():
    m = 0.5
    learner = make_learner("greedy+man", k=3, ema_momentum=m, ema_timing="after_step")
    twin, source = learner.owned[0]["momentum"].twin, learner.net.stages[1][0]
    old = {n: twin.get_buffer(n).clone() for n, _ in source.named_parameters()}
    _state_after(learner, 1)
    for name, p in source.named_parameters():
        torch.testing.assert_close(twin.get_buffer(name), m * old[name] + (1 - m) * p.detach(), rtol=0, atol=1e-7)


def test_the_aux_net_sees_the_next_blocks_output_shape():
    # Stage 0 ends at layer1.4 (16 x 32 x 32); the next block, layer2.0, outputs 32 x 16 x 16.
    learner = make_learner("greedy+man", k=3, arch="resnet32", split="[[1, 4], [2, 4]]")
    x, _ = random_batch(2)
    h = learner.net.stages[0](x)
    assert h.shape[1:] == (16, 32, 32)
    assert learner.aux_feature(0, h).shape[1:] == (32, 16, 16)
    assert learner.owned[0]["aux"].head.fcs[0].in_features == 32  # greedy's 0c1f head, built for the branch


def test_man_plus_plus_trains_the_stem_as_its_own_module():
    assert make_learner("greedy+man", k=4, arch="resnet32").num_stages == 4
    manpp = make_learner("greedy+man++", k=4, arch="resnet32")
    assert manpp.num_stages == 5 and manpp.net.stem_is_module
    assert make_learner("greedy+man++", k=16, arch="resnet32").num_stages == 16  # the table has [0, 0]
    without = make_learner("greedy+man++", k=4, arch="resnet32", manpp_stem_module=False)  # the ImageNet code
    assert without.num_stages == 4 and not without.net.stem_is_module


def test_man_plus_plus_scale_is_learned():
    learner = make_learner("greedy+man++", k=3, split=STEM_SPLIT)
    _state_after(learner, 2)
    assert learner.owned[0]["momentum"].scale.item() != 1.0


def _lambda_rec(method: str, k: int, **options) -> list[float]:
    learner = make_learner(method, k=k, arch="resnet32", split="stem-merged", ixx_1=6, ixy_1=0.5, **options)
    return [owned["aux"].lambda_rec for owned in learner.owned[:-1]]


def test_legacy_stage_ratio_reproduces_the_released_interpolation():
    legacy = dict(ixx_2=0, ixy_2=0, legacy_stage_ratio=True)
    # MAN "K=16" = 15 one-block modules, stem merged: released ratio = layer of the next block / (16 - 2).
    man16 = _lambda_rec("infopro:softmax+man", 15, **legacy)
    assert man16[0] == pytest.approx(6 * (1 - 1 / 14))  # module 0 = stem + layer1.0, next block layer1.1
    assert man16[4] == pytest.approx(6 * (1 - 2 / 14))  # next block layer2.0
    # K=8: 8 entries, keyed 8: divisor 6. Module 2 ends at layer1.4, its next block is layer2.0.
    man8 = _lambda_rec("infopro:softmax+man", 8, **legacy)
    assert man8[2] == pytest.approx(6 * (1 - 2 / 6))
    # MAN++ adds the stem module (ratio 0); the block modules keep the K=8 divisor.
    manpp8 = _lambda_rec("infopro:softmax+man++", 8, **legacy)
    assert manpp8[0] == 6 and manpp8[3] == pytest.approx(man8[2])
    # MLAAN's InfoPro nets: the module's own last block (layer1.4) over (entries - 2).
    mlaan8 = _lambda_rec("infopro:softmax+mlaan", 8, **legacy)
    assert mlaan8[2] == pytest.approx(6 * (1 - 1 / 6))
    plain = _lambda_rec("infopro:softmax+man", 8, ixx_2=1, ixy_2=0)
    assert plain[2] == pytest.approx(6 * (1 - 2 / 6) + 2 / 6)


def test_zero_weights_at_a_module_are_refused():
    with pytest.raises(ConfigError, match="local module 6 are both 0"):
        _lambda_rec("infopro:softmax+man", 8, ixx_2=0, ixy_2=0)


def test_man_heads_default_to_the_released_cifar_ones():
    infopro = make_learner("infopro:softmax+man", k=3)
    assert len(infopro.owned[0]["aux"].head.convs) == 2  # 2c2f
    dgl = make_learner("dgl+man++", k=3)
    assert type(dgl.owned[0]["aux"].head).__name__ == "MANDGLHead"
    assert len(make_learner("infopro:softmax", k=3).owned[0]["aux"].head.convs) == 1  # 1c2f without MAN


def test_legacy_manpp_stem_head_is_the_released_contrast_head():
    learner = make_learner("infopro:softmax+man++", k=3, aux_widen=2, legacy_manpp_stem_head=True)
    stem, block = learner.owned[0]["aux"], learner.owned[1]["aux"]
    assert stem.contrast and not block.contrast
    assert stem.head.fcs[-1].out_features == 128 and len(stem.head.convs) == 1
    assert block.head.fcs[-1].out_features == 10 and len(block.head.convs) == 2


@pytest.mark.parametrize(
    ("method", "message"), [("greedy+man:x", "takes no argument"), ("greedy+man+man++", "cannot be combined")]
)
def test_bad_man_methods(method, message):
    with pytest.raises(ConfigError, match=message):
        make_learner(method, k=3)


def test_resume_is_exact_with_ema_state():
    x, y = random_batch(16)
    full = make_learner("infopro:softmax+man++", k=3, split=STEM_SPLIT, seed=5)
    engine = _engine(full)
    for _ in range(4):
        engine.train_step(x, y)

    first = make_learner("infopro:softmax+man++", k=3, split=STEM_SPLIT, seed=5)
    engine = _engine(first)
    for _ in range(2):
        engine.train_step(x, y)
    saved = copy.deepcopy((first.state_dict(), [o.state_dict() for o in engine.optimizers]))
    resumed = make_learner("infopro:softmax+man++", k=3, split=STEM_SPLIT, seed=99)
    resumed.load_state_dict(saved[0])
    assert_resumes_exactly(_engine(resumed), saved[1], full, x, y)
