"""The GPU check in one command: CUDA correctness, the papers' memory table and a short accuracy run.

    PYTHONPATH=src python benchmarks/gpu_check.py --out OUT            # on a CUDA machine, about 7 minutes
    PYTHONPATH=src python benchmarks/gpu_check.py --out OUT --device cpu --tiny   # every part at toy sizes

1. correctness: `pytest -m gpu tests/test_gpu.py` in a subprocess; its outcome per test is recorded.
2. memory: CUDA peak allocated (after a reset, around a warmed-up step) and median step time of each run next to
   E2E, in fp32 as the papers measured. ResNet-110, CIFAR-10 shapes, batch 1024: E2E, InfoPro* K = 2, 3, 4
   (InfoPro Table 3), Greedy SL and InfoPro K = 8, 16, and activation-checkpointed E2E
   (CHECKPOINTING). ResNet-101 and ResNet-152 at 224x224, batch 64: E2E, InfoPro K = 2, InfoPro + MAN K = 4.
3. accuracy: ResNet-32 on the CIFAR-10 subset (scripts/make_cifar_subset.py), K = 16: E2E, Greedy SL, DGL,
   InfoPro, DGL + MAN and InfoPro + MAN with the same number of epochs, as many as fit `--budget` seconds together
   (planned from each run's measured step time), batch 128, LR 0.1, cosine schedule, the K = 16 recipes' heads.

Writes OUT/gpu_check_<hardware>_<yyyymm>.json/.csv/.md, rewritten after every part so that a run stopped by its
time limit keeps the parts it finished, and OUT/gpu_tests.xml and .log (the pytest run). Parts that would not
fit in what is left of `--time-limit` are skipped with a note. The runs of part 3 live in `--runs-dir`.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import os
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from _run import ROOT
from _sweep import sweep
from _tables import sweep_table
from locallearn.config import RunConfig, build_config
from locallearn.data import load_dataset
from locallearn.engine.trainer import resolve_device
from locallearn.errors import ConfigError, LocalLearnError
from locallearn.profile.compare import measure
from locallearn.profile.probe import input_spec
from locallearn.profile.results import result_stem, write_results
from locallearn.profile.tables import markdown_table
from locallearn.profile.timing import interleaved_timings, throughput
from locallearn.provenance import provenance

# The activation-checkpointing baseline (InfoPro Table 3's "GC" row: 3.91 GB, +27.5% wall time): the `--set`
# override that turns the E2E recipe into checkpointed E2E, every residual block recomputed in backward.
CHECKPOINTING = "activation_checkpoint=per-unit"

GB = 1e9  # the papers' unit
CONFIGS = ROOT / "configs"
SUBSET_DIR = ROOT / "data" / "cifar10-subset"


@dataclass(frozen=True)
class Case:
    """One run of a table: a bundled recipe, overrides, and the paper's figures for it where there are some."""

    label: str
    recipe: str  # under configs/
    sets: tuple[str, ...] = ()  # `--set key=value` overrides
    paper_gb: float | None = None  # peak memory the paper reports
    paper_wall: float | None = None  # wall-time overhead over E2E the paper reports


def _r110(name: str) -> str:
    return f"cifar10/resnet110_{name}.yaml"


RESNET110 = [
    Case("E2E", _r110("e2e"), paper_gb=9.40),
    Case("InfoPro* K=2", _r110("infopro_star_k2"), paper_gb=5.38, paper_wall=0.011),
    Case("InfoPro* K=3", _r110("infopro_star_k3"), paper_gb=4.22, paper_wall=0.075),
    Case("InfoPro* K=4", _r110("infopro_star_k4"), paper_gb=3.52, paper_wall=0.134),
    Case("Greedy SL K=8", _r110("greedy_k8")),
    Case("Greedy SL K=16", _r110("greedy_k16")),
    Case("InfoPro K=8", _r110("infopro_k8")),
    Case("InfoPro K=16", _r110("infopro_k16")),
    Case("E2E + activation checkpointing", _r110("e2e"), (CHECKPOINTING,), paper_gb=3.91, paper_wall=0.275),
]
IMAGENET = {
    "resnet101": [
        Case("E2E", "imagenet/resnet101_e2e.yaml", paper_gb=19.71),
        Case("InfoPro K=2", "imagenet/resnet101_infopro_k2.yaml", paper_gb=12.06, paper_wall=0.117),
        Case("InfoPro + MAN K=4", "imagenet/resnet101_infopro_man_k4.yaml", paper_gb=10.47),
    ],
    "resnet152": [
        Case("E2E", "imagenet/resnet152_e2e.yaml", paper_gb=26.29),
        Case("InfoPro K=2", "imagenet/resnet152_infopro_k2.yaml", paper_gb=15.53, paper_wall=0.087),
        Case("InfoPro + MAN K=4", "imagenet/resnet152_infopro_man_k4.yaml", paper_gb=13.61),
    ],
}
# Where each group's paper figures come from, printed under its table.
PAPER_SETTING = {
    "resnet110": "InfoPro Table 3: one Titan Xp, batch 1024, memory in GB, overhead = wall time over E2E",
    "resnet101": "InfoPro Table 4 (K = 2) and MAN's ImageNet table (K = 4): per GPU at batch 128 (1024 over 8 "
    "V100s), twice this batch: compare the ratios",
}
PAPER_SETTING["resnet152"] = PAPER_SETTING["resnet101"]
_R32 = "cifar10/resnet32_{}.yaml"
ACCURACY = [
    Case("E2E", _R32.format("e2e")),
    Case("Greedy SL", _R32.format("greedy_k16")),
    Case("DGL", _R32.format("dgl_k16")),
    Case("InfoPro", _R32.format("infopro_k16")),
    Case("DGL + MAN", _R32.format("dgl_k16"), ("method=dgl+man",)),
    Case("InfoPro + MAN", _R32.format("infopro_k16"), ("method=infopro:contrast+man",)),
]
# Share of an epoch's time spent outside the timed training steps (evaluation, the first step's set-up).
EPOCH_OVERHEAD = 1.2


@dataclass(frozen=True)
class Sizes:
    """What `--tiny` shrinks: the same parts and code paths at toy sizes."""

    cifar_batch: int = 1024
    imagenet_batch: int = 64
    imagenet_size: int = 224
    archs: tuple[str, ...] = ("resnet101", "resnet152")
    timing: tuple[int, int, int] = (3, 2, 2)  # timed steps per round, rounds, warm-up steps
    accuracy_batch: int = 128
    budget: float = 240.0  # seconds of training for the accuracy runs together
    train_limit: int | None = None
    test_limit: int | None = None
    shrink: Callable[[RunConfig], RunConfig] = lambda cfg: cfg


# Toy stand-ins: ResNet-8 (3 stages at most) for the CIFAR ResNets, ResNet-50 (the same widths) for the ImageNet
# ResNets with cuts where the papers' ImageNet aux nets expect their 512- and 1024-channel features.
TINY_ARCH = {"resnet110": "resnet8", "resnet32": "resnet8", "resnet101": "resnet50"}
TINY_SPLIT = {("resnet50", 2): [[2, 0]], ("resnet50", 4): [[3, 0], [3, 2], [3, 4]]}


def _shrink(cfg: RunConfig) -> RunConfig:
    arch = TINY_ARCH[cfg.arch]
    k = min(cfg.K, 3) if arch == "resnet8" else cfg.K
    return dataclasses.replace(cfg, arch=arch, K=k, split=TINY_SPLIT.get((arch, k), "even"))


TINY = Sizes(
    cifar_batch=2,
    imagenet_batch=2,
    imagenet_size=16,
    archs=("resnet101",),
    timing=(1, 1, 1),
    accuracy_batch=16,
    budget=1.0,
    train_limit=32,
    test_limit=32,
    shrink=_shrink,
)


def config(case: Case, sizes: Sizes, **flags: Any) -> RunConfig:
    """The case's recipe with `flags` (RunConfig fields) and its overrides, shrunk by `sizes`."""
    return sizes.shrink(build_config(CONFIGS / case.recipe, flags, list(case.sets)))


def _free_cuda() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------ 1. correctness


def correctness(out: Path, seconds: float) -> list[dict[str, Any]]:
    """Run `pytest -m gpu tests/test_gpu.py`; one row: counts, time and each failure's first line."""
    xml, log = out / "gpu_tests.xml", out / "gpu_tests.log"
    cmd = [sys.executable, "-m", "pytest", "tests/test_gpu.py", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    cmd += [f"--junitxml={xml}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds)
        code, text = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        code, text = None, f"{e.stdout or ''}{e.stderr or ''}\ntimed out after {seconds:.0f} s"
    log.write_text(text if isinstance(text, str) else text.decode())
    row: dict[str, Any] = {"part": "correctness", "command": "python " + " ".join(cmd[1:]), "exit_code": code}
    row["seconds"] = time.perf_counter() - start
    return [row | junit_summary(xml)] if xml.is_file() else [row]


def junit_summary(xml: Path) -> dict[str, Any]:
    """Counts of a pytest JUnit XML report, and each failed or erroring test with its message's first line."""
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [
        {"test": case.get("name"), "message": (bad.get("message") or "").splitlines()[0][:300]}
        for case in suite.iter("testcase")
        for bad in [*case.findall("failure"), *case.findall("error")]
    ]
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "passed": passed, "failed_tests": failed}


# ------------------------------------------------------------------------------------ 2. memory and step time


def memory_group(group: str, cases: Sequence[Case], sizes: Sizes, input_size: int | None, **flags: Any) -> list[dict]:
    """Peak memory and median step time of each case next to the first (E2E), on one synthetic batch."""
    built, rows = [], []
    for case in cases:
        try:
            built.append((case, config(case, sizes, **flags)))
        except ConfigError as e:  # an option this version of the library does not have
            reason = str(e).split(";")[0]  # not the list of valid keys
            rows.append({"part": "memory", "group": group, "label": case.label, "skipped": reason})
    spec = input_spec(built[0][1].dataset, input_size)
    profiles = []
    for _, cfg in built:
        profiles.append(measure(cfg, spec, warmup=1))
        _free_cuda()
    steps, rounds, warmup = sizes.timing
    timings = interleaved_timings([cfg for _, cfg in built], spec, steps=steps, rounds=rounds, warmup=warmup)
    _free_cuda()
    e2e_case, e2e, e2e_time = built[0][0], profiles[0], timings[0].median_seconds
    for (case, cfg), profile, timing in zip(built, profiles, timings, strict=True):
        rows.append(
            {
                "part": "memory",
                "group": group,
                "label": case.label,
                "method": cfg.method,
                "K": cfg.K,
                "split": cfg.split if cfg.K > 1 else None,
                "arch": cfg.arch,
                "batch_size": cfg.batch_size,
                "image_shape": list(spec.image_shape),
                "amp": cfg.amp,
                "convention": profile.convention,
                "peak_bytes": profile.peak_bytes,
                "ratio": profile.peak_bytes / e2e.peak_bytes,
                "paper_gb": case.paper_gb,
                "paper_ratio": case.paper_gb / e2e_case.paper_gb if case.paper_gb and e2e_case.paper_gb else None,
                "step_seconds": timing.median_seconds,
                "all_step_seconds": timing.step_seconds,
                "wall_overhead": timing.median_seconds / e2e_time - 1,
                "paper_wall_overhead": case.paper_wall,
                "paper_setting": PAPER_SETTING[group],
                "flops_overhead": profile.train_flops / e2e.train_flops - 1,
                "cuts": profile.cuts,
                "config": cfg.to_dict(),
            }
        )
    return rows


def memory(sizes: Sizes, device: str, amp: str) -> list[dict[str, Any]]:
    rows = memory_group("resnet110", RESNET110, sizes, None, device=device, amp=amp, batch_size=sizes.cifar_batch)
    for arch in sizes.archs:
        flags = dict(device=device, amp=amp, batch_size=sizes.imagenet_batch, image_size=sizes.imagenet_size)
        rows += memory_group(arch, IMAGENET[arch], sizes, sizes.imagenet_size, **flags)
    return rows


# ------------------------------------------------------------------------------------ 3. accuracy


def plan_epochs(cfgs: Sequence[RunConfig], train_images: int, budget: float, sizes: Sizes) -> tuple[int, float]:
    """(epochs, predicted seconds): the most epochs each of `cfgs` can train for within `budget` in all, from
    their measured step times (at least one)."""
    steps, _, warmup = sizes.timing
    per_epoch = 0.0
    for cfg in cfgs:
        step = throughput(cfg, input_spec(cfg.dataset), steps=steps, warmup=warmup).median_seconds
        per_epoch += step * math.ceil(train_images / cfg.batch_size) * EPOCH_OVERHEAD
        _free_cuda()
    epochs = max(1, int(budget // per_epoch))
    return epochs, epochs * per_epoch


def accuracy(
    sizes: Sizes, device: str, data: dict[str, Any], budget: float, runs_dir: Path, epochs: int | None
) -> list[dict[str, Any]]:
    """Train every ACCURACY case for the same number of epochs (`epochs`, or as many as fit `budget`)."""
    flags = dict(device=device, batch_size=sizes.accuracy_batch, lr=0.1, schedule="cosine", epochs=1, **data)
    flags |= dict(train_limit=sizes.train_limit, test_limit=sizes.test_limit, log_every=10**6)
    cfgs = [config(case, sizes, **flags) for case in ACCURACY]
    images = len(load_dataset(cfgs[0].dataset, cfgs[0].data_dir, train_limit=sizes.train_limit).train_y)
    planned, predicted = (epochs, None) if epochs else plan_epochs(cfgs, images, budget, sizes)
    cfgs = [dataclasses.replace(cfg, epochs=planned) for cfg in cfgs]
    steps, _, warmup = sizes.timing
    rows = sweep(cfgs, runs_dir, steps=steps, warmup=warmup, rerun=True)
    plan = {"budget_seconds": budget, "planned_epochs": planned, "predicted_seconds": predicted, "images": images}
    return [{"part": "accuracy", "label": c.label, **row, **plan} for c, row in zip(ACCURACY, rows, strict=True)]


# ------------------------------------------------------------------------------------ report


def _gb(n: float | None) -> str:
    return "–" if n is None else f"{n / GB:.2f}"


def _pct(x: float | None, sign: bool = False) -> str:
    return "–" if x is None else f"{100 * x:+.1f}%" if sign else f"{100 * x:.1f}%"


def correctness_section(row: dict[str, Any]) -> list[str]:
    lines = [f"`{row['command']}`: exit code {row['exit_code']}, {row['seconds']:.0f} s."]
    if "tests" in row:
        lines[0] += (
            f" {row['passed']} passed, {row['failures']} failed, {row['errors']} errors, {row['skipped']} skipped."
        )
    lines += [f"- FAILED {f['test']}: {f['message']}" for f in row.get("failed_tests", [])]
    return lines


MEMORY_COLUMNS = ["run", "K", "peak (GB)", "vs E2E", "paper (GB)", "paper vs E2E", "s / step", "wall overhead"]
MEMORY_COLUMNS += ["paper wall", "theor. overhead"]


def memory_section(rows: list[dict[str, Any]]) -> list[str]:
    """One group's table (a backbone and input size), with the runs this version could not build named."""
    measured = [r for r in rows if "skipped" not in r]
    first = measured[0]
    shape = "x".join(str(d) for d in first["image_shape"][1:])
    lines = [
        f"### {first['arch']}, {shape} inputs, batch {first['batch_size']}, amp {first['amp']}, {first['convention']}",
        "",
        markdown_table(
            MEMORY_COLUMNS,
            [
                [
                    r["label"],
                    r["K"],
                    _gb(r["peak_bytes"]),
                    _pct(r["ratio"]),
                    "–" if r["paper_gb"] is None else f"{r['paper_gb']:.2f}",
                    _pct(r["paper_ratio"]),
                    f"{r['step_seconds']:.3f}",
                    _pct(r["wall_overhead"], True),
                    _pct(r["paper_wall_overhead"], True),
                    _pct(r["flops_overhead"], True),
                ]
                for r in measured
            ],
        ),
    ]
    lines += ["", f"Paper: {first['paper_setting']}."]
    return lines + [f"- {r['label']}: not measured ({r['skipped']})" for r in rows if "skipped" in r]


def accuracy_section(rows: list[dict[str, Any]]) -> list[str]:
    first = rows[0]
    epochs = first["planned_epochs"]
    plan = f"{epochs} epoch{'s' if epochs != 1 else ''} each on {first['images']:,} training images"
    if first["predicted_seconds"] is not None:
        plan += f" (planned for {first['budget_seconds']:.0f} s together, predicted {first['predicted_seconds']:.0f} s)"
    spent = sum(r["train_seconds"] for r in rows if r.get("train_seconds") is not None)
    recipe = f"batch {first['batch_size']}, LR 0.1, cosine schedule, amp {first['config']['amp']}"
    lines = [f"{plan}; training took {spent:.0f} s; {recipe}.", ""]
    return lines + [sweep_table(rows)]


def report(rows: list[dict[str, Any]], notes: list[str]) -> str:
    head = next((r for r in rows), None)
    lines = ["# GPU check", ""]
    if head is not None:
        versions = f"torch {head['torch']}, CUDA {head['cuda']}, git {head['git_sha']}"
        lines += [f"{head['device_name']}, {versions}, {head['time_utc']}", ""]
    for part, title in (("correctness", "1. CUDA correctness"), ("memory", "2. Memory and step time vs E2E"),
                        ("accuracy", "3. Accuracy, ResNet-32 on the CIFAR-10 subset, K = 16")):  # fmt: skip
        mine = [r for r in rows if r["part"] == part]
        if not mine:
            continue
        lines += [f"## {title}", ""]
        if part == "correctness":
            lines += correctness_section(mine[0])
        elif part == "memory":
            for group in dict.fromkeys(r["group"] for r in mine):
                lines += [*memory_section([r for r in mine if r["group"] == group]), ""]
        else:
            lines += accuracy_section(mine)
        lines.append("")
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(lines).rstrip()


# ------------------------------------------------------------------------------------ main

# Seconds a part needs at the least; with less of --time-limit left it is skipped rather than cut off.
MINIMUM = {"correctness": 60.0, "memory": 90.0, "accuracy": 60.0}
TESTS_LIMIT = 180.0  # the most seconds the tests may take, so that a hang leaves time for the other parts
RESERVE = 20.0  # of the time limit, kept for writing the results after the accuracy runs


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the results (JSON, CSV, Markdown, test log)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu with --tiny")
    p.add_argument("--tiny", action="store_true", help="every part at toy sizes (seconds on a CPU)")
    p.add_argument("--part", choices=list(MINIMUM), action="append", help="run only these parts (repeatable)")
    p.add_argument("--amp", default="none", help="autocast of the memory part: none (fp32, the papers'), bf16, fp16")
    p.add_argument("--data-dir", type=Path, default=SUBSET_DIR, help=f"the CIFAR-10 subset (default {SUBSET_DIR})")
    p.add_argument("--budget", type=float, default=None, help="seconds of training for the accuracy runs together")
    p.add_argument("--epochs", type=int, default=None, help="epochs of each accuracy run (default: fit --budget)")
    p.add_argument("--time-limit", type=float, default=480.0, help="seconds for the whole check")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "benchmarks" / "results" / "tmp" / "runs" / "gpu_check")
    return p.parse_args(argv)


def with_provenance(rows: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    """Each row with the code version, library versions, hardware and cuDNN's TF32 switch."""
    found = provenance(device) | {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    return [{**row, **found} for row in rows]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    parts = args.part or list(MINIMUM)
    try:
        device = resolve_device(args.device)
        build_config(flags={"amp": args.amp})  # a bad value stops the check here, not inside every run
        if "accuracy" in parts and not args.tiny:
            load_dataset("cifar10-subset", args.data_dir)  # a missing subset stops the check before it starts
    except LocalLearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sizes = TINY if args.tiny else Sizes()
    if args.tiny:
        torch.set_num_threads(1)  # toy tensors gain nothing from threads, and on a busy machine lose much to them
    data = {"dataset": "cifar10-sample"} if args.tiny else {"dataset": "cifar10-subset", "data_dir": str(args.data_dir)}
    stem = result_stem("gpu_check", device)
    start = time.perf_counter()
    runs = {
        "correctness": lambda left: correctness(args.out, min(left, TESTS_LIMIT)),
        "memory": lambda left: memory(sizes, args.device, args.amp),
        "accuracy": lambda left: accuracy(
            sizes, args.device, data, min(args.budget or sizes.budget, left - RESERVE), args.runs_dir, args.epochs
        ),
    }
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    broken = False  # a part raised
    args.out.mkdir(parents=True, exist_ok=True)
    for part in parts:
        left = args.time_limit - (time.perf_counter() - start)
        if left < (0.0 if args.tiny else MINIMUM[part]):
            notes.append(f"{part}: skipped, {left:.0f} s of --time-limit {args.time_limit:.0f} s left")
        else:
            print(f"== {part} ({left:.0f} s left)", file=sys.stderr, flush=True)
            try:
                rows += with_provenance(runs[part](left), device)
            except Exception as e:  # one part's failure must not cost the others' results
                notes.append(f"{part}: failed: {type(e).__name__}: {e}")
                traceback.print_exc()
                broken = True
        table = report(rows, notes)
        paths = write_results([*rows, *({"part": "note", "text": n} for n in notes)], args.out, stem, table)
    print(table)
    print(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    tests_failed = any(r["part"] == "correctness" and r["exit_code"] != 0 for r in rows)
    return 1 if broken or tests_failed else 0


if __name__ == "__main__":
    sys.exit(main())
