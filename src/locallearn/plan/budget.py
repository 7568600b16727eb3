"""Memory budgets: `12GiB`, `500MB`, `auto` (what the device has free), and what a device has available."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import ConfigError

UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*")


def parse_size(text: str) -> int:
    """`12GiB` / `12G` (binary), `12GB` (decimal), `4096` (bytes) -> bytes."""
    match = _SIZE.fullmatch(str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in UNITS or float(match.group(1)) <= 0:
        raise ConfigError(f"cannot read the memory size '{text}'; write e.g. 12GiB, 500MB or auto")
    return int(float(match.group(1)) * UNITS[unit])


def available_bytes(device: torch.device) -> int:
    """Memory a new allocation can still get: free CUDA memory, or the kernel's MemAvailable on CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        match = re.search(r"MemAvailable:\s+(\d+) kB", meminfo.read_text())
        if match:
            return int(match.group(1)) * 1024
    raise ConfigError("cannot tell how much memory this machine has free; give the budget in bytes, e.g. 12GiB")


def resolve_budget(text: str, device: torch.device) -> int:
    """A budget flag's value in bytes; `auto` is the memory `device` has available now."""
    return available_bytes(device) if str(text).strip().lower() == "auto" else parse_size(text)
