"""ContSup: the context queue, where context gradients go, inference cost, R0 == the plain objective, modes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import make_learner, random_batch
from locallearn.engine.local import LocalEngine
from locallearn.errors import ConfigError

# resnet8 at K=4 (every unit but the head its own stage): stem | layer1.0 | layer2.0 | layer3.0 + head, so the
# inputs of stages 1, 2, 3 are 16x32x32, 16x32x32 and 32x16x16.
K = 4


def _engine(learner) -> LocalEngine:
    return LocalEngine(
        learner,
        [torch.optim.SGD(learner.stage_parameters(k), lr=0.05, momentum=0.9) for k in range(learner.num_stages)],
    )


def _nodes(learner) -> dict[int, nn.Module]:
    return {k: owned["context"] for k, owned in enumerate(learner.owned) if "context" in owned}


def _context_params(learner) -> int:
    return sum(p.numel() for node in _nodes(learner).values() for p in node.parameters())


@pytest.mark.parametrize("objective", ["greedy", "infopro:softmax"])
def test_r0_is_the_plain_objective(objective):
    options = dict(ixx_1=1.0, ixy_1=1.0, ixx_2=1.0, ixy_2=1.0)
    plain = make_learner(objective, k=3, seed=3, **options)
    r0 = make_learner(f"{objective}+contsup:R0", k=3, seed=3, **options)
    assert not _nodes(r0)
    x, y = random_batch(16)
    engines = _engine(plain), _engine(r0)
    for _ in range(3):
        for engine in engines:
            engine.train_step(x, y)
        losses = [engine.reset_stats().loss for engine in engines]
        torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=0)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(r0.state_dict()[key], value, rtol=0, atol=0, msg=key)


class Probe(nn.Module):
    """A known context map: records what it is given and returns the constant `value` in the boundary's shape."""

    def __init__(self, value: float, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.value, self.shape = value, shape
        self.seen: list[torch.Tensor] = []

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        self.seen.append(t.detach().clone())
        return t.new_full((t.shape[0], *self.shape), self.value)


E_VALUE, LAG_VALUE = 1.0, {0: 2.0, 1: 4.0}  # powers of two: any sum of them names its terms

# mode -> stage k -> (Enc applied, {lag j: the stage whose input ResEnc_{k,j} reads}); stage 0's input is x.
QUEUE = {
    "R1": {1: (False, {0: 0}), 2: (False, {0: 1}), 3: (False, {0: 2})},
    "E": {1: (True, {}), 2: (True, {}), 3: (True, {})},
    "R1E": {1: (True, {}), 2: (True, {0: 1}), 3: (True, {0: 2})},
    "R2": {1: (False, {0: 0}), 2: (False, {0: 1, 1: 0}), 3: (False, {0: 2, 1: 1})},
    "R2E": {1: (True, {}), 2: (True, {0: 1}), 3: (True, {0: 2, 1: 1})},
}


def _probed(mode: str):
    learner = make_learner(f"greedy+contsup:{mode}", k=K)
    for k, node in _nodes(learner).items():
        shape = tuple(learner.net.records[k].in_shape)
        if node.encoder is not None:
            node.encoder = Probe(E_VALUE, shape)
        for j in list(node.res):
            node.res[j] = Probe(LAG_VALUE[int(j)], shape)
    return learner


def _record(learner):
    """Hooks noting each stage's input and output and what each aux net sees."""
    ins, outs, aux_in = {}, {}, {}
    for k, stage in enumerate(learner.net.stages):
        stage.register_forward_pre_hook(lambda _m, a, k=k: ins.__setitem__(k, a[0].detach().clone()))
        stage.register_forward_hook(lambda _m, _a, o, k=k: outs.__setitem__(k, o.detach().clone()))
        if "aux" in learner.owned[k]:
            learner.owned[k]["aux"].register_forward_pre_hook(
                lambda _m, a, k=k: aux_in.__setitem__(k, a[0].detach().clone())
            )
    return ins, outs, aux_in


def _check_queue(learner, mode: str, ins, outs, x) -> None:
    nodes = _nodes(learner)
    assert set(nodes) == set(QUEUE[mode])
    for k, (enc, lags) in QUEUE[mode].items():
        node = nodes[k]
        assert (node.encoder is not None) == enc, f"stage {k}"
        assert {int(j) for j in node.res} == set(lags), f"stage {k}"
        # stage k's input = h_{k-1} + exactly the expected terms
        expected = E_VALUE * enc + sum(LAG_VALUE[j] for j in lags)
        torch.testing.assert_close(ins[k] - outs[k - 1], torch.full_like(ins[k], expected))
        if enc:
            torch.testing.assert_close(node.encoder.seen[-1], x, rtol=0, atol=0)
        for j, source in lags.items():
            torch.testing.assert_close(node.res[str(j)].seen[-1], ins[source], rtol=0, atol=0, msg=f"{k}, lag {j}")


@pytest.mark.parametrize("mode", list(QUEUE))
def test_queue_feeds_each_stage_the_right_contexts_in_training_and_inference(mode):
    learner = _probed(mode)
    ins, outs, aux_in = _record(learner)
    x, y = random_batch(4)
    _engine(learner).train_step(x, y)
    _check_queue(learner, mode, ins, outs, x)
    for k in range(K - 1):  # the local loss sees h_k, not the context-augmented input of stage k+1
        torch.testing.assert_close(aux_in[k], outs[k], rtol=0, atol=0)

    learner.eval()
    x_eval, _ = random_batch(4, seed=7)
    logits = learner(x_eval)
    _check_queue(learner, mode, ins, outs, x_eval)
    torch.testing.assert_close(logits, outs[K - 1], rtol=0, atol=0)


def test_eval_forward_is_the_hand_composed_network():
    learner = make_learner("greedy+contsup:R1E", k=K)
    _engine(learner).train_step(*random_batch(8))  # move BN statistics away from their initial values
    learner.eval()
    x, _ = random_batch(4, seed=5)
    stages, nodes = learner.net.stages, _nodes(learner)
    with torch.no_grad():
        in1 = stages[0](x) + nodes[1].encoder(x)
        in2 = stages[1](in1) + nodes[2].encoder(x) + nodes[2].res["0"](in1)
        in3 = stages[2](in2) + nodes[3].encoder(x) + nodes[3].res["0"](in2)
        expected = stages[3](in3)
        out = learner(x)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        assert not torch.allclose(out, learner.net(x))  # the context nodes change the inference network
        torch.testing.assert_close(learner.predict_stages(x)[-1], out, rtol=0, atol=0)


def test_context_nodes_are_trained_by_the_next_stage_only_and_contexts_are_detached():
    learner = make_learner("greedy+contsup:R1E", k=K)
    engine = _engine(learner)
    x, y = random_batch(8)
    batch = learner.make_batch(x, y)
    carry = learner.initial_carry(batch)
    nodes = _nodes(learner)
    for k in range(K):
        learner.zero_grad(set_to_none=True)
        result = engine.backward_stage(k, carry, batch)
        for j, node in nodes.items():
            grads = [p.grad for p in node.parameters()]
            if j == k:
                assert all(g is not None and g.any() for g in grads), f"node {j} untrained by stage {k}'s loss"
            else:
                assert all(g is None for g in grads), f"node {j} reached by stage {k}'s loss"
        for j in range(k):  # nothing before stage k, backbone or aux, gets gradient from stage k's loss
            assert all(p.grad is None for p in learner.stage_parameters(j)), f"stage {j} from stage {k}"
        if k == 1:
            assert result.out["ctx0"].requires_grad  # the augmented input still hangs on this stage's graph...
        carry = engine.close_stage(k, result, y)
        assert not any(t.requires_grad for t in carry.values())  # ...until the engine detaches it


def test_inference_parameters_grow_by_exactly_the_context_nodes():
    plain = make_learner("greedy", k=K).inference_parameters()
    e = make_learner("greedy+contsup:E", k=K)
    r1e = make_learner("greedy+contsup:R1E", k=K)
    # Enc(D) = conv3x3(3->12)+b, BN(12), conv3x3(12->D)+b, BN(D): 336 + 24 + 109 D + 2 D. D = 16, 16, 32.
    enc = [360 + 111 * d for d in (16, 16, 32)]
    # ResEnc(src->D) = conv1x1 + b, BN(D): (src + 3) D. R1E: stage 2 reads stage 1's input, stage 3 stage 2's.
    res = [(16 + 3) * 16, (16 + 3) * 32]
    assert e.inference_parameters() - plain == _context_params(e) == sum(enc)
    assert r1e.inference_parameters() - plain == _context_params(r1e) == sum(enc) + sum(res)
    assert make_learner("greedy+contsup:R0", k=K).inference_parameters() == plain


def test_inference_flops_grow_by_exactly_the_context_nodes():
    from locallearn.measure.flops import inference_flops

    x = torch.randn(2, 3, 32, 32)
    plain = inference_flops(make_learner("greedy", k=K), x)
    assert plain == inference_flops(make_learner("e2e", k=1), x) == inference_flops(make_learner("dgl", k=K), x)
    # Enc runs at the image's 32x32: conv3x3 3->12, then 12->D, D = 16, 16, 32. R1E's ResEnc conv1x1 run at their
    # source's 32x32: 16->16 (stage 2) and 16->32 (stage 3). FLOPs = 2 x MACs.
    pixels = 32 * 32
    enc = sum(pixels * (12 * 3 * 9 + d * 12 * 9) for d in (16, 16, 32))
    res = pixels * (16 * 16 + 32 * 16)
    assert inference_flops(make_learner("greedy+contsup:R1E", k=K), x) - plain == 2 * (enc + res)
    assert inference_flops(make_learner("greedy+contsup:R0", k=K), x) == plain


@pytest.mark.parametrize(
    ("mode", "k", "count"),
    # stage k, lag j exists when stage k-1-j >= 0 (>= 1 with E): R2 at K=4: 1 + 2 + 2; R4 at K=8: 1 + 2 + 3 + 4 * 4.
    [("R1", 4, 3), ("R2", 4, 5), ("R4", 4, 6), ("R2E", 4, 3), ("R2", 8, 13), ("R4", 8, 22), ("R4E", 8, 18)],
)
def test_number_of_res_encoders(mode, k, count):
    learner = make_learner(f"greedy+contsup:{mode}", k=k, arch="resnet8" if k == 4 else "resnet32")
    assert sum(len(node.res) for node in _nodes(learner).values()) == count


def test_default_mode_is_r1e_and_modes_are_case_insensitive():
    default = make_learner("greedy+contsup", k=3).mechanisms[0].mode
    assert (default.encoder, default.lags) == (True, 1)
    lower, upper = (make_learner(f"greedy+contsup:{m}", k=3).mechanisms[0].mode for m in ("r2e", "R2E"))
    assert lower == upper


@pytest.mark.parametrize("mode", ["R", "X", "RE", "ER1", "R1F", "R-1", "E1", "R1EE"])
def test_bad_modes_are_named(mode):
    with pytest.raises(ConfigError, match=f"unknown contsup context mode '{mode}'"):
        make_learner(f"greedy+contsup:{mode}", k=3)


@pytest.mark.parametrize(
    "method", ["greedy+contsup:R1E", "infopro:softmax+contsup:E", "dgl+contsup:R2", "infopro+contsup:E+man"]
)
def test_compositions_train_and_evaluate(method):
    learner = make_learner(method, k=K, ixx_1=1.0, ixy_1=1.0, ixx_2=1.0, ixy_2=1.0)
    engine = _engine(learner)
    x, y = random_batch(8)
    engine.train_step(x, y)
    assert torch.isfinite(engine.reset_stats().loss).all()
    learner.eval()
    assert learner(x).shape == (8, 10)


def test_pooling_to_the_boundary_size_is_the_adaptive_pool_and_skips_a_same_size_input():
    from locallearn.methods.contsup import PoolTo

    x = torch.randn(2, 3, 8, 8)
    assert PoolTo((8, 8))(x) is x
    assert torch.equal(PoolTo((4, 4))(x), nn.functional.adaptive_avg_pool2d(x, (4, 4)))
    assert torch.equal(PoolTo((3, 3))(x), nn.functional.adaptive_avg_pool2d(x, (3, 3)))
