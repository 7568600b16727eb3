"""The layers of src/locallearn, lowest first, and the imports that break their order, read with `ast`.

A module may import from its own top-level package or module and from lower layers, never from its own layer's
other members or from above. A private name (`_x`, or a module `_x`) is imported only within its own package.
Imports under `if TYPE_CHECKING:` and inside functions count: they are dependencies all the same.
Used by tests/test_layers.py (which fails on any violation) and scripts/layer_report.py.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "locallearn"

# Lowest first. A name is a top-level module or package of locallearn; `__init__` is the package's own API.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("registry", "provenance", "fielddocs", "logs"),
    ("models", "losses", "schedule"),
    ("measure",),  # meters: what split needs to balance units, and what engines and profilers trace with
    ("split",),
    ("aux",),
    ("methods",),
    ("config",),
    ("data",),
    ("engine",),
    ("profile",),
    ("plan",),
    ("cli", "api"),
    ("__main__", "__init__"),
)
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}
KINDS = ("up", "sideways", "private", "unplaced")


@dataclass(frozen=True)
class Module:
    path: Path
    name: str  # dotted, e.g. locallearn.engine.local
    package: str  # the package holding it (itself for an __init__.py)

    @property
    def top(self) -> str:
        return top_name(self.name)


@dataclass(frozen=True)
class Violation:
    path: str  # from the repository root, e.g. src/locallearn/split.py
    line: int
    text: str  # the import statement as written
    kind: str  # one of KINDS
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.text}  <- {self.problem}"


def top_name(dotted: str) -> str:
    """The locallearn member a dotted module name belongs to (`__init__` for the package itself)."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules(package: Path = PACKAGE) -> list[Module]:
    found = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            name = ".".join(parts[:-1])
            found.append(Module(path, name, name))
        else:
            name = ".".join(parts)
            found.append(Module(path, name, name.rpartition(".")[0]))
    return found


def _imports(module: Module, source: str) -> Iterator[tuple[ast.stmt, str, list[str]]]:
    """(statement, imported module, names imported from it) for every locallearn import in `source`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "locallearn":
                    yield node, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.package.split(".")[: len(module.package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "locallearn":
                continue
            if node.module is None:  # `from . import a, b`: each name is a module of that package
                for alias in node.names:
                    yield node, f"{target}.{alias.name}", []
            else:
                yield node, target, [alias.name for alias in node.names]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def violations(package: Path = PACKAGE) -> list[Violation]:
    """Every import in `package` that points up, sideways, or at another package's private name."""
    found: list[Violation] = []
    mods = modules(package)
    for module in mods:
        source = module.path.read_text()
        lines = source.splitlines()
        shown = str(module.path.relative_to(package.parent.parent))
        if module.top not in LAYER_OF:
            found.append(Violation(shown, 1, module.name, "unplaced", f"`{module.top}` has no layer: add it to LAYERS"))
            continue
        for node, target, names in _imports(module, source):
            text = " ".join(line.strip() for line in lines[node.lineno - 1 : node.end_lineno])
            here, there = module.top, top_name(target)
            if there != here and there in LAYER_OF:
                if LAYER_OF[there] > LAYER_OF[here]:
                    problem = f"points up: {here} (layer {LAYER_OF[here]}) imports {there} (layer {LAYER_OF[there]})"
                    found.append(Violation(shown, node.lineno, text, "up", problem))
                elif LAYER_OF[there] == LAYER_OF[here]:
                    problem = f"points sideways: {here} and {there} share layer {LAYER_OF[here]}"
                    found.append(Violation(shown, node.lineno, text, "sideways", problem))
            target_package = target if any(m.name == target and m.package == target for m in mods) else None
            for name in names:
                owner = target_package or target.rpartition(".")[0]
                if _private(name) and owner != module.package and target != module.package:
                    problem = f"imports the private name {name} of {target} from outside its package"
                    found.append(Violation(shown, node.lineno, text, "private", problem))
            private_parts = [p for p in target.split(".") if _private(p)]
            if private_parts and target.rpartition(".")[0] != module.package:
                problem = f"imports the private module {target} from outside its package"
                found.append(Violation(shown, node.lineno, text, "private", problem))
    return found


def stale_layers(package: Path = PACKAGE) -> list[str]:
    """Names in LAYERS that no module of `package` has (moved or removed): the order must be kept in step."""
    present = {m.top for m in modules(package)}
    return sorted(set(LAYER_OF) - present - {"__init__"})
