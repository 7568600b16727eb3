"""ResNet-32 on CIFAR-10 on this CPU: E2E, Greedy SL, DGL and InfoPro at K = 4 and 16, one pass over the data.

The papers' recipes (splits, aux nets, lambdas) with one epoch, batch 128, LR 0.1 held constant (no warm-up
blend), one thread per run, evaluated on the full 10,000-image test set. By default the epoch covers the first
10,000 training images (a fifth of CIFAR-10) so the seven runs fit in an hour of one core; seconds per full epoch
follow from the measured throughput (50,000 / images per second). `--train-limit 50000` runs whole epochs
(about 2.5 hours of one core), written as one_epoch_resnet32_n50000_*. Finished runs are reused, so the sweep
can be stopped and started again. Needs the canonical CIFAR-10 archive: pass `--data-dir DIR`.
Writes benchmarks/results/one_epoch_resnet32_*.
"""

from __future__ import annotations

import argparse
import sys

from _run import RESULTS, recipe, run_sweep

RECIPES = [recipe("cifar10/resnet32_e2e.yaml")] + [
    recipe(f"cifar10/resnet32_{m}_k{k}.yaml") for m in ("greedy", "dgl", "infopro") for k in (4, 16)
]
BUDGET = [
    "--epochs",
    "1",
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-limit", type=int, default=10000)
    known, sys.argv[1:] = parser.parse_known_args()  # the others go to benchmarks/sweep.py
    name = "one_epoch_resnet32" + ("" if known.train_limit == 10000 else f"_n{known.train_limit}")
    args = ["--config", *RECIPES, *BUDGET, "--train-limit", str(known.train_limit)]
    args += ["--set", "warmup_epochs=0", "--no-progress"]
    sys.exit(run_sweep([*args, "--out", str(RESULTS), "--name", name]))
