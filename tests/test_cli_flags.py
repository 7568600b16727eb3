"""The CLI's config flags are generated from RunConfig: names, types and help come from its fields.

The flag set of every subcommand is frozen here, so that adding or removing a flag is a deliberate change:
update the lists below in the same commit.
"""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from locallearn.cli import build_parser
from locallearn.cli.config_flags import command_words, config_flags, config_from_args
from locallearn.config import RunConfig
from locallearn.fielddocs import field_docs
from sweep import build_parser as sweep_parser

CONFIG_FLAGS = [
    "--K", "--activation-checkpoint", "--amp", "--arch", "--batch-size", "--channels-last", "--checkpoint-every",
    "--compile", "--config", "--cuts", "--data-dir", "--dataset", "--device", "--download", "--engine", "--epochs",
    "--eval-batch-size", "--image-size", "--log-every", "--lr", "--method", "--milestones", "--momentum",
    "--nesterov", "--no-channels-last", "--no-compile", "--no-download", "--no-nesterov", "--no-return-freed-memory",
    "--no-zero-init-residual", "--optimizer", "--return-freed-memory", "--schedule", "--seed", "--set", "--split",
    "--test-limit", "--threads", "--train-limit", "--warmup-epochs", "--weight-decay", "--workers",
    "--zero-init-residual",
]  # fmt: skip
OWN_FLAGS = {
    "train": [
        "--json", "--memory-budget", "--no-progress", "--out", "--resume", "--skip-memory-check", "--stop-after-epoch",
    ],
    "profile": ["--json", "--meter", "--name", "--num-classes", "--out", "--warmup-steps"],
    "plan": ["--budget", "--json", "--max-K", "--num-classes"],
}  # fmt: skip
STANDALONE = {
    "eval": ["--data-dir", "--device", "--json"],
    "list": [],
    "bench": [],  # moved to benchmarks/sweep.py: it only names its replacement
    "demo": ["--K", "--arch", "--batch-size", "--epochs", "--lr", "--methods", "--no-progress", "--out", "--seed",
             "--train-limit"],
}  # fmt: skip


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def flags(p: argparse.ArgumentParser) -> list[str]:
    return sorted(o for a in p._actions for o in a.option_strings if o not in ("-h", "--help"))


def test_every_subcommand_has_its_frozen_flag_set():
    parsers = subparsers()
    assert set(parsers) == set(OWN_FLAGS) | set(STANDALONE)
    for name, own in OWN_FLAGS.items():
        assert flags(parsers[name]) == sorted(CONFIG_FLAGS + own), name
    for name, expected in STANDALONE.items():
        assert flags(parsers[name]) == sorted(expected), name


def test_every_top_level_field_has_a_flag_whose_help_is_its_docstring():
    nested = {"method_options", "pipeline", "log"}
    fields = [f.name for f in dataclasses.fields(RunConfig)]
    assert [c.dest for c in config_flags()] == [n for n in fields if n not in nested]
    docs = field_docs(RunConfig)
    actions = {a.dest: a for a in subparsers()["train"]._actions}
    for c in config_flags():
        assert docs[c.dest], f"RunConfig.{c.dest} has no docstring: its flag would have no help"
        assert actions[c.dest].help == docs[c.dest].replace("%", "%%")
    set_help = actions["overrides"].help
    assert all(f"{n}." in set_help for n in nested) and "mlaan_window" in set_help and "heartbeat_timeout" in set_help


def test_generated_flags_fill_the_config_with_their_fields_types():
    args = build_parser().parse_args(
        ["train", "--momentum", "0.5", "--no-nesterov", "--milestones", "0.3", "0.6", "--threads", "2",
         "--compile", "--K", "3", "--split", "units:1,3"]
    )  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.momentum, cfg.nesterov, cfg.milestones, cfg.threads) == (0.5, False, [0.3, 0.6], 2)
    assert (cfg.compile, cfg.K, cfg.split) == (True, 3, "units:1,3")


def test_sweep_fields_take_comma_lists_and_a_bad_one_is_a_usage_error(capsys):
    args = build_parser().parse_args(
        ["profile", "--method", "e2e, greedy", "--K", "2,4", "--config", "a.yaml", "b.yaml"]
    )
    assert (args.method, args.K, args.config) == (["e2e", "greedy"], [2, 4], ["a.yaml", "b.yaml"])
    with pytest.raises(SystemExit) as e:
        sweep_parser().parse_args(["--seed", "0,x"])
    assert e.value.code == 2 and "expected int values separated by commas, got '0,x'" in capsys.readouterr().err


def test_command_words_rebuild_the_same_config():
    words = ["--arch", "resnet8", "--no-nesterov", "--milestones", "0.3", "0.6", "--set", "method_options.ixx_1=2"]
    args = build_parser().parse_args(["plan", "--budget", "1GiB", "--K", "2", *words])
    again = build_parser().parse_args(["train", *command_words(args, skip=("K",))])
    assert command_words(args, skip=("K",)) == words
    assert config_from_args(again).to_dict() == {**config_from_args(args).to_dict(), "K": RunConfig().K}
