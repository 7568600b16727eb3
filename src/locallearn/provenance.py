"""Where a measurement came from: code version, library versions, hardware. Every result row carries it."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

_REPO = Path(__file__).resolve().parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_sha() -> str | None:
    """HEAD of the checkout locallearn runs from (None when installed without its git history)."""
    return _git("rev-parse", "HEAD")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model, the vector instructions torch's kernels use and its thread count.

    The instruction set is named because one model string ("AMD EPYC") covers hosts whose kernels differ in
    speed and in the rounding of their reductions."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        model = match.group(1).strip() if match else model
    return f"{model} ({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"


def hardware_tag(device: torch.device) -> str:
    """A short file-name-safe hardware name, e.g. `cpu2` or `nvidia-h100-80gb-hbm3`."""
    if device.type == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return f"cpu{torch.get_num_threads()}"


def _code_version() -> tuple[str | None, bool | None]:
    """(SHA, dirty?) from git; a checkout copied without its history (onto a GPU machine, say) names its commit
    in LOCALLEARN_GIT_SHA, its cleanliness then unknown."""
    sha = git_sha()
    if sha is None:
        return os.environ.get("LOCALLEARN_GIT_SHA"), None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return sha, bool(status) if status is not None else None


# Read when this module is imported, i.e. when a profile command or a benchmark starts: a sweep runs for hours,
# and HEAD may move meanwhile while the code this process loaded stays the same.
_CODE_VERSION = _code_version()


def code_version() -> tuple[str | None, bool | None]:
    """(git SHA, uncommitted changes?) of the code this process loaded."""
    return _CODE_VERSION


def provenance(device: torch.device) -> dict[str, Any]:
    sha, dirty = _CODE_VERSION
    return {
        "git_sha": sha,
        "git_dirty": dirty,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": device_name(device),
        "python": platform.python_version(),
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
