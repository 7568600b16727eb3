"""Resident memory of training steps, measured in a fresh process per configuration (Linux).

A process's resident set is what the operating system and a user see; it also holds what allocator meters
miss (the C allocator's free lists and fragmentation, library workspaces). Memory freed to the C allocator
need not leave it, so a resident size depends on everything the process ran before, and each configuration
runs alone in a new interpreter: `measure_rss` starts
`python -m locallearn.profile.rss`, which builds the run's model and batch, notes its resident size, trains
`warmup + steps` steps and reports its peak resident size (the kernel's high-water mark) and step times.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import RunConfig

STATUS = Path("/proc/self/status")


def _status_bytes(key: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise ConfigError(f"{STATUS} has no {key} line; the RSS meter needs a Linux kernel")


def resident_bytes() -> int:
    """This process's resident set size now."""
    return _status_bytes("VmRSS")


def peak_resident_bytes() -> int:
    """The largest resident set size this process has had (the kernel's high-water mark)."""
    return _status_bytes("VmHWM")


@dataclass
class RssMeasurement:
    built_bytes: int  # resident once the model, its optimizers and the batch exist, before any step
    peak_bytes: int  # the process's peak resident size over all steps
    step_seconds: list[float]  # the timed steps (after warm-up)

    @property
    def growth_bytes(self) -> int:
        """What training added to the built process at its peak: the memory a step needs."""
        return self.peak_bytes - self.built_bytes


def build_here(cfg_dict: dict[str, Any], image_size: int | None = None) -> tuple[Any, Any, Any]:
    """The engine of the run `cfg_dict` and a synthetic batch, built in this process as the run would build them
    (threads, host memory), so that what is measured next is that run's step: (engine, x, y)."""
    import torch

    from ..config import config_from_dict
    from ..engine.host_memory import prepare_host_memory
    from ..engine.trainer import resolve_device
    from .probe import build_engine, input_spec, synthetic_batch

    cfg = config_from_dict(cfg_dict)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    spec = input_spec(cfg.dataset, image_size)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        prepare_host_memory(cfg.return_freed_memory, cfg.batch_size)
    engine = build_engine(cfg, spec, device)
    return (engine, *synthetic_batch(cfg, spec, device))


def measure_here(cfg_dict: dict[str, Any], image_size: int | None, warmup: int, steps: int) -> RssMeasurement:
    """Build the run of `cfg_dict` in this process and measure it; meaningful only in a fresh process."""
    engine, x, y = build_here(cfg_dict, image_size)
    built = resident_bytes()
    for _ in range(warmup):
        engine.train_step(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        engine.train_step(x, y)
        times.append(time.perf_counter() - start)
    return RssMeasurement(built, peak_resident_bytes(), times)


def measure_rss(cfg: RunConfig, image_size: int | None = None, *, warmup: int = 1, steps: int = 1) -> RssMeasurement:
    """Measure the run `cfg` (a RunConfig on a CPU device) in a new Python process; see the module doc."""
    if not STATUS.exists():
        raise ConfigError("the RSS meter reads /proc/self/status and needs Linux; use the default meter here")
    request = {"config": cfg.to_dict(), "image_size": image_size, "warmup": warmup, "steps": steps}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_src_root(), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "locallearn.profile.rss"], input=json.dumps(request), capture_output=True, text=True,
        env=env,
    )  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"the RSS measurement process failed ({last}); run the same config with `train` to see why")
    return RssMeasurement(**json.loads(done.stdout.strip().splitlines()[-1]))


def add_rss(
    rows: list[dict[str, Any]], cfgs: list[RunConfig], image_size: int | None, warmup: int
) -> list[dict[str, Any]]:
    """`locallearn profile` rows with the RSS growth of each run and of its E2E reference, each measured in a
    fresh process over `warmup` + 1 steps, and `rss_agreement`: the profile's growth over the measured one."""
    from .compare import e2e_config

    measured: dict[str, RssMeasurement] = {}

    def growth(cfg: RunConfig) -> RssMeasurement:
        key = json.dumps(cfg.to_dict(), sort_keys=True)
        if key not in measured:
            measured[key] = measure_rss(cfg, image_size, warmup=warmup, steps=1)
        return measured[key]

    out = []
    for row, cfg in zip(rows, cfgs, strict=True):
        rss, e2e = growth(cfg), growth(e2e_config(cfg))
        out.append(
            {
                **row,
                "rss_built_bytes": rss.built_bytes,
                "rss_peak_bytes": rss.peak_bytes,
                "rss_growth_bytes": rss.growth_bytes,
                "e2e_rss_peak_bytes": e2e.peak_bytes,
                "rss_agreement": row["growth_bytes"] / rss.growth_bytes,
            }
        )
    return out


def _src_root() -> str:
    """The folder holding this `locallearn` package, so the child imports the same code as the parent."""
    return str(Path(__file__).resolve().parents[2])


if __name__ == "__main__":
    args = json.loads(sys.stdin.read())
    result = measure_here(args["config"], args["image_size"], args["warmup"], args["steps"])
    print(json.dumps(dataclasses.asdict(result)))
