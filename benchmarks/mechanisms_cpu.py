"""ContSup, MAN, MAN++ and MLAAN on top of each local objective: ResNet-32, CIFAR-10, K = 16 and 8, on this CPU.

InfoPro runs use the lambdas of the InfoPro recipe for the same K (read from configs/). Every run has the same
budget and seed: 2 epochs, batch 128, LR 0.1 held constant, one thread; by default on the first 4,000 training
images, evaluated on the first 2,000 test images. That budget separates methods that learn from methods that do
not and prices each mechanism in seconds and memory; it does not reproduce the papers' 400-epoch accuracies.
`--train-limit 50000` trains on the full training set and evaluates on the full test set (written as
mechanisms_resnet32_k<K>_n50000_*). Needs the canonical CIFAR-10 archive: pass `--data-dir DIR`; `--K 16`
limits the sweep to one K. Runs already trained (in a run folder or recorded in the result file) are reused and
runs checkpoint every 50 steps, so a stopped sweep continues when started again (`--rerun` retrains); start it
once per free core and the copies share out the runs; `--method A,B` sweeps some of them (the result file keeps
the other rows); `--collect` tabulates the runs finished so far. Writes benchmarks/results/mechanisms_resnet32_k<K>_*.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from _run import RESULTS, recipe, run_sweep

OBJECTIVES = ("greedy", "dgl", "infopro")
MECHANISMS = ("", "+contsup:R1E", "+man", "+man++", "+mlaan")
METHODS = ",".join(obj + mech for mech in MECHANISMS for obj in OBJECTIVES)
BUDGET = ["--epochs", "2", "--batch-size", "128", "--lr", "0.1"]


def lambdas(k: int) -> list[str]:
    """`--set` flags carrying the InfoPro recipe's lambdas for this K (greedy and DGL ignore them)."""
    with open(recipe(f"cifar10/resnet32_infopro_k{k}.yaml")) as f:
        options = yaml.safe_load(f)["method_options"]
    return [f"--set=method_options.{key}={options[key]}" for key in ("ixx_1", "ixy_1", "ixx_2", "ixy_2")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, nargs="*", default=[16, 8])
    parser.add_argument("--train-limit", type=int, default=4000)
    known, sys.argv[1:] = parser.parse_known_args()  # the others go to benchmarks/sweep.py
    images = known.train_limit
    for k in known.K:
        args = ["--arch", "resnet32", "--dataset", "cifar10", "--method", METHODS, "--K", str(k), *BUDGET]
        args += ["--train-limit", str(images), "--test-limit", str(2000 if images == 4000 else 10000)]
        args += ["--schedule", "const", "--threads", "1", "--set", "warmup_epochs=0", "--set", "checkpoint_every=50"]
        args += [*lambdas(k), "--no-progress"]
        name = f"mechanisms_resnet32_k{k}" + ("" if images == 4000 else f"_n{images}")
        code = run_sweep([*args, "--out", str(RESULTS), "--name", name])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
