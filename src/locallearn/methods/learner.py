"""`LocalLearner`: a split backbone plus everything each stage owns (aux nets, context nodes, EMA twins).

It composes one objective with any number of mechanisms and exposes the per-stage training step that the
engines drive. It knows nothing about devices, ranks or optimizers.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from ..losses import cross_entropy
from ..split import SplitNet
from .base import AuxContext, AuxLoss, Batch, Carry, Mechanism, Objective, StageResult


class LocalLearner(nn.Module):
    """K stages of `net`, each with the modules it owns in `owned[k]` (a ModuleDict)."""

    def __init__(
        self,
        net: SplitNet,
        objective: Objective | None,
        mechanisms: list[Mechanism],
        *,
        num_classes: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        super().__init__()
        self.net = net
        self.objective = objective
        self.mechanisms = list(mechanisms)
        self.num_classes = num_classes
        self.image_shape = tuple(net.records[0].in_shape)
        self.owned = nn.ModuleList([nn.ModuleDict() for _ in range(net.num_stages)])
        self.inference_modules: list[nn.Module] = []  # plain list: the modules are registered in `owned`
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        for mech in self.mechanisms:
            mech.setup(self)
        if self.num_stages > 1 and objective is None:
            raise ValueError("a local objective is required when K > 1")
        for k in range(self.num_stages - 1):
            self.own(k, "aux", self.build_aux(self.aux_context(k, self._aux_shape(k))))

    # ----------------------------------------------------------------------------------------- aux nets
    def aux_context(self, k: int, feature_shape: tuple[int, ...]) -> AuxContext:
        """What stage k's aux net is built from, for a feature of `feature_shape` (C, H, W)."""
        net = self.net
        return AuxContext(
            k=k,
            num_stages=self.num_stages,
            feature_shape=tuple(feature_shape),
            image_shape=self.image_shape,
            num_classes=self.num_classes,
            next_stage_coord=net.coords[net.records[k + 1].first_unit],
            stem_is_module=net.stem_is_module,
            last_coord=net.records[k].last_coord,
            num_blocks=sum(c is not None and tuple(c) != (0, 0) for c in net.coords),
            ratio_by_own_block=any(m.legacy_ratio_by_own_block for m in self.mechanisms),
        )

    def build_aux(self, ctx: AuxContext) -> AuxLoss:
        """The aux net of `ctx` (a mechanism's when one builds it, else the objective's), initialised by the
        backbone's rule: the released code builds its aux nets before its model-wide init loop."""
        aux = next((a for m in self.mechanisms if (a := m.build_aux(self, ctx)) is not None), None)
        if aux is None:
            aux = self.objective.build_aux(ctx)
        self.net.init_weights(aux)
        return aux

    # ----------------------------------------------------------------------------------------- structure
    @property
    def num_stages(self) -> int:
        return self.net.num_stages

    @property
    def window(self) -> int:
        """How many stages one stage's loss reaches (1 = fully gradient-isolated)."""
        return max([m.window for m in self.mechanisms], default=1)

    def own(self, k: int, name: str, module: nn.Module, *, inference: bool = False) -> None:
        """Give stage k a module: its parameters are optimised with stage k and saved in checkpoints.

        `inference=True` marks a module that stays in the deployed network (ContSup's context nodes).
        """
        self.owned[k][name] = module
        if inference:
            self.inference_modules.append(module)

    def stage_modules(self, k: int) -> list[nn.Module]:
        return [self.net.stages[k], self.owned[k]]

    def stage_parameters(self, k: int) -> list[nn.Parameter]:
        """Trainable parameters of stage k: its backbone units and everything it owns (EMA twins excluded)."""
        seen: set[int] = set()
        params = []
        for module in self.stage_modules(k):
            for p in module.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

    def _aux_shape(self, k: int) -> tuple[int, ...]:
        for mech in self.mechanisms:
            shape = mech.aux_feature_shape(self, k)
            if shape is not None:
                return tuple(shape)
        return tuple(self.net.records[k].out_shape)

    # ----------------------------------------------------------------------------------------- stepping
    def make_batch(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        # Clamped: undoing the normalisation can overshoot [0, 1] by a rounding error, which BCE rejects.
        return Batch(x=x, y=y, x01=(x * self.std + self.mean).clamp_(0, 1))

    def initial_carry(self, batch: Batch) -> Carry:
        carry: Carry = {"h": batch.x}
        for mech in self.mechanisms:
            carry.update(mech.initial_carry(batch))
        return carry

    def stage_input(self, k: int, carry: Carry, batch: Batch) -> torch.Tensor:
        for mech in self.mechanisms:
            h = mech.stage_input(self, k, carry, batch)
            if h is not None:
                return h
        return carry["h"]

    def _advance(self, k: int, carry: Carry, batch: Batch) -> tuple[torch.Tensor, Carry]:
        """Run stage k (with its input mechanisms) and build the carry for stage k+1."""
        h_in = self.stage_input(k, carry, batch)
        h = self.net.stages[k](h_in)
        out: Carry = {"h": h}
        for mech in self.mechanisms:
            out.update(mech.carry_out(self, k, h_in, carry))
        return h, out

    def aux_feature(self, k: int, h: torch.Tensor) -> torch.Tensor:
        for mech in self.mechanisms:
            f = mech.aux_feature(self, k, h)
            if f is not None:
                return f
        return h

    def train_stage(self, k: int, carry: Carry, batch: Batch) -> StageResult:
        """Forward stage k and compute its local loss. The caller backpropagates and detaches `out`."""
        h, out = self._advance(k, carry, batch)
        if k == self.num_stages - 1:
            loss = cross_entropy(h, batch.y)
            result = StageResult(loss=loss, out=out, logits=h, logs={"ce": loss.detach()})
        else:
            aux = self.owned[k]["aux"](self.aux_feature(k, h), batch)
            result = StageResult(loss=aux.loss, out=out, logits=aux.logits, logs=aux.logs)
        for mech in self.mechanisms:
            result = mech.stage_loss(self, k, carry, batch, result)
        return result

    def after_backward(self, k: int) -> None:
        for mech in self.mechanisms:
            mech.after_backward(self, k)

    def after_step(self, j: int) -> None:
        for mech in self.mechanisms:
            mech.after_step(self, j)

    # ----------------------------------------------------------------------------------------- inference
    def predict_stage(self, k: int, carry: Carry, batch: Batch) -> tuple[torch.Tensor | None, Carry]:
        """Inference of stage k: its aux classifier's logits (None without one; the final logits at k = K-1)
        and the carry for stage k+1. The engines call it stage by stage; the pipeline on the stage's rank."""
        h, out = self._advance(k, carry, batch)
        if k == self.num_stages - 1:
            return h, out
        return self.owned[k]["aux"].predict(self.aux_feature(k, h)), out

    @torch.no_grad()
    def predict_stages(self, x: torch.Tensor) -> list[torch.Tensor | None]:
        """Logits of every stage's aux classifier (None where it has none) and, last, the final logits."""
        batch = self.make_batch(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
        carry = self.initial_carry(batch)
        outs: list[torch.Tensor | None] = []
        for k in range(self.num_stages):
            logits, carry = self.predict_stage(k, carry, batch)
            outs.append(logits)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The inference network: stages (and any context nodes), no aux nets. (B, 3, H, W) -> (B, classes)."""
        batch = self.make_batch(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
        carry = self.initial_carry(batch)
        for k in range(self.num_stages):
            _, carry = self._advance(k, carry, batch)
        return carry["h"]

    def export(self) -> nn.Module:
        """The inference network alone, in eval mode, as a copy: no aux nets, EMA twins or cascades.

        Without context nodes it is the backbone as it was given (your model's class, an nn.Sequential, or a
        registered backbone) holding the trained weights: its state_dict loads into a fresh instance. With
        ContSup's context nodes it is a torch.fx.GraphModule that runs the stages and the nodes.
        """
        if not self.inference_modules:
            return self.net.export_source().eval()
        return copy.deepcopy(self._inference_graph()).eval()

    def _inference_graph(self) -> fx.GraphModule:
        """`forward` recorded by torch.fx with every stage and context node as one call, unused work dropped."""
        calls = {id(m) for m in [*self.net.stages, *self.inference_modules]}

        class Tracer(fx.Tracer):
            def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
                return id(module) in calls or super().is_leaf_module(module, qualname)

        module = fx.GraphModule(self, Tracer().trace(self))
        module.graph.eliminate_dead_code()  # the batch's labels and [0, 1] image, which inference does not use
        read = {node.target for node in module.graph.nodes if node.op == "get_attr"}
        for name in [b for b in module._buffers if b not in read]:  # the normalisation those needed
            delattr(module, name)
        module.recompile()
        return module

    def inference_parameters(self) -> int:
        """Parameters of the deployed network: backbone plus any module a mechanism keeps at inference."""
        modules = [self.net, *self.inference_modules]
        return sum(p.numel() for p in {id(p): p for m in modules for p in m.parameters()}.values())
