"""Any traceable nn.Module as a chain of units: torch.fx finds where the forward pass can be cut.

`torch.fx.symbolic_trace` records the forward pass as a list of operations (torch.nn's own layers are
single operations). A position between two operations is a *boundary* when exactly one tensor crosses it, so
that a stage can hand one tensor to the next: a skip connection that jumps over a position makes it no
boundary. A boundary is also never placed inside the span of a module whose parameters are used on both sides
of it (weights used twice stay in one stage). A *unit* is a stretch of operations that starts with parameters,
followed by the parameter-free ones (activations, pooling, flatten) up to the next boundary: `conv1`, `bn1`
(with its ReLU and max-pool), `layer1.0`, ..., `fc` (with the average pool and flatten before it merged into
the last block) for a torchvision ResNet.

Each unit is a `torch.fx.GraphModule` that shares the model's own submodules under their own qualified names,
so training the units trains the model, and a unit's state_dict keys are the model's.

Cuts given by name (`layer2.1`) begin a stage at that module, as pipeline split points do. A name whose first
operation is not a unit's first one is refused with the reason (the tensors that cross there) and the
nearest names that work. Several tensors are never carried across a cut.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import fx, nn

from ..errors import ConfigError
from .base import Backbone

_TORCH_DIR = str(Path(torch.__file__).parent)
_COMPUTE = ("call_module", "call_function", "call_method")


def trace_graph(model: nn.Module) -> fx.Graph:
    """`model`'s forward pass as a torch.fx graph, or a ConfigError naming the call that cannot be traced."""
    try:
        return fx.Tracer().trace(model)
    except Exception as e:  # noqa: BLE001  (any failure while tracing is the model's, reported with its line)
        raise ConfigError(f"cannot trace {type(model).__name__} with torch.fx: {_failing_call(e)}") from e


def _failing_call(error: Exception) -> str:
    """The error and the last line of the model's own code it came from (frames inside torch skipped)."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(_TORCH_DIR)]
    where = ""
    if frames:
        f = frames[-1]
        where = f" at {Path(f.filename).name}:{f.lineno} in {f.name}(): `{(f.line or '').strip()}`"
    return (
        f"{message}{where}; make the forward pass independent of tensor values there "
        "(or give an nn.Sequential, or a module whose `units` ModuleList runs in order)"
    )


@dataclass(frozen=True)
class _Chain:
    """The traced operations in order, and what crosses each position between them."""

    graph: fx.Graph
    ops: list[fx.Node]  # the compute nodes in execution order
    crossing: list[list[fx.Node]]  # crossing[p]: the values defined before ops[p] and used from ops[p] on
    tied: list[tuple[int, int]]  # (first, last) op index of every parameter used in several places

    @property
    def input(self) -> fx.Node:
        return next(n for n in self.graph.nodes if n.op == "placeholder" and n.users)

    @property
    def result(self) -> fx.Node:
        out = next(n for n in self.graph.nodes if n.op == "output").args[0]
        assert isinstance(out, fx.Node)
        return out


def _chain(model: nn.Module, graph: fx.Graph) -> _Chain:
    name = type(model).__name__
    inputs = [n for n in graph.nodes if n.op == "placeholder" and n.users]
    if len(inputs) != 1:
        raise ConfigError(
            f"{name}.forward uses {len(inputs)} inputs ({', '.join(n.name for n in inputs)}); a split model takes "
            "one tensor: wrap it in a module whose forward(x) fills in the others"
        )
    output = next(n for n in graph.nodes if n.op == "output")
    if not isinstance(output.args[0], fx.Node):
        raise ConfigError(f"{name}.forward returns {type(output.args[0]).__name__}; it must return the logits tensor")
    ops = [n for n in graph.nodes if n.op in _COMPUTE]
    index = {n: i for i, n in enumerate(ops)} | {output: len(ops)}
    last_use = {n: max(index[u] for u in n.users) for n in [*inputs, *ops] if n.users}
    crossing = [
        [v for v, last in last_use.items() if (v.op == "placeholder" or index[v] < p) and last >= p]
        for p in range(len(ops))
    ]
    tied = []
    for span in _parameter_uses(model, graph, index).values():
        if len(span) > 1:
            tied.append((min(span), max(span)))
    return _Chain(graph, ops, crossing, tied)


def _parameter_uses(model: nn.Module, graph: fx.Graph, index: dict[fx.Node, int]) -> dict[int, set[int]]:
    """For every parameter of `model`: the op indices that use it (a layer's call, or a read of the tensor)."""
    uses: dict[int, set[int]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            params = list(model.get_submodule(node.target).parameters())
            positions = {index[node]}
        elif node.op == "get_attr":
            attr = model
            for part in node.target.split("."):
                attr = getattr(attr, part)
            params = list(attr.parameters()) if isinstance(attr, nn.Module) else [attr]
            positions = {index[u] for u in node.users}
        else:
            continue
        for p in params:
            if isinstance(p, nn.Parameter):
                uses.setdefault(id(p), set()).update(positions)
    return uses


def _has_parameters(model: nn.Module, chain: _Chain, start: int, end: int) -> bool:
    for node in chain.ops[start:end]:
        if node.op == "call_module" and any(True for _ in model.get_submodule(node.target).parameters()):
            return True
        if any(a.op == "get_attr" for a in node.all_input_nodes):
            return True
    return False


def _unit_starts(model: nn.Module, chain: _Chain) -> list[int]:
    """The op indices where units begin: boundaries whose following stretch has parameters (0 always)."""
    boundaries = [
        p
        for p in range(1, len(chain.ops))
        if len(chain.crossing[p]) == 1 and not any(a < p <= b for a, b in chain.tied)
    ]
    edges = [0, *boundaries, len(chain.ops)]
    starts = [0]
    for p, end in zip(edges[1:-1], edges[2:], strict=True):
        if _has_parameters(model, chain, p, end):
            starts.append(p)
    if len(starts) > 1 and not _has_parameters(model, chain, 0, starts[1]):
        del starts[1]  # leading parameter-free operations join the first unit that has parameters
    return starts


def _module_spans(chain: _Chain) -> dict[str, tuple[int, int]]:
    """Every module the forward pass enters, by qualified name: (first, last) op index inside it."""
    spans: dict[str, tuple[int, int]] = {}
    for i, node in enumerate(chain.ops):
        for qualname in node.meta.get("nn_module_stack", {}):
            first, _ = spans.get(qualname, (i, i))
            spans[qualname] = (first, i)
    return spans


def _unit_graph(chain: _Chain, start: int, end: int) -> fx.Graph:
    """Ops [start, end) as a graph of one input (the value crossing into `start`) and one output."""
    graph = fx.Graph()
    inbound = chain.crossing[start][0] if start else chain.input
    env: dict[fx.Node, fx.Node] = {inbound: graph.placeholder("x")}

    def arg(node: fx.Node) -> fx.Node:
        if node not in env:  # a parameter or buffer read: read again in every unit that needs it
            env[node] = graph.node_copy(node)
        return env[node]

    for node in chain.ops[start:end]:
        env[node] = graph.node_copy(node, arg)
    outbound = chain.crossing[end][0] if end < len(chain.ops) else chain.result
    graph.output(env[outbound])
    return graph


class TracedBackbone(Backbone):
    """The units of a traced model; knows which module names a stage may begin at, and why others are refused."""

    def __init__(self, model: nn.Module, chain: _Chain, starts: list[int]) -> None:
        spans = _module_spans(chain)
        ends = [*starts[1:], len(chain.ops)]
        names = [_unit_name(chain, spans, a, b) for a, b in zip(starts, ends, strict=True)]
        units = [
            fx.GraphModule(model, _unit_graph(chain, a, b), class_name=f"Unit_{i}")
            for i, (a, b) in enumerate(zip(starts, ends, strict=True))
        ]
        # GraphModule keeps each submodule's qualified name, so a unit's keys are already the model's.
        super().__init__(units, names, source=model, unit_prefixes=[""] * len(units))
        self._chain = chain
        self._starts = starts
        self._spans = spans

    def unit_starting_at(self, name: str) -> int:
        model = type(self.source).__name__
        if name not in self._spans:
            raise ConfigError(
                f"{model} runs no module named '{name}'; stages can begin at {', '.join(self.unit_names[1:-1])}"
            )
        first = self._spans[name][0]
        if first in self._starts:
            return self._starts.index(first)
        crossing = self._chain.crossing[first]
        if len(crossing) > 1:
            reason = (
                f"{len(crossing)} tensors cross into '{name}' ({', '.join(_describe(v) for v in crossing)}): "
                "a connection skips over that point, and a cut hands on one tensor"
            )
        elif any(a < first <= b for a, b in self._chain.tied):
            reason = f"'{name}' runs between two uses of the same weights, which stay in one stage"
        else:
            reason = f"'{name}' has no parameters and runs inside unit '{self.unit_names[self._unit_of(first)]}'"
        raise ConfigError(f"cannot begin a stage at '{name}': {reason}; the nearest cuts are {self._nearest(first)}")

    def _unit_of(self, op: int) -> int:
        return max(i for i, s in enumerate(self._starts) if s <= op)

    def _nearest(self, op: int) -> str:
        """The valid cut names around op index `op`: the unit it runs in and the next one."""
        u = self._unit_of(op)
        candidates = [i for i in (u, u + 1) if 0 < i < len(self._starts) - 1]
        if not candidates:
            candidates = [1] if len(self._starts) > 2 else []
        return " or ".join(f"'{self.unit_names[i]}'" for i in candidates) or "none (the model has too few units)"


def _unit_name(chain: _Chain, spans: dict[str, tuple[int, int]], start: int, end: int) -> str:
    """The outermost module that begins the unit and lies inside it, else its first operation's name."""
    for qualname in chain.ops[start].meta.get("nn_module_stack", {}):
        first, last = spans[qualname]
        if first == start and last < end:
            return qualname
    return chain.ops[start].name


def _describe(value: fx.Node) -> str:
    if value.op == "placeholder":
        return f"the input '{value.name}'"
    stack = list(value.meta.get("nn_module_stack", {}))
    return f"'{value.name}' from {stack[-1]}" if stack else f"'{value.name}'"


def trace_backbone(model: nn.Module) -> TracedBackbone:
    """`model` as a chain of units found by torch.fx; see the module docstring for where it is cut."""
    chain = _chain(model, trace_graph(model))
    return TracedBackbone(model, chain, _unit_starts(model, chain))
