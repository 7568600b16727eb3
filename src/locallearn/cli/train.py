"""`locallearn train`: a recipe and/or flags -> a trained run directory with summary.json."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..config import RunConfig
from ..errors import ConfigError
from .config_flags import add_config_flags, config_from_args
from .evaluate import announce_user_code


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a network with a local-learning method")
    add_config_flags(p)
    p.add_argument("--out", default=None, help="run directory (default runs/<dataset>_<arch>_<method>_k<K>_s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--json", action="store_true", help="print summary.json on stdout")
    p.add_argument(
        "--stop-after-epoch",
        type=int,
        default=None,
        metavar="N",
        help="stop after epoch N (continue later with --resume), e.g. on a time-sliced machine",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--memory-budget",
        default=None,
        metavar="SIZE",
        help="choose K and a memory-balanced split that fit SIZE (e.g. 12GiB, or auto: free memory); see `plan`",
    )
    p.add_argument(
        "--skip-memory-check",
        action="store_true",
        help="train even when the predicted peak exceeds the memory available",
    )


def default_out(cfg: RunConfig) -> Path:
    return Path("runs") / f"{cfg.dataset}_{cfg.arch.replace(':', '-')}_{cfg.spec.slug}_k{cfg.K}_s{cfg.seed}"


def schedule_line(cfg: RunConfig, shown: int = 4) -> str:
    """The learning rates of the first epochs, printed at start so that a short run's LR is never a surprise."""
    from ..engine.trainer import epoch_lr

    n = min(shown, cfg.epochs)
    lrs = ", ".join(f"{epoch_lr(cfg, e):.4g}" for e in range(n)) + (", ..." if cfg.epochs > n else "")
    return f"lr per epoch ({cfg.schedule} schedule, {cfg.epochs} epoch{'s' * (cfg.epochs > 1)}): {lrs}"


def run(args: argparse.Namespace) -> int:
    from ..engine.checkpoint import CHECKPOINT, load_checkpoint
    from ..engine.pipeline.run import DistributedTrainer, launched
    from ..engine.run_dir import prepare_run_dir
    from ..engine.trainer import Trainer, check_stop_after
    from ..plan.apply import prepare

    check_stop_after(args.stop_after_epoch)
    out = Path(args.out) if args.out else None
    record = None  # the checkpoint --resume continues: tensors and plain data only (see load_checkpoint)
    if args.resume:
        out = out or default_out(config_from_args(args))
        # Without the file (a rank on a node that does not hold last.pt) the config is the flags';
        # prepare_run_dir on rank 0 says when there is nothing to resume.
        if (out / CHECKPOINT).is_file():
            record = load_checkpoint(out / CHECKPOINT, assemble=False)
    cfg = config_from_args(args, record["config"] if record else None)
    speaks = os.environ.get("RANK", "0") == "0"  # under torchrun, one rank speaks for all
    if speaks and record is not None and record["config"].get("arch") == cfg.arch:  # perhaps someone else's run's
        announce_user_code(cfg.arch)  # before the memory check below builds the model
    if args.memory_budget is not None and args.resume:
        raise ConfigError("--memory-budget chooses K for a new run; drop it with --resume (the run keeps its K)")
    cfg = prepare(cfg, args.memory_budget, check=not args.skip_memory_check)
    out = out or default_out(cfg)
    progress = not args.no_progress
    with launched(cfg) as world:  # torch.distributed under torchrun; None in a single process
        if speaks:
            prepare_run_dir(out, resume=args.resume)
            if not args.json:
                print(schedule_line(cfg), flush=True)
        if world is None:
            trainer = Trainer(cfg, out, progress=progress)
        else:
            trainer = DistributedTrainer(cfg, out, world=world, progress=progress)
        if args.resume:
            trainer.resume()
        summary = trainer.fit(stop_after=args.stop_after_epoch)
    if summary is not None:
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            print(
                f"test_acc {summary['test_acc']:.4f}  ({summary['method']}, K={summary['K']}, "
                f"{summary['epochs']} epochs, {summary['seconds']:.1f}s)  -> {out}/summary.json"
            )
    return 0
