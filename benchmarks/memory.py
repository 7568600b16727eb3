"""Memory of one training step vs E2E (InfoPro Table 3 and beyond): ResNet-110, CIFAR-10 shapes, batch 1024.

Profiles the recipes of InfoPro Table 2 (greedy, DGL, InfoPro; K = 2, 4, 8, 16, the paper's splits) and
Table 3 (InfoPro*, memory-balanced splits, K = 2, 3, 4; papers: 57.2 / 44.9 / 37.4 % of E2E), and each mechanism
on InfoPro K = 16 (the InfoPro recipe's split and lambdas). Extra
arguments go to `locallearn profile` (e.g. `--device cuda`). Writes benchmarks/results/profile_resnet110_*.
"""

from __future__ import annotations

import sys

from _run import RESULTS, recipe, run

TABLE = [recipe("cifar10/resnet110_e2e.yaml")] + [
    recipe(f"cifar10/resnet110_{m}_k{k}.yaml") for m in ("greedy", "dgl", "infopro") for k in (2, 4, 8, 16)
]
STAR = [recipe(f"cifar10/resnet110_infopro_star_k{k}.yaml") for k in (2, 3, 4)]
MECHANISMS = ["--config", recipe("cifar10/resnet110_infopro_k16.yaml")]
MECHANISMS += ["--method", "infopro+contsup:R1E,infopro+man,infopro+man++,infopro+mlaan"]

if __name__ == "__main__":
    out = ["--out", str(RESULTS)]
    code = run(["profile", "--config", *STAR, *out, "--name", "profile_resnet110_star"])
    code = code or run(["profile", "--config", *TABLE, *out, "--name", "profile_resnet110_table"])
    sys.exit(code or run(["profile", *MECHANISMS, *out, "--name", "profile_resnet110_mechanisms"]))
