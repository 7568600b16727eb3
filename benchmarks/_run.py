"""Shared by the benchmark scripts: run one `locallearn` command or sweep, echoing it so every result says what
made it."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import sweep
from locallearn.cli import main
from locallearn.profile.results import write_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def recipe(name: str) -> str:
    """A bundled recipe's path, relative to the repository root when run from there."""
    path = ROOT / "configs" / name
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def run(args: list[str]) -> int:
    """Run `locallearn <args> <this script's own arguments>` (e.g. `--device cuda`), printing the command."""
    argv = [*args, *sys.argv[1:]]
    print("$ locallearn " + shlex.join(argv), file=sys.stderr, flush=True)
    return main(argv)


def run_sweep(args: list[str]) -> int:
    """Run `python benchmarks/sweep.py <args> <this script's own arguments>`, printing the command."""
    argv = [*args, *sys.argv[1:]]
    print("$ python benchmarks/sweep.py " + shlex.join(argv), file=sys.stderr, flush=True)
    return sweep.main(argv)


def publish(rows: list[dict], stem: str, table: str) -> list[Path]:
    """Print the Markdown table and write the sweep's result files (JSON, CSV, Markdown) under RESULTS."""
    print(table)
    paths = write_results(rows, RESULTS, stem, table)
    print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return paths


def device_and_threads(doc: str) -> argparse.Namespace:
    """Parse `--device` and `--threads` (applied to torch here), the only flags of the planner benchmarks."""
    import torch

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args
