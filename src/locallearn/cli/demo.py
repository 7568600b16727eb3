"""`locallearn demo`: E2E vs local learning on the bundled CIFAR-10 sample, side by side, with a plot."""

from __future__ import annotations

import argparse
from pathlib import Path

DEMO_METHODS = ("e2e", "greedy", "infopro")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train E2E and local methods on the bundled sample and compare them")
    p.add_argument("--out", default="demo_out", help="folder for the runs, results.json and demo.png")
    p.add_argument("--methods", default=",".join(DEMO_METHODS), help="comma-separated method list")
    p.add_argument("--arch", default="resnet32")
    p.add_argument("--K", type=int, default=4)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from ..config import build_config
    from ..engine.checkpoint import write_json, write_text
    from ..engine.trainer import Trainer
    from ..methods import parse_method
    from .report import plot_histories, summary_table

    out = Path(args.out)
    summaries, histories = [], {}
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        cfg = build_config(
            flags=dict(
                arch=args.arch,
                method=method,
                K=args.K,
                dataset="cifar10-sample",
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                train_limit=args.train_limit,
                # InfoPro's released ResNet-32 K=4 lambdas (reconstruction 6 -> 1, task 0 -> 2)
                method_options=dict(ixx_1=6.0, ixy_1=0.0, ixx_2=1.0, ixy_2=2.0)
                if parse_method(method).objective == "infopro"
                else {},
            )
        )
        print(f"== {method} (K={cfg.K}) ==", flush=True)
        trainer = Trainer(cfg, out / cfg.spec.slug, progress=not args.no_progress)
        summaries.append(trainer.fit())
        histories[method] = trainer.history
    table = summary_table(summaries)
    print()
    print(table)
    write_json(out / "results.json", summaries)
    write_text(out / "results.md", table + "\n")
    plot = plot_histories(histories, summaries, out / "demo.png")
    print(f"\nwrote {out / 'results.json'}, {out / 'results.md'} and {plot}")
    return 0
