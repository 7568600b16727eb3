"""Predicted vs measured peak memory of one training step, over archs, K, methods (mechanisms included) and batches.

Predicted: `locallearn plan`'s model (backbone measured once on small batches, every stage's extras priced from
them). Measured: `locallearn profile`'s meter on a real step at the full batch (CPU: the allocator's peak, what exists
before the step plus the most tensor bytes it allocates at once; CUDA: peak allocated). For the configurations
in RSS_CONFIGS (CPU) also the resident-memory growth of `profile --meter rss` (a fresh process per run) beside
the predicted growth (the peak less the weights and the batch, what the RSS meter sees added).
Writes benchmarks/results/plan_accuracy_*.json, .csv and .md: one row per configuration with both peaks and the
error (the JSON also has the seconds each took; `plan_speed.py` times queries). Every configuration stays under
2 GiB. Extra arguments: `--device cuda`, `--threads N`.
"""

from __future__ import annotations

import sys
import time

from _run import device_and_threads, publish
from locallearn.config import build_config
from locallearn.engine.trainer import resolve_device
from locallearn.plan.apply import run_spec
from locallearn.plan.predict import MemoryPredictor
from locallearn.profile.compare import measure
from locallearn.profile.results import result_stem
from locallearn.profile.rss import measure_rss
from locallearn.profile.tables import format_bytes, markdown_table
from locallearn.provenance import provenance

IMAGENET_AUX = {"aux_net": "imagenet", "decoder": "imagenet"}  # the ImageNet recipes' aux nets
# (arch, dataset, image size, method, K, batch, method options); split: the memory-balanced DP for K > 1.
CONFIGS = [
    ("resnet32", "cifar10", None, "e2e", 1, 512, {}),
    ("resnet32", "cifar10", None, "greedy", 4, 256, {}),
    ("resnet32", "cifar10", None, "dgl", 8, 512, {}),
    ("resnet32", "cifar10", None, "infopro", 2, 128, {}),
    ("resnet32", "cifar10", None, "infopro", 16, 1024, {}),
    ("resnet32", "cifar10", None, "infopro:softmax", 4, 64, {"aux_widen": 2}),
    ("resnet32", "cifar10", None, "infopro+contsup:R1E", 8, 256, {}),
    ("resnet32", "cifar10", None, "greedy+contsup:R2", 4, 128, {}),
    ("resnet32", "cifar10", None, "infopro+man", 8, 256, {}),
    ("resnet32", "cifar10", None, "dgl+man++", 4, 128, {}),
    ("resnet32", "cifar10", None, "infopro+mlaan", 8, 256, {}),
    ("resnet32", "cifar10", None, "greedy+mlaan", 16, 128, {"mlaan_window": 3}),
    ("resnet110", "cifar10", None, "e2e", 1, 128, {}),
    ("resnet110", "cifar10", None, "greedy", 16, 512, {}),
    ("resnet110", "cifar10", None, "infopro", 16, 1024, {}),
    ("resnet110", "cifar10", None, "infopro+man", 8, 64, {}),
    ("resnet18", "imagenet", 224, "e2e", 1, 16, {}),
    ("resnet18", "imagenet", 224, "greedy", 4, 16, {}),
    ("resnet18", "imagenet", 224, "infopro:softmax+man", 4, 8, {"aux_net": "imagenet"}),
    ("resnet50", "imagenet", 224, "dgl", 2, 8, {}),
    ("resnet101", "imagenet", 224, "infopro:softmax", 2, 8, IMAGENET_AUX),
    ("resnet50", "imagenet", 128, "infopro", 4, 8, {}),
]
RSS_CONFIGS = range(4)  # indices into CONFIGS: a fresh process each, seconds apiece


def run_one(arch, dataset, size, method, k, batch, options: dict, extra: dict, rss: bool) -> dict:
    flags = {"arch": arch, "dataset": dataset, "method": method, "K": k, "batch_size": batch, **extra}
    flags["method_options"] = options
    if k > 1:
        flags["split"] = "even-memory"
    if size:
        flags["image_size"] = size
    cfg = build_config(None, flags)
    spec = run_spec(cfg)
    start = time.perf_counter()
    predicted = MemoryPredictor(cfg, spec).predict(cfg.K, cfg.split, batch)
    predict_s = time.perf_counter() - start
    start = time.perf_counter()
    measured = measure(cfg, spec, warmup=1)
    measure_s = time.perf_counter() - start
    growth = {}
    if rss:
        growth = {
            "predicted_growth_bytes": predicted.peak_bytes - predicted.weights_bytes - measured.batch_bytes,
            "rss_growth_bytes": measure_rss(cfg, size).growth_bytes,
        }
    return {
        "arch": arch,
        "image_size": spec.image_shape[1],
        "method": method,
        "method_options": options,
        "K": predicted.K,
        "batch_size": batch,
        "predicted_peak_bytes": predicted.peak_bytes,
        "measured_peak_bytes": measured.peak_bytes,
        "error": predicted.peak_bytes / measured.peak_bytes - 1,
        "predicted_stage": predicted.peak_stage,
        "measured_stage": measured.peak_stage,
        "predict_seconds": predict_s,
        "measure_seconds": measure_s,
        **growth,
        "convention": measured.convention,
        "config": cfg.to_dict(),
    }


def _growth(row: dict) -> str:
    if "rss_growth_bytes" not in row:
        return "-"
    predicted, rss = row["predicted_growth_bytes"], row["rss_growth_bytes"]
    return f"{format_bytes(predicted)} / {format_bytes(rss)} ({100 * (predicted / rss - 1):+.1f}%)"


def table(rows: list[dict]) -> str:
    headers = ["arch", "input", "method", "K", "batch", "predicted", "measured", "error", "growth: predicted / RSS"]
    body = [
        [
            r["arch"],
            f"{r['image_size']}x{r['image_size']}",
            r["method"] + "".join(f" {key}={value}" for key, value in r["method_options"].items()),
            r["K"],
            r["batch_size"],
            format_bytes(r["predicted_peak_bytes"]),
            format_bytes(r["measured_peak_bytes"]),
            f"{100 * r['error']:+.2f}%",
            _growth(r),
        ]
        for r in rows
    ]
    worst = max(abs(r["error"]) for r in rows)
    return markdown_table(headers, body) + f"\n\nlargest error: {100 * worst:.2f}% over {len(rows)} configurations"


def main() -> int:
    args = device_and_threads(__doc__)
    device = resolve_device(args.device)
    rows = []
    for i, (arch, dataset, size, method, k, batch, options) in enumerate(CONFIGS):
        extra = {"device": args.device, "threads": args.threads}
        rss = device.type == "cpu" and i in RSS_CONFIGS
        row = run_one(arch, dataset, size, method, k, batch, options, extra, rss)
        rows.append({**row, **provenance(device)})
        print(f"{arch} {method} K={k} B={batch}: {100 * row['error']:+.2f}%", file=sys.stderr, flush=True)
    publish(rows, result_stem("plan_accuracy", device), table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
