"""The Python entry points: a learner from a model or an arch name in one call, and one optimizer per stage.

learner = create_learner(model, "infopro", K=4)        # your nn.Module (traced if need be) or "resnet32"
optimizers = stage_optimizers(learner, torch.optim.SGD, lr=0.1, momentum=0.9)
engine = LocalEngine(learner, optimizers)              # engine.train_step(x, y) per batch
deployed = learner.export()                            # the inference network, no aux nets
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .config import RunConfig
from .data.imagefolder import IMAGENET_MEAN, IMAGENET_STD
from .errors import ConfigError
from .methods import LocalLearner, MethodOptions, build_learner, parse_method
from .models import as_backbone, build_backbone
from .split import split_model


def create_learner(
    model: str | nn.Module,
    method: str = "infopro",
    K: int | None = None,
    *,
    num_classes: int | None = None,
    split: str | list | None = None,
    cuts: Sequence[str] | None = None,
    input_shape: tuple[int, ...] | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    options: MethodOptions | None = None,
    **option_values: Any,
) -> LocalLearner:
    """`model` trained as K gradient-isolated stages by `method` (e.g. "infopro+man", "dgl", "greedy+contsup").

    `model` is a registered arch name ("resnet32", "resnet50", "package.module:callable") or any nn.Module: an
    nn.Sequential, a module exposing `units`, or any module whose forward torch.fx can trace. A module is trained
    in place (the stages are its own modules); `learner.export()` returns a trained copy of it.
    K: stages (default 4, or one more than `cuts`; always 1 for e2e). `split` and `cuts` choose where the
    stages end, as in `split_model` (default: the paper's table for a registered arch, else balanced FLOPs).
    num_classes: required with an arch name; read from a module's output otherwise.
    input_shape: (C, H, W) of one input, default (3, S, S) with S the size the backbone is designed for (224 for
    the ImageNet ResNets, else 32). mean, std: the normalisation your inputs carry (InfoPro reconstructs the
    image without it). `options` and keyword arguments set MethodOptions fields (`ixx_1=6`, `aux_net="2c2f"`).
    """
    options = _options(options, option_values)
    spec = parse_method(method)
    if spec.is_e2e:
        K = 1
    elif K is None:
        K = len(cuts) + 1 if cuts else RunConfig.K  # the command line's default
    if isinstance(model, str):
        if num_classes is None:
            raise ConfigError(f"create_learner('{model}', ...) needs num_classes=")
        backbone, arch = build_backbone(model, num_classes), model
    else:
        backbone, arch = as_backbone(model), ""
    shape = tuple(input_shape) if input_shape is not None else (3, backbone.image_size, backbone.image_size)
    net = split_model(
        backbone,
        K,
        split,
        arch=arch,
        input_shape=shape,
        stem_module=spec.stem_module(options),
        cuts=cuts,
    )
    outputs = net.records[-1].out_shape
    if len(outputs) != 1 or (num_classes is not None and outputs[0] != num_classes):
        raise ConfigError(
            f"the model returns {tuple(outputs)} per input at input_shape={shape}; a learner needs (num_classes,)"
            + (f" = ({num_classes},)" if num_classes is not None else "")
        )
    return build_learner(spec, net, num_classes=outputs[0], mean=tuple(mean), std=tuple(std), options=options)


def _options(options: MethodOptions | None, values: dict[str, Any]) -> MethodOptions:
    try:
        return dataclasses.replace(options or MethodOptions(), **values)
    except TypeError as e:
        known = ", ".join(f.name for f in dataclasses.fields(MethodOptions))
        raise ConfigError(f"unknown method option in {sorted(values)}; MethodOptions has: {known}") from e


def stage_optimizers(
    learner: LocalLearner, optimizer: Callable[..., torch.optim.Optimizer], **kwargs: Any
) -> list[torch.optim.Optimizer]:
    """One `optimizer(stage_parameters(k), **kwargs)` per stage, e.g. (learner, torch.optim.SGD, lr=0.1)."""
    return [optimizer(learner.stage_parameters(k), **kwargs) for k in range(learner.num_stages)]
