"""`locallearn list`: registered archs, methods, mechanisms, datasets and the bundled recipes."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def recipes_dir() -> Path | None:
    """configs/ from $LOCALLEARN_CONFIGS, the working directory, or the source checkout."""
    candidates = [
        os.environ.get("LOCALLEARN_CONFIGS"),
        Path.cwd() / "configs",
        Path(__file__).resolve().parents[3] / "configs",
    ]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("list", help="list archs, methods, mechanisms, datasets and recipes")


def run(args: argparse.Namespace) -> int:
    from ..data import list_datasets
    from ..methods import MECHANISMS, list_methods
    from ..models import list_archs

    print("archs:      " + ", ".join(list_archs()) + ", or package.module:callable")
    print("methods:    " + ", ".join(list_methods()) + "  (infopro:contrast | infopro:softmax)")
    print("mechanisms: " + (", ".join(MECHANISMS.names()) or "-") + "  (compose: objective+mechanism[:arg])")
    print("datasets:   " + ", ".join(list_datasets()))
    root = recipes_dir()
    if root is not None:
        print(f"recipes ({root}):")
        for path in sorted(root.rglob("*.yaml")):
            print(f"  {path.relative_to(root)}")
    return 0
