"""The library's layers only point down: no module imports a layer above its own or beside it, and no private
name crosses a package. The order lives in scripts/layering.py; docs/design.md draws it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _layering() -> ModuleType:
    spec = importlib.util.spec_from_file_location("layering", ROOT / "scripts" / "layering.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["layering"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


layering = _layering()


def test_no_import_points_up_sideways_or_at_another_packages_private_name():
    found = layering.violations()
    assert not found, "imports breaking the layer order (scripts/layering.py):\n" + "\n".join(map(str, found))


def test_every_layer_names_a_module_that_exists():
    assert layering.stale_layers() == []


def test_every_module_of_the_library_has_a_layer():
    tops = {m.top for m in layering.modules()}
    assert tops <= set(layering.LAYER_OF), tops - set(layering.LAYER_OF)
    assert {"measure", "split", "engine", "profile", "plan", "cli"} <= tops


def _write(root: Path, files: dict[str, str]) -> Path:
    package = root / "src" / "locallearn"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_the_checker_names_each_kind_of_violation_with_its_line(tmp_path):
    package = _write(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "models/__init__.py": "from ..losses import cross_entropy\n",  # sideways: same layer
            "losses.py": "",
            "split.py": "import torch\n\nfrom .errors import ConfigError\nfrom .profile.costs import measure\n",
            "profile/__init__.py": "",
            "profile/costs.py": "from ..split import _hidden\nfrom . import _own\n",  # private across packages
            "profile/_own.py": "",
            "methods/__init__.py": (
                "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from ..engine.local import LocalEngine\n"
            ),
            "engine/__init__.py": "",
            "engine/local.py": "def f():\n    from locallearn.cli import main\n",  # inside a function, absolute
            "cli/__init__.py": "",
            "gadgets.py": "",
        },
    )
    found = {(v.path, v.line, v.kind) for v in layering.violations(package)}
    assert found == {
        ("src/locallearn/models/__init__.py", 1, "sideways"),
        ("src/locallearn/split.py", 4, "up"),
        ("src/locallearn/profile/costs.py", 1, "private"),
        ("src/locallearn/methods/__init__.py", 4, "up"),
        ("src/locallearn/engine/local.py", 2, "up"),
        ("src/locallearn/gadgets.py", 1, "unplaced"),
    }  # fmt: skip
    shown = [str(v) for v in layering.violations(package) if v.path.endswith("split.py")]
    assert shown == [
        "src/locallearn/split.py:4: from .profile.costs import measure  <- points up: split (layer 4) imports profile "
        "(layer 10)"
    ]
