"""The pipeline's single-process parts: stage assignment, message layouts, the traffic plan, the replay buffer,
failure reports and option checks. The multi-process behaviour is in tests/distributed (marked `dist`)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from helpers import make_learner
from locallearn.config import PipelineOptions, build_config
from locallearn.engine.pipeline.comm import LinkError, peer_failure
from locallearn.engine.pipeline.groups import launch
from locallearn.engine.pipeline.monitor import Monitor
from locallearn.engine.pipeline.plan import PipelinePlan, stage_state, trace_stages
from locallearn.engine.pipeline.replay import ReplayBuffer
from locallearn.engine.pipeline.topology import Topology, assign_stages, make_topology
from locallearn.engine.pipeline.wire import Header, Kind, Layout, TensorSpec
from locallearn.errors import ConfigError
from locallearn.methods import Carry, LocalLearner, Mechanism, MethodOptions

CPU = torch.device("cpu")


class Window(Mechanism):
    """Declares a cascade window and nothing else: the plan only reads `learner.window`."""

    name = "window"

    def __init__(self, options, window: int) -> None:
        super().__init__(options)
        self.window = window


def _with_window(k: int, window: int) -> LocalLearner:
    learner = make_learner("greedy", k=k)
    learner.mechanisms.append(Window(MethodOptions(), window))
    return learner


def _plan(learner: LocalLearner, groups: tuple[tuple[int, int], ...], replicas: int = 1) -> PipelinePlan:
    topo = Topology(rank=0, world=len(groups) * replicas, replicas=replicas, groups=groups)
    return PipelinePlan(learner, topo, trace_stages(learner, CPU, "none"))


# ------------------------------------------------------------------------------------------------ topology
def test_stage_groups_are_contiguous_and_minimise_the_largest_group():
    assert assign_stages([4, 1, 1, 1, 1], 2) == ((0, 0), (1, 4))
    assert assign_stages([1, 1, 1, 1], 4) == ((0, 0), (1, 1), (2, 2), (3, 3))
    assert assign_stages([3, 3, 1, 1, 1], 3) == ((0, 0), (1, 1), (2, 4))


def test_more_positions_than_stages_is_refused():
    with pytest.raises(ConfigError, match="pipeline positions but only K=2"):
        assign_stages([1, 1], 3)
    with pytest.raises(ConfigError, match="not a multiple"):
        make_topology(0, 3, 2, [1, 1])


def test_ranks_are_laid_out_replica_major():
    topo = make_topology(rank=3, world=4, replicas=2, flops=[1, 1])
    assert (topo.position, topo.replica, list(topo.stages)) == (1, 1, [1])
    assert topo.rank_of(0) == 2 and topo.rank_of(0, replica=0) == 0
    assert topo.replica_ranks(1) == [1, 3]
    assert topo.position_of(1) == 1


# ------------------------------------------------------------------------------------------------ wire
def test_a_message_round_trips_at_any_batch_up_to_its_capacity():
    specs = (
        TensorSpec("h", (2, 3), torch.float32),
        TensorSpec("y", (), torch.int64),
        TensorSpec("w", (5,), torch.float16, batched=False),
    )
    layout = Layout(specs, capacity=4)
    h, y, w = torch.randn(3, 2, 3), torch.arange(3), torch.randn(5).half()
    buf = layout.pack([h, y, w], Header(Kind.TRAIN, 7, 3))
    assert buf.numel() == layout.nbytes and buf.dtype == torch.uint8
    header = layout.header(buf)
    assert header == (Kind.TRAIN, 7, 3)
    for got, want in zip(layout.unpack(buf, header), (h, y, w), strict=True):
        assert torch.equal(got, want)
    assert layout.header(layout.signal(Header(Kind.END, 9, 0))) == (Kind.END, 9, 0)


def test_a_message_refuses_a_wrong_shape_or_a_batch_over_capacity():
    layout = Layout((TensorSpec("h", (2,), torch.float32),), capacity=2)
    with pytest.raises(ValueError, match="capacity"):
        layout.pack([torch.zeros(3, 2)], Header(Kind.TRAIN, 0, 3))
    with pytest.raises(ValueError, match="expected"):
        layout.pack([torch.zeros(2, 3)], Header(Kind.TRAIN, 0, 2))


# ------------------------------------------------------------------------------------------------ plan
def test_trace_finds_each_boundary_carry_and_leaves_the_learner_and_rngs_alone():
    learner = make_learner("infopro+contsup:R1E", k=3)
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    rng = torch.get_rng_state()
    trace = trace_stages(learner, CPU, "none")
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in learner.state_dict().items())
    assert learner.training
    names = [[s.name for s in specs] for specs in trace.carries]
    assert names[0][0] == "h" and "x" in names[0]  # ContSup's E context travels with the activation
    shapes = [specs[0].shape for specs in trace.carries]
    assert shapes == [tuple(learner.net.records[k].out_shape) for k in range(2)]
    assert trace.reads_input[:2] == [True, True] and trace.reads_input[2] is False  # decoders read x01


def test_images_travel_only_as_far_as_a_stage_reads_them():
    greedy = _plan(make_learner("greedy", k=3), ((0, 0), (1, 2)))
    assert not greedy.reads_input(1)
    infopro = _plan(make_learner("infopro", k=3), ((0, 0), (1, 2)))
    assert infopro.reads_input(1)  # stage 1's decoder reconstructs the image
    tail = _plan(make_learner("infopro", k=3), ((0, 1), (2, 2)))
    assert not tail.reads_input(1)  # the last stage has no decoder
    layout = infopro.forward_layout(1, Kind.TRAIN, capacity=8)
    assert [s.name for s in layout.specs] == ["h", "y", "x"]


def test_a_cascade_window_ships_the_states_it_reaches_and_defers_their_steps():
    learner = _with_window(4, window=2)
    plan = _plan(learner, ((0, 1), (2, 3)))
    assert plan.window_stages(1) == [1]  # stage 2's loss reaches stage 1, on position 0
    assert plan.cascade_sends(1) == {2: [1]}  # its gradient is complete after stage 2's backward
    assert plan.deferred(0) == [(1, [1])]  # stage 1 steps once position 1 has sent it back
    train = plan.forward_layout(1, Kind.TRAIN, capacity=8)
    evaluation = plan.forward_layout(1, Kind.EVAL, capacity=8)
    assert len(train.specs) - len(evaluation.specs) == len(stage_state(learner, 1))


def test_a_window_of_three_reaches_over_two_positions():
    plan = _plan(_with_window(4, window=3), ((0, 0), (1, 1), (2, 2), (3, 3)))
    assert plan.window_stages(2) == [0, 1]
    assert plan.cascade_sends(2) == {2: [0, 1]}
    assert plan.deferred(0) == [(0, [1, 2])]
    assert plan.deferred(1) == [(1, [2, 3])]
    assert plan.deferred(3) == [(3, [])]  # no later loss reaches it, but its own backward comes last


def test_only_ema_links_that_cross_positions_travel():
    plan = _plan(make_learner("greedy+man", k=3), ((0, 1), (2, 2)))
    assert [(link.twin_stage, link.source_stage) for link in plan.links] == [(1, 2)]
    assert plan.ema_links(1, 0) == plan.links and plan.ema_links(0, 1) == []
    assert plan.ema_sources(0) == [2]
    assert not plan.ema_after_step


def test_twins_follow_steps_only_for_a_mechanism_that_updates_them_after_steps():
    man = _plan(make_learner("greedy+man", k=3, ema_timing="after_step"), ((0, 1), (2, 2)))
    assert man.ema_after_step
    # MLAAN updates its twins after the backward whatever ema_timing says.
    mlaan = _plan(make_learner("greedy+mlaan", k=3, ema_timing="after_step"), ((0, 1), (2, 2)))
    assert mlaan.links and not mlaan.ema_after_step


def test_async_mode_is_refused_where_the_ranks_must_keep_in_step():
    isolated = _plan(make_learner("greedy", k=2), ((0, 0), (1, 1)))
    isolated.check(PipelineOptions(mode="async"))
    refused = [
        _plan(_with_window(3, window=2), ((0, 0), (1, 2))),
        _plan(make_learner("greedy+man", k=2), ((0, 0), (1, 1))),
        _plan(make_learner("greedy", k=2), ((0, 0), (1, 1)), replicas=2),
    ]
    for plan in refused:
        with pytest.raises(ConfigError, match="async"):
            plan.check(PipelineOptions(mode="async"))
        plan.check(PipelineOptions(mode="sync"))


class ScalarCarry(Mechanism):
    name = "scalar-carry"

    def carry_out(self, learner, k: int, h_in: torch.Tensor, carry: Carry) -> Carry:
        return {"count": torch.zeros(())}


def test_a_carry_without_a_batch_dimension_is_refused():
    learner = make_learner("greedy", k=2)
    learner.mechanisms.append(ScalarCarry(MethodOptions()))
    with pytest.raises(ConfigError, match="batch-major"):
        trace_stages(learner, CPU, "none")


# ------------------------------------------------------------------------------------------------ replay
def test_replay_takes_the_least_used_then_freshest_carry_and_caps_reuse():
    buffer: ReplayBuffer[str] = ReplayBuffer(size=2, max_reuse=2)
    assert buffer.take() is None
    buffer.add("a")
    buffer.add("b")
    assert [buffer.take() for _ in range(5)] == ["b", "a", "b", "a", None]
    buffer.add("c")  # evicts "a"
    assert len(buffer) == 2 and buffer.arrivals == 3
    assert [buffer.take(), buffer.take(), buffer.take()] == ["c", "c", None]


# ------------------------------------------------------------------------------------------------ failures
def test_the_first_reported_error_wins_and_the_others_acknowledge_it():
    store = dist.HashStore()
    first, second = Monitor(store, 0, 2, interval=0.05), Monitor(store, 1, 2, interval=0.05)
    assert second.report("ValueError: boom") == "rank 1: ValueError: boom"
    assert first.report("LinkError: lost rank 1") == "rank 1: ValueError: boom"
    assert store.check(["ack/0"])
    second.linger(grace=5)  # returns at once: rank 0 has acknowledged


def test_linger_is_bounded_when_nobody_acknowledges():
    monitor = Monitor(dist.HashStore(), 0, 3, interval=0.05)
    monitor.report("RuntimeError: x")
    monitor.linger(grace=0.2)  # does not wait for ranks 1 and 2 forever


def test_a_transport_failure_becomes_an_error_that_names_the_peer():
    expected = r"communication with rank 3 failed \(Connection reset by peer\)"
    with pytest.raises(LinkError, match=expected), peer_failure("rank 3"):
        raise RuntimeError("Connection reset by peer\nlong gloo detail")
    with pytest.raises(ValueError), peer_failure("rank 3"):  # not a transport failure: left alone
        raise ValueError("a bug")


# ------------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize(
    "override", ["pipeline.depth=0", "pipeline.mode=eager", "pipeline.ema_interval=0", "pipeline.backend=mpi"]
)
def test_bad_pipeline_options_are_refused(override):
    with pytest.raises(ConfigError, match="pipeline"):
        build_config(overrides=[override])


def test_launch_outside_torchrun_says_how_to_start(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="torchrun --nproc-per-node"):
        launch(PipelineOptions(), "cpu")
