"""`locallearn train`: a recipe and/or flags -> a trained run directory with summary.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import RunConfig, build_config
from ..errors import ConfigError

# flag -> RunConfig field, with the type argparse converts to
TRAIN_FLAGS: list[tuple[str, str, type]] = [
    ("--arch", "arch", str),
    ("--method", "method", str),
    ("--K", "K", int),
    ("--split", "split", str),
    ("--dataset", "dataset", str),
    ("--data-dir", "data_dir", str),
    ("--epochs", "epochs", int),
    ("--batch-size", "batch_size", int),
    ("--lr", "lr", float),
    ("--seed", "seed", int),
    ("--train-limit", "train_limit", int),
    ("--test-limit", "test_limit", int),
    ("--device", "device", str),
    ("--amp", "amp", str),
    ("--engine", "engine", str),
    ("--threads", "threads", int),
    ("--schedule", "schedule", str),
    ("--activation-checkpoint", "activation_checkpoint", str),
]


FIELD_HELP = {
    "arch": "backbone name or package.module:callable",
    "method": "e.g. greedy, dgl, infopro, infopro:softmax, infopro+man, e2e",
    "K": "number of gradient-isolated stages",
    "split": "table | balanced-memory | stem-merged | even | even-memory | [[s,b],...] | units:i,j",
    "dataset": "cifar10, cifar100, svhn, stl10, cifar10-sample (bundled) or imagenet (train/ + val/ folders)",
    "data_dir": "folder holding the dataset files as distributed (archive or extracted)",
    "train_limit": "use only the first N training images",
    "test_limit": "use only the first N test images",
    "device": "auto, cpu, cuda, cuda:N",
    "amp": "auto, none, bf16, fp16",
    "engine": "local or pipeline (under torchrun)",
    "activation_checkpoint": "none, per-unit or per-stage:J (E2E): recompute activations in backward",
    "schedule": "cosine (default), paper-cos (the CIFAR recipes' warm-up rule), step or const",
}


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """The flags that build a RunConfig; shared by train, profile and bench."""
    p.add_argument("--config", help="YAML recipe (see `locallearn list`)")
    for flag, dest, typ in TRAIN_FLAGS:
        p.add_argument(flag, dest=dest, type=typ, default=None, help=FIELD_HELP.get(dest))
    p.add_argument("--download", action="store_true", default=None, help="download the dataset if missing")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile each stage")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config field, e.g. --set method_options.ixx_1=5",
    )


def config_from_args(args: argparse.Namespace, base: dict | None = None) -> RunConfig:
    flags = {dest: getattr(args, dest) for _, dest, _ in TRAIN_FLAGS}
    flags["download"] = args.download
    flags["compile"] = args.compile
    return build_config(args.config, flags, args.overrides, base=base if args.config is None else None)


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


def default_out(cfg: RunConfig) -> Path:
    method = cfg.method.replace("+", "_").replace(":", "-")
    return Path("runs") / f"{cfg.dataset}_{cfg.arch.replace(':', '-')}_{method}_k{cfg.K}_s{cfg.seed}"


def run(args: argparse.Namespace) -> int:
    from ..engine.trainer import CHECKPOINT, Trainer

    saved = None
    if args.resume and args.out and (Path(args.out) / CHECKPOINT).is_file():
        import torch

        saved = torch.load(Path(args.out) / CHECKPOINT, map_location="cpu", weights_only=False)["config"]
    cfg = config_from_args(args, saved)
    out = Path(args.out) if args.out else default_out(cfg)
    if cfg.engine == "pipeline":
        from ..engine.pipeline import run_pipeline  # noqa: PLC0415  (only under torchrun)

        summary = run_pipeline(
            cfg, out, resume=args.resume, progress=not args.no_progress, stop_after=args.stop_after_epoch
        )
    else:
        if not args.resume and (out / CHECKPOINT).exists():
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        trainer = Trainer(cfg, out, progress=not args.no_progress)
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
