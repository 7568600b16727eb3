"""`locallearn eval`: test accuracy (final and per stage) of a trained run directory."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def announce_user_code(arch: str) -> None:
    """Say on stderr which module a run's config makes us import: importing it runs its code."""
    from ..models import user_module

    module = user_module(arch)
    if module:
        print(
            f"locallearn: importing module '{module}' for the run's arch {arch} (this runs its code: use only "
            "runs and modules you trust)",
            file=sys.stderr,
            flush=True,
        )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a trained run on its test set")
    p.add_argument("run_dir", help="a run directory written by `locallearn train` (holds last.pt)")
    p.add_argument("--data-dir", default=None, help="override the dataset folder saved with the run")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from ..config import config_from_dict
    from ..engine.checkpoint import CHECKPOINT, load_checkpoint
    from ..engine.local import evaluate
    from ..engine.trainer import build_run, resolve_amp
    from ..errors import ConfigError

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a folder; pass a run directory written by `locallearn train`")
    ckpt = load_checkpoint(
        run_dir / CHECKPOINT, missing=f"{run_dir} is not a run directory: pass one written by `locallearn train`"
    )
    cfg = config_from_dict(ckpt["config"])
    if args.data_dir:
        cfg.data_dir = args.data_dir
    if args.device:
        cfg.device = args.device
    announce_user_code(cfg.arch)
    run_ = build_run(cfg)
    run_.learner.load_state_dict(ckpt["learner"])
    acc, stage_acc, loss = evaluate(run_.learner, run_.test_loader, resolve_amp(cfg.amp, run_.device))
    # `epoch`: the epochs completed; a checkpoint taken within the next one also says how many of its steps.
    result = {"test_acc": acc, "stage_acc": stage_acc, "test_loss": loss, "epoch": ckpt["epoch"] + 1}
    where = f"epoch {result['epoch']}"
    if "partial" in ckpt:
        result["step"] = ckpt["partial"]["step"]
        where += f" + {result['step']} steps"
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        stages = " ".join("-" if a is None else f"{a:.4f}" for a in stage_acc)
        print(f"test_acc {acc:.4f}  stage_acc [{stages}]  test_loss {loss:.4f}  ({where})")
    return 0
