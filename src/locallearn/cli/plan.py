"""`locallearn plan`: fit a run to a memory budget before training it.

`--budget 12GiB` (or `auto`: the memory the device has free) answers with the smallest K whose predicted peak
fits, its memory-balanced split, the predicted peak of every stage and the FLOP overhead; where the aux nets
are what does not fit, the lighter aux choice that fits at a smaller K; when nothing fits, the smallest peak
reachable and what dominates it. With `--K N` it answers the other way: the largest batch that fits at that
K. The backbone is measured once on small batches and every candidate is priced from those measurements, so a
query takes seconds. Exit status 0 when something fits, 1 when nothing does.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time

from .config_flags import add_config_flags, command_words, config_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="choose K (or the batch size) that fits a memory budget")
    add_config_flags(p)
    p.add_argument("--budget", required=True, help="memory to fit in: 12GiB, 500MB, or auto (free on the device)")
    p.add_argument("--num-classes", type=int, default=None, help="label count (default: the dataset's, else 10)")
    p.add_argument("--max-K", dest="max_k", type=int, default=None, help="largest K to consider (default 16)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..engine.trainer import resolve_device
    from ..errors import ConfigError
    from ..plan.apply import run_spec
    from ..plan.budget import resolve_budget
    from ..plan.predict import MemoryPredictor
    from ..plan.report import batch_report, k_report
    from ..plan.search import BALANCED, DEFAULT_MAX_K, largest_batch, smallest_k
    from ..split import split_request

    start = time.perf_counter()
    cfg = config_from_args(args)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    max_k = DEFAULT_MAX_K if args.max_k is None else args.max_k
    if max_k < 1:
        raise ConfigError(f"--max-K must be at least 1, got {max_k}")
    device = resolve_device(cfg.device)
    budget = resolve_budget(args.budget, device)
    predictor = MemoryPredictor(cfg, run_spec(cfg, args.image_size, args.num_classes))
    if args.K is not None:
        plan = largest_batch(predictor, cfg.K, split_request(cfg.split, cfg.cuts) or BALANCED, budget)
        report = batch_report(plan)
    else:
        plan = smallest_k(predictor, budget, cfg.batch_size, max_k)
        report = k_report(plan, _train_command(args))
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({**plan.to_dict(), "device": str(device), "seconds": round(seconds, 2)}, indent=2))
    else:
        print(f"{report}\n({seconds:.1f}s, device {device})")
    return 0 if plan.fits else 1


def _train_command(args: argparse.Namespace) -> str:
    """This query's recipe and flags as a `locallearn train` command (K and split are appended by the report)."""
    return shlex.join(["locallearn", "train", *command_words(args, skip=("K", "split"))])
