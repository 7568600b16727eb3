"""Start the processes of a multi-process test on this machine: gloo on CPU, one thread each, a free port.

- `spawn(fn, world, *args)`: `fn(rank, world, *args)` in `world` fresh interpreters (torch.multiprocessing),
  with torchrun's environment variables set, so that `locallearn.engine.pipeline.groups.launch` works as under torchrun.
- `torchrun(args, nproc)`: `torchrun ... -m locallearn <args>`, the user's launch.
- `ranks(args, world)`: one `python tests/distributed/faulty_rank.py <args>` per rank with no launcher agent around
  them (as on separate nodes), so that only the ranks themselves can notice that one of them has failed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.multiprocessing as mp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
    }


def _child(rank: int, fn: Callable, world: int, port: int, args: tuple) -> None:
    os.environ.update(rank_env(rank, world, port))
    torch.set_num_threads(1)
    fn(rank, world, *args)


def spawn(fn: Callable, world: int, *args, timeout: float = 300.0) -> None:
    """Run `fn(rank, world, *args)` on `world` ranks; raise if any rank fails or the group outlives `timeout`."""
    ctx = mp.start_processes(
        _child, args=(fn, world, free_port(), args), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=max(deadline - time.monotonic(), 0.1)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{world} ranks still running after {timeout:.0f}s")
    finally:
        for process in ctx.processes:
            if process.is_alive():
                process.kill()


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any rank variables of its own (pytest may run under torchrun), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", **(extra or {})}


def torchrun(
    args: list[str], nproc: int, *, timeout: float = 300.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "locallearn", *args,
    ]  # fmt: skip
    return subprocess.run(command, env=_env(env), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@dataclass
class Exit:
    code: int
    seconds: float  # from the start of the launch to the exit (inf: killed by `ranks` at its timeout)
    stderr: str
    stopped: float | None = None  # when the process was seen frozen by SIGSTOP, if it was


def _frozen(pid: int) -> bool:
    """Whether the process is stopped (state T in /proc/<pid>/stat)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


def ranks(
    args: list[str], world: int, *, fault: str, wait_for: list[int] | None = None, timeout: float = 300.0
) -> list[Exit]:
    """Run `locallearn <args>` as `world` independent ranks, one of them failing as `fault` says.

    Returns once the ranks in `wait_for` (default: all) have ended; any rank still running is then killed.
    """
    wait_for = list(range(world)) if wait_for is None else wait_for
    port, start = free_port(), time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "faulty_rank.py"), *args],
            env=_env({**rank_env(r, world, port), "FAULT": fault}),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for r in range(world)
    ]
    ended: dict[int, float] = {}
    stopped: dict[int, float] = {}
    try:
        while any(r not in ended for r in wait_for) and time.monotonic() - start < timeout:
            for r, p in enumerate(procs):
                now = time.monotonic() - start
                if r not in ended and p.poll() is not None:
                    ended[r] = now
                elif r not in stopped and _frozen(p.pid):
                    stopped[r] = now
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [Exit(p.wait(), ended.get(r, float("inf")), p.stderr.read(), stopped.get(r)) for r, p in enumerate(procs)]
