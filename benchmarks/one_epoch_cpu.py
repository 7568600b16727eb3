"""ResNet-32 on CIFAR-10 on this CPU: E2E, Greedy SL, DGL and InfoPro at K = 4 and 16, one pass over the data.

The papers' recipes (splits, aux nets, lambdas) with one epoch, batch 128, LR 0.1 held constant (no warm-up
blend), one thread per run, evaluated on the full 10,000-image test set. By default the epoch covers the first
10,000 training images (a fifth of CIFAR-10) so the seven runs fit in an hour of one core; seconds per full epoch
follow from the measured throughput (50,000 / images per second). `--train-limit 50000` runs whole epochs.
Needs the canonical CIFAR-10 archive: pass `--data-dir DIR`. Writes benchmarks/results/one_epoch_resnet32_*.
"""

from __future__ import annotations

import sys

from _run import RESULTS, recipe, run

RECIPES = [recipe("cifar10/resnet32_e2e.yaml")] + [
    recipe(f"cifar10/resnet32_{m}_k{k}.yaml") for m in ("greedy", "dgl", "infopro") for k in (4, 16)
]
BUDGET = [
    "--epochs",
    "1",
    "--train-limit",
    "10000",
    "--batch-size",
    "128",
    "--lr",
    "0.1",
    "--schedule",
    "const",
    "--threads",
    "1",
]

if __name__ == "__main__":
    args = ["bench", "--config", *RECIPES, *BUDGET, "--set", "warmup_epochs=0", "--no-progress"]
    sys.exit(run([*args, "--out", str(RESULTS), "--name", "one_epoch_resnet32"]))
