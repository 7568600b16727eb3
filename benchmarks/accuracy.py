"""CPU short-budget accuracy: E2E, Greedy SL, DGL and InfoPro at K = 2 and 4 on ResNet-32, CIFAR-10.

A sanity check that every method learns within a budget a laptop CPU can afford, not a reproduction of
the papers' 160-epoch numbers: the papers' recipes (splits, aux nets, lambdas) with 3 epochs on the first
5,000 training images, batch 128, LR 0.1 without the 10-epoch warm-up, and 2,000 test images. Also
records throughput and memory per run. Needs the canonical CIFAR-10 archive: pass `--data-dir DIR`.
Extra arguments go to benchmarks/sweep.py. Writes benchmarks/results/accuracy_resnet32_short_*.
"""

from __future__ import annotations

import sys

from _run import RESULTS, recipe, run_sweep

RECIPES = [recipe("cifar10/resnet32_e2e.yaml")] + [
    recipe(f"cifar10/resnet32_{m}_k{k}.yaml") for m in ("greedy", "dgl", "infopro") for k in (2, 4)
]
BUDGET = ["--epochs", "3", "--train-limit", "5000", "--test-limit", "2000", "--batch-size", "128", "--lr", "0.1"]

if __name__ == "__main__":
    args = ["--config", *RECIPES, *BUDGET, "--set", "warmup_epochs=0", "--no-progress"]
    sys.exit(run_sweep([*args, "--out", str(RESULTS), "--name", "accuracy_resnet32_short"]))
