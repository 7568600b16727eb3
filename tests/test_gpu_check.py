"""benchmarks/gpu_check.py: the commands of docs/gpu.md run as printed (the whole check at toy sizes on the CPU),
the GPU machine's command is one the script accepts, and a missing subset or a failed test is reported."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402  (a script of benchmarks/, importable once that folder is on the path)

DOC = ROOT / "docs" / "gpu.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def printed_command(needle: str) -> str:
    (line,) = [line for block in blocks("bash") for line in block.splitlines() if needle in line]
    return line


def test_the_tiny_check_of_the_docs_runs_every_part():
    line = printed_command("--tiny")
    out = ROOT / shlex.split(line)[shlex.split(line).index("--out") + 1]
    shutil.rmtree(out, ignore_errors=True)  # an ignored scratch folder: only this run's files are read
    done = subprocess.run(line, shell=True, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = out.glob("gpu_check_*.json")
    rows = json.loads(result.read_text())
    assert {r["part"] for r in rows} == {"correctness", "memory", "accuracy"}  # no part failed or was skipped
    (tests,) = [r for r in rows if r["part"] == "correctness"]
    assert tests["exit_code"] == 0 and tests["tests"] == tests["skipped"] > 0  # no CUDA here: all skip
    memory = {(r["group"], r["label"]): r for r in rows if r["part"] == "memory"}
    cases = [("resnet110", c) for c in gpu_check.RESNET110] + [
        ("resnet101", c) for c in gpu_check.IMAGENET["resnet101"]
    ]
    assert memory.keys() == {(group, case.label) for group, case in cases}
    star = memory["resnet110", "InfoPro* K=2"]
    assert star["ratio"] > 0 and star["paper_ratio"] == pytest.approx(5.38 / 9.40)
    assert star["config"]["amp"] == "none" and star["git_sha"] and star["device"] == "cpu"
    checkpointing = memory["resnet110", "E2E + activation checkpointing"]
    assert "peak_bytes" in checkpointing or "unknown key 'checkpoint'" in checkpointing["skipped"]
    trained = [r for r in rows if r["part"] == "accuracy"]
    assert [r["label"] for r in trained] == [c.label for c in gpu_check.ACCURACY]
    assert len({r["config"]["epochs"] for r in trained}) == 1 and all(0 <= r["test_acc"] <= 1 for r in trained)
    assert [r["method"] for r in trained][-2:] == ["dgl+man", "infopro:contrast+man"]
    report = result.with_suffix(".md").read_text()
    assert "## 2. Memory and step time vs E2E" in report and "| InfoPro* K=2 | 2 |" in report


def test_the_gpu_command_of_the_docs_is_one_the_script_accepts():
    line = printed_command("--time-limit 450")
    parsed = gpu_check.parse_args(shlex.split(line.split("benchmarks/gpu_check.py", 1)[1]))
    assert parsed.device == "cuda" and not parsed.tiny and parsed.part is None
    assert parsed.data_dir == ROOT / "data" / "cifar10-subset"  # the subset the docs copy beside the checkout
    assert parsed.time_limit == 450
    commit_file = "data/cifar10-subset/source_commit"
    assert commit_file in printed_command("LOCALLEARN_GIT_SHA=") and f"> {commit_file}" in printed_command(
        "git rev-parse"
    )


@pytest.mark.slow
def test_the_subset_command_of_the_docs_writes_the_subset():
    if not (ROOT.parent / "shared" / "data" / "cifar-10-python.tar.gz").is_file():
        pytest.skip("needs ../shared/data/cifar-10-python.tar.gz beside the checkout")
    done = subprocess.run(printed_command("make_cifar_subset.py"), shell=True, cwd=ROOT)
    assert done.returncode == 0 and (gpu_check.SUBSET_DIR / "cifar10_subset.npz").is_file()


def test_a_missing_subset_stops_the_check_before_it_starts(tmp_path, capsys):
    code = gpu_check.main(["--out", str(tmp_path / "out"), "--device", "cpu", "--data-dir", str(tmp_path)])
    assert code == 2 and not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cifar10_subset.npz" in err and "make_cifar_subset.py" in err


def test_a_junit_report_is_summarised_with_its_failures(tmp_path):
    xml = tmp_path / "report.xml"
    xml.write_text(
        '<testsuites><testsuite tests="4" failures="1" errors="1" skipped="1">'
        '<testcase name="test_a"/><testcase name="test_b"><failure message="assert 1 == 2&#10;more"/></testcase>'
        '<testcase name="test_c"><error message="CUDA out of memory"/></testcase>'
        '<testcase name="test_d"><skipped message="needs CUDA"/></testcase></testsuite></testsuites>'
    )
    summary = gpu_check.junit_summary(xml)
    assert (summary["passed"], summary["failures"], summary["errors"], summary["skipped"]) == (1, 1, 1, 1)
    assert summary["failed_tests"] == [
        {"test": "test_b", "message": "assert 1 == 2"},
        {"test": "test_c", "message": "CUDA out of memory"},
    ]
