"""Wall-time overhead over E2E (InfoPro Table 3): InfoPro* K = 2, 3, 4 on ResNet-110, CIFAR-10 shapes, batch 1024.

The paper measured (1x Titan Xp) theoretical / wall-time overheads of 1.3 / 1.1 %, 3.3 / 7.5 % and
5.9 / 13.4 %. All runs are timed in one process on the same synthetic batch, in alternating rounds after a
warm-up. Extra arguments go to benchmarks/sweep.py (e.g. `--device cuda --rounds 5`).
Writes benchmarks/results/overhead_resnet110_star_<hardware>_<yyyymm>.*.
"""

from __future__ import annotations

import sys

from _run import RESULTS, recipe, run_sweep

STAR = [recipe(f"cifar10/resnet110_infopro_star_k{k}.yaml") for k in (2, 3, 4)]

if __name__ == "__main__":
    args = ["--mode", "overhead", "--config", *STAR]
    sys.exit(run_sweep([*args, "--out", str(RESULTS), "--name", "overhead_resnet110_star"]))
