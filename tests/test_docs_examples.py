"""Every Python example in the README and docs/ runs exactly as printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[tuple[str, str]]:
    blocks = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, code in enumerate(BLOCK.findall(doc.read_text())):
            blocks.append((f"{doc.relative_to(ROOT)}#{i}", code))
    return blocks


def test_the_readme_has_a_python_example():
    assert any(name.startswith("README.md") for name, _ in python_blocks())


@pytest.mark.parametrize(("name", "code"), python_blocks(), ids=[name for name, _ in python_blocks()])
def test_example_runs_as_printed(name, code):
    exec(compile(code, name, "exec"), {"__name__": "__example__"})
