"""The papers' learning-rate schedules."""

from __future__ import annotations

import math

import pytest

from locallearn.engine.schedule import lr_at


def test_cosine_with_the_ten_epoch_blend():
    lr0, epochs = 0.8, 160
    assert lr_at(0, epochs, lr0) == pytest.approx(0.01)  # e = 1: all of the 0.01 start
    e = 5
    cos = 0.5 * lr0 * (1 + math.cos(math.pi * e / epochs))
    assert lr_at(e - 1, epochs, lr0) == pytest.approx(cos * (e - 1) / 10 + 0.01 * (11 - e) / 10)
    e = 11
    assert lr_at(e - 1, epochs, lr0) == pytest.approx(0.5 * lr0 * (1 + math.cos(math.pi * e / epochs)))
    assert lr_at(epochs - 1, epochs, lr0) == pytest.approx(0.0, abs=1e-12)


def test_step_schedule_decays_at_half_and_three_quarters():
    assert [lr_at(e, 160, 0.1, "step") for e in (0, 79, 80, 119, 120)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
