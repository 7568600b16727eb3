"""`locallearn profile`: memory per stage and in total, FLOPs, and the ratio to E2E, for one step of each run.

Takes the flags of `train`, where `--config`, `--method` and `--K` may list several values: every
combination is profiled (e.g. `--method greedy,dgl,infopro --K 2,4,8,16`), each next to E2E on the same
synthetic batch. `--json` prints one object per run; `--out` also writes JSON/CSV/Markdown with provenance.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

from ..config import RunConfig
from ..errors import ConfigError
from .config_flags import add_config_flags, config_from_args


def add_sweep_flags(p: argparse.ArgumentParser, sweep: tuple[str, ...] = ("method", "K")) -> None:
    """The config flags of `train`, with comma lists for the swept fields, and the result-file prefix."""
    add_config_flags(p, sweep)
    p.add_argument("--name", default=None, help="result file prefix (default: the command's name)")


def expand_configs(args: argparse.Namespace, seeds: list[int] | None = None) -> list[RunConfig]:
    """Every combination of recipes x methods x K (x seeds) as a resolved RunConfig, duplicates dropped."""
    combos = itertools.product(args.config or [None], args.method or [None], args.K or [None], seeds or [args.seed])
    cfgs: dict[str, RunConfig] = {}
    for recipe, method, k, seed in combos:
        single = argparse.Namespace(**{**vars(args), "config": recipe, "method": method, "K": k, "seed": seed})
        cfg = config_from_args(single)
        cfgs.setdefault(json.dumps(cfg.to_dict(), sort_keys=True), cfg)  # e2e forces K = 1: once per seed
    return list(cfgs.values())


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="memory, FLOPs and peak vs E2E of one training step, per stage")
    add_sweep_flags(p)
    p.add_argument("--out", default=None, help="also write <name>_<hardware>_<yyyymm>.json/.csv/.md here")
    p.add_argument("--num-classes", type=int, default=None, help="label count (default: the dataset's, else 10)")
    p.add_argument("--warmup-steps", type=int, default=1, help="steps run before the measured one")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per run")
    p.add_argument(
        "--meter",
        choices=("allocator", "rss"),
        default="allocator",
        help="rss: also run every config (and its E2E) in a fresh process and set the resident-memory growth of "
        "its steps beside the profile's figure (CPU, Linux)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from ..engine.trainer import resolve_device
    from ..profile.compare import compare_runs
    from ..profile.probe import input_spec
    from ..profile.results import result_stem, write_results
    from ..profile.rss import add_rss
    from ..profile.tables import profile_report
    from ..provenance import provenance

    if args.warmup_steps < 0:
        raise ConfigError(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    cfgs = expand_configs(args)
    if args.meter == "rss" and any(resolve_device(cfg.device).type != "cpu" for cfg in cfgs):
        raise ConfigError("--meter rss measures host memory; add --device cpu (on CUDA the profile is the allocator's)")
    if cfgs[0].threads:
        torch.set_num_threads(cfgs[0].threads)
    runs = [(cfg, input_spec(cfg.dataset, args.image_size, args.num_classes)) for cfg in cfgs]
    rows = [
        {**row, "config": cfg.to_dict(), **provenance(resolve_device(cfg.device))}
        for row, cfg in zip(compare_runs(runs, args.warmup_steps), cfgs, strict=True)
    ]
    if args.meter == "rss":
        rows = add_rss(rows, cfgs, args.image_size, args.warmup_steps)
    report = profile_report(rows)
    print(json.dumps(rows, indent=2) if args.json else report)
    if args.out:
        stem = result_stem(args.name or "profile", resolve_device(cfgs[0].device))
        paths = write_results(rows, args.out, stem, report)
        print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0
