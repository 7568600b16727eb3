"""Host memory of a CPU run: huge pages asked for before the first tensor; freed memory returned only when asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from locallearn.config import build_config
from locallearn.engine import host_memory, trainer

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.mark.parametrize(
    ("asked", "batch", "fixed"), [(False, 1024, False), (True, 8, True), (None, 8, False), (None, 512, True)]
)
def test_a_run_fixes_the_mmap_threshold_when_asked_or_at_large_batches(monkeypatch, asked, batch, fixed):
    calls = []
    monkeypatch.setattr(host_memory, "return_freed_memory", lambda: calls.append(True))
    flags = {"arch": "resnet8", "method": "greedy", "K": 2, "device": "cpu", "train_limit": 8, "test_limit": 8}
    trainer.build_run(build_config(None, {**flags, "return_freed_memory": asked, "batch_size": batch}))
    assert calls == ([True] if fixed else [])


HUGE_PAGE_PROBE = """
from locallearn.engine.host_memory import ask_for_huge_pages
ask_for_huge_pages()
import torch
x = torch.ones(16 * 1024**2 // 4)  # 16 MiB, touched
print(next(int(l.split()[1]) for l in open("/proc/self/smaps_rollup") if l.startswith("AnonHugePages")))
"""


@pytest.mark.skipif(
    not THP.exists() or "[never]" in THP.read_text(), reason="the kernel gives no transparent huge pages"
)
@pytest.mark.parametrize("setting", [None, "0"])
def test_large_tensors_get_huge_pages_unless_the_user_declines(setting):
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH")]))
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    out = subprocess.run([sys.executable, "-c", HUGE_PAGE_PROBE], env=env, capture_output=True, text=True, check=True)
    huge_kib = int(out.stdout.strip())
    assert (huge_kib >= 2048) if setting is None else (huge_kib == 0)
