"""FLOPs per image of one training step's forward work, counted at the dispatcher (`FlopCounterMode`, what
`locallearn profile` reports) beside a count of the Conv2d and Linear layers alone (forward hooks).

The dispatcher sees every convolution and matrix product, whatever module issues it; the layer count misses
the products an aux net computes without those layers, such as the InfoPro decoders' matrix-product upsample.
ResNet-32 and ResNet-110 recipes (CIFAR-10 shapes) and ResNet-101 InfoPro K = 2 (ImageNet, 224x224), batch 2
(FLOPs per image do not depend on it).
Writes benchmarks/results/flop_count_<hardware>_<yyyymm>.*.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from _run import device_and_threads, publish, recipe
from locallearn.config import build_config
from locallearn.engine.trainer import resolve_device
from locallearn.measure.flops import FlopCounter
from locallearn.plan.apply import run_spec
from locallearn.profile.probe import build_engine, synthetic_batch
from locallearn.profile.results import result_stem
from locallearn.profile.tables import markdown_table
from locallearn.provenance import provenance

RECIPES = [
    "cifar10/resnet32_e2e",
    "cifar10/resnet32_greedy_k4",
    "cifar10/resnet32_dgl_k4",
    "cifar10/resnet32_infopro_k4",
    "cifar10/resnet32_infopro_k16",
    "cifar10/resnet110_e2e",
    "cifar10/resnet110_infopro_k2",
    "cifar10/resnet110_infopro_star_k2",
    "imagenet/resnet101_e2e",
    "imagenet/resnet101_infopro_k2",
]


class LayerFlops:
    """Forward FLOPs of the Conv2d and Linear layers under `root`, from their output shapes (2 x MACs)."""

    def __init__(self, root: nn.Module) -> None:
        self.flops = 0
        self._layers = [m for m in root.modules() if isinstance(m, nn.Conv2d | nn.Linear)]

    def _count(self, layer: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        if isinstance(layer, nn.Conv2d):
            per_output = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
        else:
            per_output = layer.in_features
        self.flops += 2 * out.numel() * per_output

    def __enter__(self) -> LayerFlops:
        self._handles = [layer.register_forward_hook(self._count) for layer in self._layers]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()


def measure(name: str, device: torch.device) -> dict:
    cfg = build_config(recipe(f"{name}.yaml"), flags={"batch_size": 2, "device": str(device)})
    spec = run_spec(cfg)  # the input `train` would feed: ImageNet at its crop size
    engine = build_engine(cfg, spec, device)
    x, y = synthetic_batch(cfg, spec, device)
    with FlopCounter() as dispatcher, LayerFlops(engine.learner) as layers:
        engine.train_step(x, y)
    b = cfg.batch_size
    return {
        "recipe": name,
        "arch": cfg.arch,
        "method": cfg.method,
        "K": cfg.K,
        "forward_flops": dispatcher.flops // b,
        "conv_linear_flops": layers.flops // b,
        "added": dispatcher.flops / layers.flops - 1,
        "config": cfg.to_dict(),
        **provenance(device),
    }


def table(rows: list[dict]) -> str:
    body = [
        [
            r["recipe"],
            f"{r['forward_flops'] / 1e9:.4f}",
            f"{r['conv_linear_flops'] / 1e9:.4f}",
            f"{100 * r['added']:+.2f}%",
        ]
        for r in rows
    ]
    headers = ["recipe", "forward GFLOPs/img (dispatcher)", "Conv2d + Linear only", "dispatcher adds"]
    return markdown_table(headers, body)


if __name__ == "__main__":
    args = device_and_threads(__doc__)
    device = resolve_device(args.device)
    rows = [measure(name, device) for name in RECIPES]
    publish(rows, result_stem("flop_count", device), table(rows))
    sys.exit(0)
