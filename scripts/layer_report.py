"""The structure of src/locallearn in numbers: lines per layer, imports that break the layer order, files the
linter checks, and the training loops written more than once.

`python scripts/layer_report.py` prints the report (`--root DIR`: of the checkout in DIR, e.g. an older commit
extracted with `git archive`); `--write docs/design.md` replaces the block between the
`<!-- layer-report -->` markers there with it, so the page shows what this script measured, never a typed copy.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from layering import LAYERS, PACKAGE, ROOT, modules, violations

MARKERS = ("<!-- layer-report -->", "<!-- /layer-report -->")
# The three loops of training, each to be written once: a definition by one of these names that loops itself
# and does not extend its parent's (no `super().<name>(...)` call) implements the loop.
LOOPS = {"train_step": "step over the stages", "train_epoch": "epoch over the batches", "evaluate": "evaluation"}


def lines_per_layer(package: Path) -> list[tuple[str, int, int]]:
    """(layer members, files, lines) per layer, lowest first."""
    files: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    for module in modules(package):
        files[module.top] += 1
        lines[module.top] += len(module.path.read_text().splitlines())
    return [(" ".join(names), sum(files[n] for n in names), sum(lines[n] for n in names)) for names in LAYERS]


def linted_files(root: Path) -> tuple[int, int]:
    """(Python files `ruff check src --show-files` would check in checkout `root`, Python files under src)."""
    shown = subprocess.run(
        ["ruff", "check", "src", "--show-files"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    linted = {line.strip() for line in shown.splitlines() if line.strip().endswith(".py")}
    return len(linted), len(list((root / "src").rglob("*.py")))


def loop_definitions(package: Path) -> dict[str, list[str]]:
    """Loop role -> `path:line` of each definition that runs the loop itself."""
    found: dict[str, list[str]] = {name: [] for name in LOOPS}
    for module in modules(package):
        for node in ast.walk(ast.parse(module.path.read_text())):
            if not isinstance(node, ast.FunctionDef) or node.name not in LOOPS:
                continue
            inner = list(ast.walk(node))
            extends = any(isinstance(n, ast.Attribute) and n.attr == node.name and _calls_super(n.value) for n in inner)
            if not extends and any(isinstance(n, ast.For | ast.While) for n in inner):
                found[node.name].append(f"{module.path.relative_to(package)}:{node.lineno}")
    return found


def _calls_super(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def report(root: Path = ROOT) -> str:
    """The report for the checkout at `root`, its modules placed in today's layers."""
    package = root / PACKAGE.relative_to(ROOT)
    layers = lines_per_layer(package)
    width = max(len(names) for names, _, _ in layers)
    out = ["lines per layer (lowest first; a layer imports only from those listed before it):"]
    out += [f"  {i:2d}  {names:<{width}}  {files:3d} files  {lines:6,d} lines" for i, (names, files, lines) in
            enumerate(layers)]  # fmt: skip
    total_files, total_lines = sum(f for _, f, _ in layers), sum(n for _, _, n in layers)
    out.append(f"      {'total':<{width}}  {total_files:3d} files  {total_lines:6,d} lines")
    kinds = Counter(v.kind for v in violations(package))
    out.append(
        f"imports pointing up: {kinds['up']}; sideways: {kinds['sideways']}; private names across packages: "
        f"{kinds['private']}; modules without a layer: {kinds['unplaced']}"
    )
    linted, present = linted_files(root)
    out.append(f"files linted: {linted} of {present} (ruff check src --show-files)")
    out.append("training loops implemented (each written once is 1):")
    for name, places in loop_definitions(package).items():
        out.append(f"  {LOOPS[name]} ({name}): {len(places)}  {', '.join(places)}")
    return "\n".join(out)


def write_into(page: Path, text: str) -> None:
    start, end = MARKERS
    old = page.read_text()
    block = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not block.search(old):
        raise SystemExit(f"{page} has no {start} ... {end} block to fill")
    page.write_text(block.sub(lambda _: f"{start}\n```\n{text}\n```\n{end}", old))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="fill this page's layer-report block (e.g. docs/design.md)")
    parser.add_argument("--root", type=Path, default=ROOT, help="another checkout to measure (e.g. an older commit)")
    args = parser.parse_args()
    text = report(args.root.resolve())
    print(text)
    if args.write:
        write_into(args.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
