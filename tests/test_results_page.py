"""docs/results.md opens with the summary that benchmarks/summary.py computes from the committed result files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_results_page_opens_with_the_summary_of_the_result_files():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("summary", ROOT / "benchmarks" / "summary.py")
        summary = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(summary)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    page = (ROOT / "docs" / "results.md").read_text()
    table = summary.summary()
    assert table in page
    assert page.index(table) < page.index("## 1.")
