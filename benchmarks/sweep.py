"""Sweeps written under benchmarks/results/ as JSON, CSV, Markdown and plots: `python benchmarks/sweep.py ...`.

Takes the flags of `locallearn profile` (lists for `--config`, `--method`, `--K`) and `--seed 0,1,2`.
`--mode sweep` (default): for each method x K x seed, train for the config's budget (`--epochs`,
`--train-limit`) and record test error, training throughput (images/s, warm-up excluded) and peak memory
next to E2E. The runs live in `<out>/tmp/runs/<name>/`: one trained earlier with the same config is reused
(`--rerun` retrains) and an interrupted one resumes, so a long sweep can be stopped and started again. A run
recorded in an earlier `<out>/<name>_<hardware>_<yyyymm>.json` is not trained again either, so a sweep goes on
from its committed results; `--collect` tabulates the runs finished so far without training. A sweep of some
of a result file's runs (one `--method`, say) rewrites their rows and keeps the others.
`--mode overhead`: the wall-time overhead of each method over E2E on the same device, timed in alternating
rounds in one process, beside the theoretical (FLOPs) overhead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from _plots import plot_vs_k
from _results import earlier_rows, read_rows
from _sweep import merge_rows, overhead, sweep
from _tables import overhead_table, sweep_table
from locallearn.cli.profile import add_sweep_flags, expand_configs
from locallearn.engine.trainer import resolve_device
from locallearn.errors import LocalLearnError
from locallearn.profile.results import result_stem, write_results

DEFAULT_OUT = "benchmarks/results"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/sweep.py", description=__doc__.splitlines()[0])
    add_sweep_flags(p, sweep=("method", "K", "seed"))
    p.add_argument("--mode", choices=("sweep", "overhead"), default="sweep")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    p.add_argument("--no-train", action="store_true", help="sweep: skip training (throughput and memory only)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per run (overhead: per round)")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--rounds", type=int, default=3, help="overhead: alternating timing rounds")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--rerun",
        action="store_true",
        help="sweep: train every run again (default: reuse recorded or finished runs, resume interrupted ones)",
    )
    p.add_argument(
        "--collect", action="store_true", help="sweep: train nothing, tabulate the runs finished so far (others: -)"
    )
    return p


def run(args: argparse.Namespace) -> int:
    cfgs = expand_configs(args, seeds=args.seed)
    if cfgs[0].threads:
        torch.set_num_threads(cfgs[0].threads)
    out = Path(args.out)
    device = resolve_device(cfgs[0].device)
    stem = result_stem(args.name or args.mode, device)
    if args.mode == "overhead":
        rows = overhead(cfgs, steps=args.steps, rounds=args.rounds, warmup=args.warmup_steps)
        table = overhead_table(rows)
        paths = write_results(rows, out, stem, table)
    else:
        # Read before training, so that a damaged file stops the sweep before hours are spent on it.
        kept = read_rows(out / f"{stem}.json", ignore_damaged=args.rerun)
        rows = sweep(
            cfgs,
            out / "tmp" / "runs" / (args.name or args.mode),
            train=not args.no_train,
            steps=args.steps,
            warmup=args.warmup_steps,
            progress=not args.no_progress,
            rerun=args.rerun,
            collect=args.collect,
            earlier=[] if args.rerun else earlier_rows(out, args.name or args.mode, device),
        )
        rows = merge_rows(kept, rows, cfgs)
        table = sweep_table(rows)
        paths = write_results(rows, out, stem, table)
        plots = [
            plot_vs_k(rows, lambda r: r.get("error"), "test error (%)", out / f"{stem}_error.png"),
            plot_vs_k(rows, lambda r: 100 * r["ratio"], "peak memory (% of E2E)", out / f"{stem}_memory.png", 100.0),
        ]
        paths += [p for p in plots if p is not None]
    print(table)
    print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run a sweep; a user error prints one line and returns 2, like the `locallearn` commands."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except LocalLearnError as e:
        print(f"sweep: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
