"""Peak resident memory, step time and where the time goes: E2E and InfoPro (contrast) K = 16 on ResNet-32,
CIFAR-10 shapes, batch 1024, on CPU.

Every configuration runs in a fresh process (`locallearn.profile.rss`): its peak resident size is the process's
high-water mark over a warm-up step and the timed steps, as a user watching `top` sees it. Rounds alternate
the order of the two configurations, and every ratio is taken within one round, on a CPU whose load drifts.
A last fresh process per configuration profiles one step for the per-part time breakdown
(`locallearn.profile.breakdown`). Writes benchmarks/results/step_cost_resnet32_k16[_<label>]_<hardware>_<yyyymm>.*

    python benchmarks/step_cost.py --threads 2 --rounds 2 [--label before]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from _results import read_rows
from _run import RESULTS, ROOT, publish, recipe
from locallearn.config import build_config
from locallearn.profile.breakdown import PARTS
from locallearn.profile.tables import format_bytes, markdown_table

KINDS = ("rss", "breakdown")  # fresh processes timed with their peak RSS; one profiled step per run
RECIPES = {"e2e": "cifar10/resnet32_e2e.yaml", "infopro K=16": "cifar10/resnet32_infopro_k16.yaml"}


def breakdown_in_fresh_process(cfg_dict: dict, warmup: int) -> dict[str, float]:
    request = json.dumps({"config": cfg_dict, "warmup": warmup})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, __file__, "--breakdown-worker"], input=request, capture_output=True,
                         text=True, env=env, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def breakdown_worker() -> None:
    """One profiled step after `warmup` steps, in this (fresh) process; prints the parts as JSON."""
    from locallearn.profile.breakdown import step_breakdown
    from locallearn.profile.rss import build_here

    request = json.loads(sys.stdin.read())
    engine, x, y = build_here(request["config"])  # as the run would, so that the parts are those of its step
    for _ in range(request["warmup"]):
        engine.train_step(x, y)
    print(json.dumps(step_breakdown(engine, x, y)))


def measure(args: argparse.Namespace, kinds: tuple[str, ...]) -> list[dict]:
    import torch

    from locallearn.profile.rss import measure_rss
    from locallearn.provenance import provenance

    torch.set_num_threads(args.threads)
    flags = {"batch_size": args.batch_size, "device": "cpu", "threads": args.threads}
    if args.return_freed_memory is not None:
        flags["return_freed_memory"] = args.return_freed_memory == "true"
    cfgs = {name: build_config(recipe(path), flags) for name, path in RECIPES.items()}
    base = provenance(torch.device("cpu"))
    rows = []
    for r in range(args.rounds if "rss" in kinds else 0):
        order = list(cfgs) if r % 2 == 0 else list(reversed(cfgs))
        for name in order:
            m = measure_rss(cfgs[name], warmup=args.warmup_steps, steps=args.steps)
            print(f"round {r + 1} {name}: peak {format_bytes(m.peak_bytes)}, steps {m.step_seconds}", file=sys.stderr)
            measured = {"built_bytes": m.built_bytes, "peak_bytes": m.peak_bytes, "growth_bytes": m.growth_bytes}
            timed = {"step_seconds": statistics.median(m.step_seconds), "all_step_seconds": m.step_seconds}
            rows.append({"kind": "rss", "round": r + 1, "run": name, **measured, **timed, **base})
            rows[-1]["config"] = cfgs[name].to_dict()
    for name, cfg in cfgs.items() if "breakdown" in kinds else ():
        parts = breakdown_in_fresh_process(cfg.to_dict(), args.warmup_steps)
        print(f"breakdown {name}: {parts}", file=sys.stderr)
        rows.append({"kind": "breakdown", "run": name, **parts, "config": cfg.to_dict(), **base})
    return rows


def seconds(row: dict) -> float:
    return statistics.median(row["all_step_seconds"])


def tables(rows: list[dict]) -> str:
    """Per round: peak RSS and step time of each run and K = 16's ratios to E2E; then the time breakdown."""
    body = []
    for r in sorted({row["round"] for row in rows if row["kind"] == "rss"}):
        e2e = next(x for x in rows if x["kind"] == "rss" and x["round"] == r and x["run"] == "e2e")
        for x in (x for x in rows if x["kind"] == "rss" and x["round"] == r):
            memory = [format_bytes(x["built_bytes"]), format_bytes(x["peak_bytes"])]
            memory.append(f"{100 * x['peak_bytes'] / e2e['peak_bytes']:.1f}%")
            body.append([r, x["run"], *memory, f"{seconds(x):.2f}", f"{seconds(x) / seconds(e2e):.2f}x"])
    headers = ["round", "run", "RSS built", "peak RSS", "peak / E2E's", "s / step", "step / E2E's"]
    parts = [markdown_table(headers, body)]
    breakdowns = [x for x in rows if x["kind"] == "breakdown"]
    if breakdowns:
        body = [[part, *(f"{x[part]:.2f}" for x in breakdowns)] for part in (*PARTS, "profiled step")]
        parts += ["", markdown_table(["seconds in one profiled step", *(x["run"] for x in breakdowns)], body)]
    return "\n".join(parts)


def main() -> int:
    import torch

    from locallearn.profile.results import result_stem

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--breakdown-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=2, help="timed steps per process, after the warm-up")
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--return-freed-memory", choices=("true", "false"), default=None, help="run both with this setting")
    p.add_argument("--label", default=None, help="a suffix of the result files' name, e.g. before")
    p.add_argument("--tables-only", action="store_true", help="rewrite the Markdown from the JSON, measure nothing")
    p.add_argument(
        "--only", choices=KINDS, default=None, help="measure only this kind of row, keep the result file's others"
    )
    args = p.parse_args()
    if args.breakdown_worker:
        breakdown_worker()
        return 0
    torch.set_num_threads(args.threads)
    name = "step_cost_resnet32_k16" + (f"_{args.label}" if args.label else "")
    stem = result_stem(name, torch.device("cpu"))
    path = RESULTS / f"{stem}.json"
    kept = read_rows(path)
    if args.tables_only:
        rows = kept
    else:
        kinds = (args.only,) if args.only else KINDS
        rows = [*(row for row in kept if row["kind"] not in kinds), *measure(args, kinds)]
    publish(rows, stem, tables(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
