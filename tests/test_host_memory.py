"""Returning freed host memory is a run setting: off by default (it costs page faults), on when asked."""

from __future__ import annotations

import pytest

from locallearn.config import build_config
from locallearn.engine import trainer


@pytest.mark.parametrize("asked", [False, True])
def test_a_run_fixes_the_mmap_threshold_only_when_asked(monkeypatch, asked):
    calls = []
    monkeypatch.setattr(trainer, "return_freed_memory", lambda: calls.append(True) or True)
    flags = {"arch": "resnet8", "method": "greedy", "K": 2, "device": "cpu", "train_limit": 8, "test_limit": 8}
    trainer.build_run(build_config(None, {**flags, "return_freed_memory": asked}))
    assert calls == ([True] if asked else [])
