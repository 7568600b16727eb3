"""Sweeps (benchmarks/sweep.py): accuracy at a fixed budget, throughput and memory for each (method, K, seed).

Each row records the resolved config and the provenance (git SHA, torch version, device), so a result file
says exactly what produced it. Training runs live in `runs_dir`, one folder per config: a sweep that was
stopped continues where it stopped when run again (finished runs are reused, an interrupted one resumes
from its last checkpoint), unless `rerun` is set. A run recorded in the rows of an earlier result file is
not trained again either, so a sweep carries on from its committed results on a machine without its run
folders. Several processes may run the same sweep at once (one per core, say): each run is claimed by a
file lock, a process skips runs another one is training and collects them when it has trained the rest.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from locallearn.config import RunConfig, config_from_dict
from locallearn.engine.checkpoint import load_checkpoint
from locallearn.engine.trainer import CHECKPOINT, Trainer, resolve_device
from locallearn.errors import ConfigError
from locallearn.profile.compare import compare_runs, e2e_config, is_reference, measure
from locallearn.profile.probe import input_spec
from locallearn.profile.timing import interleaved_timings, throughput
from locallearn.provenance import provenance


def run_name(cfg: RunConfig) -> str:
    split = f"_{cfg.split}" if isinstance(cfg.split, str) and cfg.K > 1 else ""
    recompute = "" if cfg.activation_checkpoint == "none" else f"_ac-{cfg.activation_checkpoint.replace(':', '')}"
    return f"{cfg.dataset}_{cfg.arch.replace(':', '-')}_{cfg.spec.slug}_k{cfg.K}{split}{recompute}_s{cfg.seed}"


def _identity(cfg: RunConfig) -> dict[str, Any]:
    return {
        "method": cfg.method,
        "K": cfg.K,
        "split": cfg.split if cfg.K > 1 else None,
        "activation_checkpoint": cfg.activation_checkpoint,
        "seed": cfg.seed,
        "arch": cfg.arch,
        "dataset": cfg.dataset,
        "batch_size": cfg.batch_size,
    }


# Config fields that say where and how a run was watched, not what it computes.
NOT_THE_RESULT = ("data_dir", "download", "workers", "log_every", "checkpoint_every")


def same_run(saved: dict[str, Any], cfg: RunConfig) -> bool:
    """Whether a run saved with config `saved` (fields added since then take their defaults) computes `cfg`."""
    then, now = config_from_dict(saved).to_dict(), cfg.to_dict()
    return all(then[k] == now[k] for k in now if k not in NOT_THE_RESULT)


def _saved(cfg: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint in `run_dir` if it is a run of `cfg` (without its weights), else None."""
    checkpoint = run_dir / CHECKPOINT
    saved = load_checkpoint(checkpoint, assemble=False) if checkpoint.is_file() else None
    return saved if saved is not None and same_run(saved["config"], cfg) else None


def _summary_if_finished(saved: dict[str, Any] | None, cfg: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    summary = run_dir / "summary.json"
    done = saved is not None and saved["epoch"] + 1 == cfg.epochs and summary.is_file()
    return json.loads(summary.read_text()) if done else None


def finished_summary(cfg: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished run of `cfg` in `run_dir`, or None if there is none (yet)."""
    return _summary_if_finished(_saved(cfg, run_dir), cfg, run_dir)


def recorded_summary(cfg: RunConfig, rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The result of a finished run of `cfg` as the last of the result `rows` that records one, else None."""
    found = [r for r in rows if "test_acc" in r and same_run(r["config"], cfg)]
    if not found:
        return None
    row = found[-1]
    return {
        "test_acc": row["test_acc"],
        "best_acc": row["best_acc"],
        "seconds": row["train_seconds"],
        "git_sha": row.get("trained_git_sha"),
    }


def train_or_reuse(cfg: RunConfig, run_dir: Path, *, rerun: bool = False, progress: bool = False) -> dict[str, Any]:
    """The summary of training `cfg` in `run_dir`, reusing a finished run or resuming an interrupted one of the
    same config (a folder holding another config's run is trained over: it is the sweep's scratch space)."""
    saved = None if rerun else _saved(cfg, run_dir)  # the checkpoint is read once
    if (summary := _summary_if_finished(saved, cfg, run_dir)) is not None:
        return summary
    trainer = Trainer(cfg, run_dir, progress=progress)
    if saved is not None:
        trainer.resume()
    return trainer.fit()


@contextmanager
def claim(run_dir: Path, *, wait: bool) -> Iterator[bool]:
    """Hold the exclusive lock of `run_dir` while the block runs; yields False (at once) if another process
    holds it and not `wait`. The lock lives beside the folder, which training may overwrite; the kernel
    releases it if the holder dies, so a killed sweep never leaves a run locked."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f"{run_dir.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def train_all(
    cfgs: Sequence[RunConfig], runs_dir: Path, *, rerun: bool = False, progress: bool = False
) -> list[dict[str, Any]]:
    """`train_or_reuse` for each config, in order, except that a run another process is training is left for
    the end and then waited for; it is reused (never retrained, even with `rerun`) once that process is done."""
    summaries: dict[int, dict[str, Any]] = {}
    for i, cfg in enumerate(cfgs):
        with claim(runs_dir / run_name(cfg), wait=False) as mine:
            if mine:
                summaries[i] = train_or_reuse(cfg, runs_dir / run_name(cfg), rerun=rerun, progress=progress)
    for i, cfg in enumerate(cfgs):
        if i not in summaries:
            with claim(runs_dir / run_name(cfg), wait=True):
                summaries[i] = train_or_reuse(cfg, runs_dir / run_name(cfg), progress=progress)
    return [summaries[i] for i in range(len(cfgs))]


def sweep(
    cfgs: Sequence[RunConfig],
    runs_dir: str | Path,
    *,
    train: bool = True,
    steps: int = 5,
    warmup: int = 2,
    progress: bool = False,
    rerun: bool = False,
    collect: bool = False,
    earlier: Sequence[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """One row per config: test accuracy after `cfg.epochs` (when `train`), images/s, peak memory vs E2E.

    A config whose result one of the `earlier` rows records is not trained again (a rerun passes none). `collect`
    trains nothing: the accuracy of each run recorded or finished so far, none for the others."""
    runs_dir = Path(runs_dir)
    summaries = [recorded_summary(cfg, earlier) for cfg in cfgs]
    todo = [i for i, s in enumerate(summaries) if s is None]
    if collect:
        found = [finished_summary(cfgs[i], runs_dir / run_name(cfgs[i])) for i in todo]
    elif train:
        found = train_all([cfgs[i] for i in todo], runs_dir, rerun=rerun, progress=progress)
    else:
        found = [None] * len(todo)
    for i, summary in zip(todo, found, strict=True):
        summaries[i] = summary
    # Measured after training, so that a sweep started again (or a second copy) starts training at once.
    memory = compare_runs([(cfg, input_spec(cfg.dataset)) for cfg in cfgs])
    rows = []
    for cfg, mem, summary in zip(cfgs, memory, summaries, strict=True):
        row: dict[str, Any] = {**_identity(cfg), "epochs": cfg.epochs, "train_limit": cfg.train_limit}
        if summary is not None:
            row |= {
                "test_acc": summary["test_acc"],
                "error": 100 * (1 - summary["test_acc"]),
                "best_acc": summary["best_acc"],
                "train_seconds": summary["seconds"],
                "trained_git_sha": summary.get("git_sha"),  # a reused run may predate the code measuring it
            }
        timing = throughput(cfg, input_spec(cfg.dataset), steps, warmup)
        row |= {"images_per_s": timing.images_per_s, "step_seconds": timing.median_seconds}
        row |= {k: mem[k] for k in ("peak_bytes", "e2e_peak_bytes", "ratio", "held_bytes", "convention")}
        row |= {k: mem[k] for k in ("train_flops", "flops_overhead", "inference_flops")}
        row |= {"config": cfg.to_dict(), **provenance(resolve_device(cfg.device))}
        rows.append(row)
    return rows


def merge_rows(
    kept: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], cfgs: Sequence[RunConfig]
) -> list[dict[str, Any]]:
    """The rows of a result file after a sweep of `cfgs` (one row each) over its `kept` rows: a row takes the
    place of the kept row of the same run, kept rows of runs the sweep left out stay, new runs come last. So a
    sweep of one method rewrites that method's rows and keeps the others'."""
    merged = list(kept)
    for row, cfg in zip(rows, cfgs, strict=True):
        at = next((i for i, old in enumerate(merged) if same_run(old["config"], cfg)), len(merged))
        merged[at : at + 1] = [row]
    return merged


def overhead(
    cfgs: Sequence[RunConfig], *, steps: int = 2, rounds: int = 3, warmup: int = 1, flops_batch: int = 2
) -> list[dict[str, Any]]:
    """Wall-time overhead of each config over E2E on the same device, batch and process, timed interleaved.

    The theoretical (FLOPs) overhead is counted on a batch of `flops_batch`: FLOPs per image do not depend
    on the batch size, and the count needs one traced step.
    """
    shared = {(c.arch, c.dataset, c.batch_size, c.device, c.amp) for c in cfgs}
    if len(shared) != 1:
        raise ConfigError(f"overhead compares runs of one backbone, dataset, batch and device; got {sorted(shared)}")
    reference = e2e_config(cfgs[0])
    local = [c for c in cfgs if not is_reference(c)]
    spec = input_spec(reference.dataset)
    timings = interleaved_timings([reference, *local], spec, steps=steps, rounds=rounds, warmup=warmup)
    flops = [measure(dataclasses.replace(c, batch_size=flops_batch), spec, 0).train_flops for c in [reference, *local]]
    base = provenance(resolve_device(reference.device))
    return [
        {
            **_identity(cfg),
            "step_seconds": t.median_seconds,
            "images_per_s": t.images_per_s,
            "wall_overhead": t.median_seconds / timings[0].median_seconds - 1,
            "flops_overhead": f / flops[0] - 1,
            "all_step_seconds": t.step_seconds,
            "config": cfg.to_dict(),
            **base,
        }
        for cfg, t, f in zip([reference, *local], timings, flops, strict=True)
    ]
