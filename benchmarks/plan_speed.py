"""How long `locallearn plan` takes to answer a budget query: CIFAR ResNet-32/110 and the ImageNet ResNets at 224.

Each query is the smallest K that fits half of the E2E peak (InfoPro; the ImageNet ResNets with the ImageNet
recipes' aux nets), timed from the first measurement to the answer in a fresh predictor. Writes
benchmarks/results/plan_speed_*.json, .csv and .md. Extra arguments: `--device cuda`, `--threads N`.
"""

from __future__ import annotations

import sys
import time

from _run import device_and_threads, publish
from locallearn.config import build_config
from locallearn.engine.trainer import resolve_device
from locallearn.plan.apply import run_spec
from locallearn.plan.predict import MemoryPredictor
from locallearn.plan.search import smallest_k
from locallearn.profile.results import result_stem
from locallearn.profile.tables import format_bytes, markdown_table
from locallearn.provenance import provenance

IMAGENET_AUX = {"aux_net": "imagenet", "decoder": "imagenet"}
QUERIES = [  # (arch, dataset, method, batch, method options)
    ("resnet32", "cifar10", "infopro", 1024, {}),
    ("resnet110", "cifar10", "infopro", 1024, {}),
    ("resnet50", "imagenet", "infopro:softmax", 256, {"aux_net": "imagenet"}),
    ("resnet101", "imagenet", "infopro:softmax", 256, IMAGENET_AUX),
    ("resnet152", "imagenet", "infopro:softmax", 256, IMAGENET_AUX),
]


def query(arch: str, dataset: str, method: str, batch: int, options: dict, device: str) -> dict:
    flags = {"arch": arch, "dataset": dataset, "method": method, "batch_size": batch, "device": device}
    cfg = build_config(None, {**flags, "method_options": options})
    start = time.perf_counter()
    predictor = MemoryPredictor(cfg, run_spec(cfg))
    e2e = predictor.predict(1, None, batch).peak_bytes
    plan = smallest_k(predictor, e2e // 2, batch)
    seconds = time.perf_counter() - start
    choice = plan.choice
    return {
        "arch": arch,
        "method": method,
        "method_options": options,
        "batch_size": batch,
        "image_size": run_spec(cfg).image_shape[1],
        "budget_bytes": e2e // 2,
        "fits": plan.fits,
        "K": choice.K if choice else None,
        "split": choice.split if choice else None,
        "peak_bytes": choice.prediction.peak_bytes if choice else None,
        "seconds": seconds,
        "config": cfg.to_dict(),
    }


def table(rows: list[dict]) -> str:
    headers = ["arch", "input", "method", "batch", "budget (E2E / 2)", "answer", "predicted peak", "seconds"]
    body = [
        [
            r["arch"],
            f"{r['image_size']}x{r['image_size']}",
            r["method"] + "".join(f" {key}={value}" for key, value in r["method_options"].items()),
            r["batch_size"],
            format_bytes(r["budget_bytes"]),
            f"K = {r['K']}, {r['split']}" if r["fits"] else "nothing fits",
            format_bytes(r["peak_bytes"]) if r["peak_bytes"] else "-",
            f"{r['seconds']:.1f}",
        ]
        for r in rows
    ]
    return markdown_table(headers, body)


def main() -> int:
    args = device_and_threads(__doc__)
    device = resolve_device(args.device)
    rows = [{**query(*q, args.device), **provenance(device)} for q in QUERIES]
    publish(rows, result_stem("plan_speed", device), table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
