"""Learning-rate schedules: the default starts at the user's LR; the papers' rules are named."""

from __future__ import annotations

import math

import pytest

from locallearn.config import RunConfig
from locallearn.errors import ConfigError
from locallearn.schedule import lr_at


def test_paper_cos_is_the_cosine_with_the_ten_epoch_blend():
    lr0, epochs = 0.8, 160
    assert lr_at(0, epochs, lr0, "paper-cos") == pytest.approx(0.01)  # e = 1: all of the 0.01 start
    e = 5
    cos = 0.5 * lr0 * (1 + math.cos(math.pi * e / epochs))
    assert lr_at(e - 1, epochs, lr0, "paper-cos") == pytest.approx(cos * (e - 1) / 10 + 0.01 * (11 - e) / 10)
    e = 11
    assert lr_at(e - 1, epochs, lr0, "paper-cos") == pytest.approx(0.5 * lr0 * (1 + math.cos(math.pi * e / epochs)))
    assert lr_at(epochs - 1, epochs, lr0, "paper-cos") == pytest.approx(0.0, abs=1e-12)


def test_the_default_schedule_starts_at_the_users_lr_even_in_a_two_epoch_run():
    assert [lr_at(e, 2, 0.1) for e in (0, 1)] == pytest.approx([0.1, 0.05])


@pytest.mark.parametrize(("old", "new"), [("cos", "paper-cos"), ("cos0", "cosine")])
def test_a_renamed_schedule_is_refused_with_its_new_name(old, new):
    with pytest.raises(ConfigError, match=f"now called '{new}'"):
        RunConfig(schedule=old).validate()


def test_step_schedule_decays_at_half_and_three_quarters():
    assert [lr_at(e, 160, 0.1, "step") for e in (0, 79, 80, 119, 120)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
