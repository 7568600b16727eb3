"""MLAAN: the cascade window, loss weights, leap chains (tables, rule, checks), EMA twins, BN statistics, options."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpers import assert_resumes_exactly, make_learner, random_batch
from locallearn.engine.local import LocalEngine
from locallearn.errors import ConfigError
from locallearn.losses import cross_entropy
from locallearn.methods import build_learner
from locallearn.methods import mlaan as mlaan_module
from locallearn.methods.mlaan import LeapChain, leap_units
from locallearn.models import as_backbone, build_backbone
from locallearn.split import split_model, split_tables

FOUR = "units:0,1,2"  # resnet8: stem | layer1.0 | layer2.0 | layer3.0 + head


def _engine(learner, lr: float = 0.05) -> LocalEngine:
    opts = [
        torch.optim.SGD(learner.stage_parameters(k), lr=lr, momentum=0.9, weight_decay=1e-4)
        for k in range(learner.num_stages)
    ]
    return LocalEngine(learner, opts)


def _reached(modules) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for m in modules for p in m.parameters())


def _chains(learner) -> dict[int, LeapChain]:
    return {k: owned["leap"] for k, owned in enumerate(learner.owned) if "leap" in owned}


# ------------------------------------------------------------------------------------------ cascade window


@pytest.mark.parametrize("window", [2, 3])
@pytest.mark.parametrize("no_early_loss", [False, True])
def test_stage_loss_reaches_exactly_the_cascade_window(window, no_early_loss):
    learner = make_learner(
        "greedy+mlaan", k=4, split=FOUR, mlaan_window=window, legacy_mlaan_no_early_loss=no_early_loss
    )
    assert learner.window == window
    batch = learner.make_batch(*random_batch())
    carry = learner.initial_carry(batch)
    n = learner.num_stages
    for k in range(n):
        learner.zero_grad(set_to_none=True)
        result = learner.train_stage(k, carry, batch)
        result.loss.backward()
        backbone = [_reached([learner.net.stages[j]]) for j in range(n)]
        owned = [_reached([learner.owned[j]]) for j in range(n)]
        if k >= window - 1:
            assert backbone == [k - window < j <= k for j in range(n)], f"stage {k}"
        elif no_early_loss:
            assert not any(backbone), f"stage {k}"
        else:
            assert backbone == [j == k for j in range(n)], f"stage {k}"
        # Only stage k's own aux net and leap chain learn from its loss; the cascade uses no earlier aux net.
        assert owned == [j == k and k < n - 1 and not (no_early_loss and k < window - 1) for j in range(n)]
        carry = {name: t.detach() for name, t in result.out.items()}


@pytest.mark.parametrize("window", [2, 3])
@pytest.mark.parametrize(("wx", "wy"), [(None, None), (0.25, 0.5)])
def test_losses_match_a_hand_computation(window, wx, wy):
    weights = {} if wx is None else {"mlaan_wx": wx, "mlaan_wy": wy}
    learner = make_learner("greedy+mlaan", k=4, split=FOUR, mlaan_window=window, **weights)
    wx, wy = (0.001, 0.999) if wx is None else (wx, wy)
    x, y = random_batch()
    batch = learner.make_batch(x, y)
    stages = learner.net.stages
    inputs = [x]  # inputs[j]: the input of stage j
    for stage in stages[:-1]:
        inputs.append(stage(inputs[-1]))
    carry = learner.initial_carry(batch)
    for k in range(learner.num_stages):
        result = learner.train_stage(k, carry, batch)
        carry = {name: t.detach() for name, t in result.out.items()}
        h = stages[k](inputs[k])
        if k == learner.num_stages - 1:
            z = inputs[k - window + 1]
            for stage in stages[k - window + 1 : k + 1]:
                z = stage(z)
            expected = cross_entropy(z, y)  # the released CIFAR rule: CE of the cascade alone
        else:
            ce_x = cross_entropy(learner.owned[k]["aux"].head(h), y)
            if k < window - 1:
                expected = wx * ce_x
            else:
                z = inputs[k - window + 1]
                for stage in stages[k - window + 1 : k + 1]:
                    z = stage(z)
                leap = learner.owned[k]["leap"]
                z = leap.blocks[0](z) + leap.twin(z)
                for block in leap.blocks[1:]:
                    z = block(z)
                expected = wx * ce_x + wy * cross_entropy(leap.aux.head(z), y)
        torch.testing.assert_close(result.loss, expected, rtol=1e-5, atol=1e-7, msg=f"stage {k}")


def test_final_both_adds_the_own_stream_and_scales_the_cascade():
    grads = {}
    for both in (False, True):
        learner = make_learner("greedy+mlaan", k=4, split=FOUR, mlaan_final_both=both, seed=3)
        batch = learner.make_batch(*random_batch())
        carry = learner.initial_carry(batch)
        for k in range(learner.num_stages):
            learner.zero_grad(set_to_none=True)
            result = learner.train_stage(k, carry, batch)
            carry = {name: t.detach() for name, t in result.out.items()}
        result.loss.backward()  # the last stage's loss only
        grads[both] = [[p.grad.clone() for p in learner.net.stages[j].parameters()] for j in (2, 3)]
    # Both streams compute the same logits, so the last stage sees (w_x + w_y) = 1 times the same gradient,
    # while the stage before it, reached by the cascade only, sees w_y times it.
    for plain, both in zip(grads[False][1], grads[True][1], strict=True):
        torch.testing.assert_close(both, plain, rtol=1e-4, atol=1e-7)
    for plain, both in zip(grads[False][0], grads[True][0], strict=True):
        torch.testing.assert_close(both, 0.999 * plain, rtol=1e-4, atol=1e-7)


def test_cascades_leave_the_running_statistics_to_the_stages_own_forward():
    x, y = random_batch(16)
    mlaan = make_learner("greedy+mlaan", k=4, split=FOUR, mlaan_window=3, seed=2)
    plain = make_learner("greedy", k=4, split=FOUR, seed=2)  # the same backbone init
    _engine(mlaan).train_step(x, y)
    _engine(plain).train_step(x, y)
    norms = [m for m in mlaan.net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.num_batches_tracked.item() == 1 and m.track_running_stats for m in norms)
    # Stage 0 ran on the same images in both: one running-statistics update each, the cascades added none.
    stage0 = zip(mlaan.net.stages[0].buffers(), plain.net.stages[0].buffers(), strict=True)
    for a, b in stage0:
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_legacy_bn_updates_count_every_recomputation_but_the_stem():
    learner = make_learner("greedy+mlaan", k=4, split=FOUR, mlaan_window=2, legacy_mlaan_bn_updates=True)
    _engine(learner).train_step(*random_batch(16))
    # stem alone: its own forward; layer1.0, layer2.0: own + as the last and as the first stage of a cascade;
    # layer3.0: own + its cascade.
    expected = {0: 1, 1: 3, 2: 3, 3: 2}
    for k, stage in enumerate(learner.net.stages):
        counts = {m.num_batches_tracked.item() for m in stage.modules() if isinstance(m, nn.BatchNorm2d)}
        assert counts == {expected[k]}, k


# ------------------------------------------------------------------------------------------ leap chains

TABLES = [("resnet32", 8), ("resnet32", 15), ("resnet110", 32), ("resnet110", 54), ("resnet34", 16), ("resnet101", 33)]


def _stem_merged(arch: str, k: int, split="stem-merged"):
    torch.manual_seed(0)
    return split_model(build_backbone(arch, 10), k, split, arch=arch, input_shape=(3, 32, 32))


@pytest.mark.parametrize(("arch", "k"), TABLES)
def test_every_shipped_leap_table_chains_on_its_backbone(arch, k):
    net = _stem_merged(arch, k)
    units = leap_units(net)  # raises if a block does not take the previous output's shape
    table = split_tables()["mlaan_leaps"][arch][k]
    assert [[list(net.coords[u]) for u in chain] for chain in units] == table
    assert len(units) == k - 1


def test_without_a_table_the_chain_is_the_first_block_of_every_deeper_layer_then_the_last():
    net = _stem_merged("resnet32", 4, "table")  # InfoPro K=4: ends at [1,2], [2,1], [3,0]
    assert [[net.coords[u] for u in chain] for chain in leap_units(net)] == [
        [(2, 0), (3, 0), (3, 4)],
        [(3, 0), (3, 4)],
        [(3, 4)],
    ]
    # InfoPro's K=8 boundaries are MLAAN's stem-merged K=8 modules: the table applies.
    assert leap_units(_stem_merged("resnet32", 8, "table")) == leap_units(_stem_merged("resnet32", 8))


def test_only_the_chains_in_use_are_built():
    for window, first in ((2, 1), (3, 2)):
        learner = make_learner("greedy+mlaan", k=15, arch="resnet32", split="stem-merged", mlaan_window=window)
        table = split_tables()["mlaan_leaps"]["resnet32"][15]
        chains = _chains(learner)
        assert sorted(chains) == list(range(first, 14))  # stages with a cascade, the last stage excluded
        assert sum(isinstance(m, LeapChain) for m in learner.modules()) == len(chains)
        for k, chain in chains.items():
            assert len(chain.blocks) == len(table[k])
            # One twin per chain, beside the first block only: its parameters held as buffers.
            assert list(chain.twin.parameters()) == []
            assert {n for n, _ in chain.blocks[0].named_parameters()} <= set(dict(chain.twin.named_buffers()))
            assert chain.aux.head.fcs[0].in_features == 64  # greedy's GAP + linear on the chain's 64 channels
        copies = sum(p.numel() for c in chains.values() for p in c.blocks.parameters())
        sources = sum(p.numel() for k in chains for c in table[k] for p in _block(learner, c).parameters())
        assert copies == sources


def _block(learner, coord) -> nn.Module:
    u = learner.net.coords.index(tuple(coord))
    return mlaan_module.backbone_unit(learner.net, u)


def test_a_leap_that_does_not_fit_is_named(monkeypatch):
    tables = copy.deepcopy(split_tables())
    tables["mlaan_leaps"]["resnet32"][8][3] = [[2, 0], [3, 4]]  # module 3 ends at [2, 1] (32 ch); [2, 0] takes 16
    monkeypatch.setattr(mlaan_module, "split_tables", lambda: tables)
    with pytest.raises(ConfigError, match=r"module 3: block \[2, 0\]"):
        leap_units(_stem_merged("resnet32", 8))


def test_a_backbone_without_coordinates_is_refused():
    units = [nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)]
    units.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)))
    net = split_model(as_backbone(nn.Sequential(*units)), 3, "units:0,1", input_shape=(3, 8, 8))
    with pytest.raises(ConfigError, match="coordinates"):
        build_learner("greedy+mlaan", net, num_classes=10, mean=(0.5,) * 3, std=(0.5,) * 3)


# ------------------------------------------------------------------------------------------ EMA twins


def test_twins_are_buffers_that_get_no_gradient():
    learner = make_learner("greedy+mlaan", k=4, split=FOUR)
    twins = [chain.twin for chain in _chains(learner).values()]
    assert twins and all(list(t.parameters()) == [] for t in twins)
    assert any(key.startswith("owned.1.leap.twin.") for key in learner.state_dict())
    trainable = {id(p) for k in range(learner.num_stages) for p in learner.stage_parameters(k)}
    assert all(id(b) not in trainable for t in twins for b in t.buffers())
    _engine(learner).train_step(*random_batch())
    assert all(b.grad is None for t in twins for b in t.buffers())


def _twin_params(chain: LeapChain, source: nn.Module) -> dict[str, torch.Tensor]:
    return {name: chain.twin.get_buffer(name).clone() for name, _ in source.named_parameters()}


@pytest.mark.parametrize(
    ("m", "last_only", "twice"), [(0.9, False, False), (1.0, False, False), (0.9, True, False), (0.9, False, True)]
)
def test_ema_follows_the_formula(m, last_only, twice):
    learner = make_learner(
        "greedy+mlaan",
        k=4,
        split=FOUR,
        mlaan_window=2,
        ema_momentum=m,
        legacy_mlaan_ema_last_only=last_only,
        legacy_mlaan_last_twin_twice=twice,
    )
    chains = _chains(learner)
    assert sorted(chains) == [1, 2]
    # The rule's chains: stage 1 (ends at layer1.0) -> [layer2.0, layer3.0], stage 2 (layer2.0) -> [layer3.0].
    sources = {1: learner.net.stages[2][0], 2: learner.net.stages[3][0]}
    initial = {k: _twin_params(chains[k], sources[k]) for k in chains}
    engine, batch = _engine(learner), random_batch(16)
    engine.train_step(*batch)  # twins start as copies of their sources: step once so that the two differ
    before = {k: _twin_params(chains[k], sources[k]) for k in chains}
    # The sources (layer2.0 in stage 2, layer3.0 in stage 3) have not stepped when their twins are updated.
    source_before = {k: {n: p.detach().clone() for n, p in sources[k].named_parameters()} for k in chains}
    assert any(not torch.equal(before[2][n], source_before[2][n]) for n in before[2])
    engine.train_step(*batch)
    for k, chain in chains.items():
        moves = m < 1 and (not last_only or k == learner.num_stages - 2)
        mk = m**2 if twice and k == learner.num_stages - 2 else m  # two updates from the same unstepped source
        for name, value in _twin_params(chain, sources[k]).items():
            expected = mk * before[k][name] + (1 - mk) * source_before[k][name] if moves else before[k][name]
            torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7, msg=f"chain {k} {name}")
            if not moves:
                assert torch.equal(value, initial[k][name])
    if m < 1:  # the sources did step afterwards: the twin lags them by one step, as released
        moved = [not torch.equal(p, source_before[2][n]) for n, p in sources[2].named_parameters()]
        assert any(moved)


# ------------------------------------------------------------------------------------------ options, state


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("greedy+mlaan+man", {}, "cannot be combined"),
        ("greedy+man+mlaan", {}, "cannot be combined"),
        ("greedy+mlaan+man++", {}, "cannot be combined"),
        ("greedy+contsup:R1E+mlaan", {}, "cannot be combined"),
        ("greedy+mlaan:3", {}, "takes no argument"),
        ("greedy+mlaan", {"mlaan_window": 1}, "mlaan_window"),
        ("greedy+mlaan", {"mlaan_window": 2.5}, "mlaan_window"),
        ("greedy+mlaan", {"mlaan_window": 4, "k": 3}, "at least 4 stages"),
        ("greedy+mlaan", {"mlaan_wx": -1.0}, "mlaan_wx"),
        ("greedy+mlaan", {"ema_momentum": 1.5}, "ema_momentum"),
    ],
)
def test_bad_mlaan_methods_and_options(method, options, message):
    options = dict(options)
    k = options.pop("k", 4)
    with pytest.raises(ConfigError, match=message):
        make_learner(method, k=k, split=FOUR if k == 4 else None, **options)


def test_state_dict_round_trip_restores_twins_and_resumes_exactly():
    options = dict(mlaan_window=3, mlaan_final_both=True, legacy_mlaan_no_early_loss=True, ema_momentum=0.9)
    x, y = random_batch(16)
    full = make_learner("infopro:softmax+mlaan", k=4, split=FOUR, seed=5, **options)
    engine = _engine(full)
    for _ in range(4):
        engine.train_step(x, y)
    stats = engine.reset_stats()
    assert stats.loss[:2].tolist() == [0.0, 0.0] and bool(torch.isfinite(stats.loss).all())

    first = make_learner("infopro:softmax+mlaan", k=4, split=FOUR, seed=5, **options)
    engine = _engine(first)
    for _ in range(2):
        engine.train_step(x, y)
    saved = copy.deepcopy((first.state_dict(), [o.state_dict() for o in engine.optimizers]))
    assert any(".leap.twin." in key for key in saved[0])
    resumed = make_learner("infopro:softmax+mlaan", k=4, split=FOUR, seed=99, **options)
    resumed.load_state_dict(saved[0])
    twin = _chains(resumed)[2].twin
    for name, value in twin.state_dict().items():
        torch.testing.assert_close(value, saved[0][f"owned.2.leap.twin.{name}"], rtol=0, atol=0)
    assert_resumes_exactly(_engine(resumed), saved[1], full, x, y)


@pytest.mark.parametrize("fresh", [False, True])
def test_chains_start_as_copies_or_as_fresh_draws(fresh):
    learner = make_learner("greedy+mlaan", k=4, split=FOUR, mlaan_window=2, mlaan_fresh_chains=fresh)
    chain, source = _chains(learner)[1], learner.net.stages[2][0]
    same = [torch.equal(a, b) for a, b in zip(chain.blocks[0].parameters(), source.parameters(), strict=True)]
    twin_same = [torch.equal(chain.twin.get_buffer(n), p) for n, p in source.named_parameters()]
    weights = [n.endswith("conv1.weight") for n, _ in source.named_parameters()]
    if fresh:  # convs re-drawn (BN starts at (1, 0) either way)
        assert not any(s for s, w in zip(same, weights, strict=True) if w)
        assert not any(s for s, w in zip(twin_same, weights, strict=True) if w)
    else:
        assert all(same) and all(twin_same)


def test_mlaan_imagenet_head_adds_two_1x1_convs_below_256_channels():
    from locallearn.aux import make_head

    narrow, wide = make_head(64, "mlaan-imagenet", 10), make_head(256, "mlaan-imagenet", 10)
    assert [m.out_channels for m in narrow.modules() if isinstance(m, nn.Conv2d)] == [128, 64]
    assert not any(isinstance(m, nn.Conv2d) for m in wide.modules())
    assert narrow(torch.randn(2, 64, 7, 7)).shape == wide(torch.randn(2, 256, 4, 4)).shape == (2, 10)


def test_zero_init_residual_is_an_imagenet_resnet_option():
    net = build_backbone("resnet18", 10, zero_init_residual=True)
    assert all(not u.last_bn.weight.any() for u in net.units[1:-1])
    with pytest.raises(ConfigError, match="zero_init_residual is an option of the ImageNet ResNets"):
        build_backbone("resnet32", 10, zero_init_residual=True)
