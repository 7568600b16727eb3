"""Memory of one training step vs E2E at ImageNet size: ResNet-101 and ResNet-152, 224x224, batch 64 per device.

Profiles E2E, InfoPro K = 2 and K = 4 (the papers' ImageNet splits) and InfoPro + MAN K = 4 from the bundled
ImageNet recipes; the papers report 38.8-48.7 % savings (methods.md 7.1, 7.4). Synthetic inputs: memory does not
depend on pixel values. Extra arguments go to `locallearn profile` (e.g. `--device cuda`).
Writes benchmarks/results/profile_imagenet_*.
"""

from __future__ import annotations

import sys

from _run import RESULTS, recipe, run

RECIPES = [
    recipe(f"imagenet/{arch}_{name}.yaml")
    for arch in ("resnet101", "resnet152")
    for name in ("e2e", "infopro_k2", "infopro_k4", "infopro_man_k4")
]

if __name__ == "__main__":
    args = ["profile", "--config", *RECIPES, "--image-size", "224", "--batch-size", "64"]
    sys.exit(run([*args, "--out", str(RESULTS), "--name", "profile_imagenet"]))
