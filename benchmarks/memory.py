"""Memory of one training step vs E2E (InfoPro Table 3 and beyond): ResNet-110, CIFAR-10 shapes, batch 1024.

Four parts, each one `locallearn profile` call writing benchmarks/results/profile_resnet110_<part>_*:
`star`: InfoPro* (the paper's memory-balanced splits, K = 2, 3, 4; papers: 57.2 / 44.9 / 37.4 % of E2E);
`table`: greedy, DGL and InfoPro at K = 2, 4, 8, 16 with the papers' splits (InfoPro Table 2);
`even_memory`: the same recipes with our exact memory-balanced split (`--split even-memory`);
`mechanisms`: each mechanism on InfoPro K = 16 (the InfoPro recipe's split and lambdas).
`--part NAME` runs one part; other arguments go to `locallearn profile` (e.g. `--device cuda`).
"""

from __future__ import annotations

import argparse
import sys

from _run import RESULTS, recipe, run

TABLE = [recipe(f"cifar10/resnet110_{m}_k{k}.yaml") for m in ("greedy", "dgl", "infopro") for k in (2, 4, 8, 16)]
PARTS = {
    "star": ["--config", *[recipe(f"cifar10/resnet110_infopro_star_k{k}.yaml") for k in (2, 3, 4)]],
    "table": ["--config", recipe("cifar10/resnet110_e2e.yaml"), *TABLE],
    "even_memory": ["--config", *TABLE, "--split", "even-memory"],
    "mechanisms": [
        "--config",
        recipe("cifar10/resnet110_infopro_k16.yaml"),
        "--method",
        "infopro+contsup:R1E,infopro+man,infopro+man++,infopro+mlaan",
    ],
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(PARTS), action="append", help="run only these parts")
    known, sys.argv[1:] = parser.parse_known_args()  # the others go to `locallearn profile`
    code = 0
    for part in known.part or list(PARTS):
        out = ["--out", str(RESULTS), "--name", f"profile_resnet110_{part}"]
        code = code or run(["profile", *PARTS[part], *out])
    sys.exit(code)
