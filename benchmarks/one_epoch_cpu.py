"""One epoch of ResNet-32 on the full CIFAR-10 on this CPU: E2E, Greedy SL, DGL and InfoPro at K = 4 and 16.

The papers' recipes (splits, aux nets, lambdas) with one epoch, batch 128, LR 0.1 held constant (no warm-up
blend), one thread per run, evaluated on the full 10,000-image test set. Accuracy after one epoch says that
every method learns at full scale; seconds per epoch is the CPU cost of each method's aux nets.
Needs the canonical CIFAR-10 archive: pass `--data-dir DIR`. Writes benchmarks/results/one_epoch_resnet32_*.
"""

from __future__ import annotations

import sys

from _run import RESULTS, recipe, run

RECIPES = [recipe("cifar10/resnet32_e2e.yaml")] + [
    recipe(f"cifar10/resnet32_{m}_k{k}.yaml") for m in ("greedy", "dgl", "infopro") for k in (4, 16)
]
BUDGET = ["--epochs", "1", "--batch-size", "128", "--lr", "0.1", "--schedule", "const", "--threads", "1"]

if __name__ == "__main__":
    args = ["bench", "--config", *RECIPES, *BUDGET, "--set", "warmup_epochs=0", "--no-progress"]
    sys.exit(run([*args, "--out", str(RESULTS), "--name", "one_epoch_resnet32"]))
