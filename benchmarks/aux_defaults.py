"""Memory and FLOPs of InfoPro without a recipe at ImageNet size: the automatic aux nets against the CIFAR nets.

Before the aux nets followed the feature, a run without a recipe gave every boundary InfoPro's CIFAR nets (the
`1c2f` head and the decoder that convolves at the image's resolution), whatever the backbone. This profiles one
training step of InfoPro (contrast, no recipe) on ResNet-101 K = 2 and ResNet-50 K = 2 and 4 at 224x224, batch 16
(synthetic inputs, 10 classes: `locallearn profile --arch ... --method infopro --K ... --image-size 224
--batch-size 16`), once with those CIFAR nets named (`aux_net=1c2f`, `decoder=cifar`) and once with the defaults
(`auto`), each next to E2E on the same batch, with `profile`'s warning when an aux net costs more than its stage.
Writes benchmarks/results/aux_defaults_<hardware>_<yyyymm>.json (+ .csv, .md); `--table` redraws the table from
that file without measuring. Extra arguments: `--device cuda`, `--threads N`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from _run import RESULTS, publish
from locallearn.config import build_config
from locallearn.engine.trainer import resolve_device
from locallearn.profile.compare import compare_runs
from locallearn.profile.probe import input_spec
from locallearn.profile.results import result_stem
from locallearn.profile.tables import format_bytes, markdown_table
from locallearn.provenance import provenance

RUNS = (("resnet101", 2), ("resnet50", 2), ("resnet50", 4))
AUX = {
    "CIFAR nets (1c2f + cifar decoder)": {"aux_net": "1c2f", "decoder": "cifar"},
    "auto (the defaults)": {},
}
IMAGE_SIZE, BATCH = 224, 16


def measure(device: str) -> list[dict[str, Any]]:
    runs = []
    for arch, k in RUNS:
        for label, options in AUX.items():
            flags = {"arch": arch, "method": "infopro", "K": k, "batch_size": BATCH, "device": device}
            cfg = build_config(None, {**flags, "method_options": options})
            runs.append((label, cfg))
    specs = [(cfg, input_spec(cfg.dataset, IMAGE_SIZE)) for _, cfg in runs]
    rows = []
    for (label, cfg), row in zip(runs, compare_runs(specs), strict=True):
        rows.append({"aux": label, **row, "config": cfg.to_dict(), **provenance(resolve_device(cfg.device))})
        print(f"{cfg.arch} K={cfg.K} {label}: ratio {row['ratio']:.3f}", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    first = rows[0]
    head = (
        f"InfoPro (contrast) without a recipe, {IMAGE_SIZE}x{IMAGE_SIZE}, batch {first['batch_size']}, "
        f"device {first['device_name']}, memory convention {first['convention']}, torch {first['torch']}, "
        f"git {(first['git_sha'] or '?')[:10]}"
    )
    body = [
        [
            r["arch"],
            r["K"],
            r["cuts"],
            r["aux"],
            format_bytes(sum(s["aux_bytes"] for s in r["stages"])),
            f"{sum(s['aux_train_flops'] for s in r['stages']) / 1e9:.1f}",
            format_bytes(r["peak_bytes"]),
            format_bytes(r["e2e_peak_bytes"]),
            f"{100 * r['ratio']:.1f}%",
            f"{r['train_flops'] / 1e9:.1f}",
            f"{100 * r['flops_overhead']:+.1f}%",
            "yes" if r["aux_warning"] else "no",
        ]
        for r in rows
    ]
    headers = [
        "arch", "K", "cuts", "aux nets", "aux held", "aux train GFLOPs/img", "peak", "E2E peak", "peak / E2E",
        "train GFLOPs/img", "FLOPs vs E2E", "profile warns",
    ]  # fmt: skip
    warnings = [f"- {r['arch']} K = {r['K']}, {r['aux']}: {r['aux_warning']}" for r in rows if r["aux_warning"]]
    return "\n\n".join([head, markdown_table(headers, body), *(["\n".join(warnings)] if warnings else [])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="redraw the table from the result file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stem = result_stem("aux_defaults", resolve_device(args.device))
    rows = json.loads((RESULTS / f"{stem}.json").read_text()) if args.table else measure(args.device)
    publish(rows, stem, table(rows))


if __name__ == "__main__":
    main()
