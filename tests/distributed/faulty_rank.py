"""One rank of `locallearn train`, made to fail at a chosen training step: the fault-injection driver.

    FAULT=<raise|kill|stop>:<rank>:<step> python tests/distributed/faulty_rank.py train --engine pipeline ...

`raise` throws from the engine's step (a bug or a bad input on that rank); `kill` ends the process with
SIGKILL, leaving no word behind (out of memory, a lost node); `stop` freezes it with SIGSTOP, connections
open (a hung node: only the heartbeat shows it). Other ranks run normally.
"""

from __future__ import annotations

import os
import signal
import sys

from locallearn.cli import main
from locallearn.engine.step import Engine


def _inject(mode: str, rank: int, at_step: int) -> None:
    if int(os.environ["RANK"]) != rank:
        return
    train_step = Engine.train_step
    steps = 0

    def failing_step(self, x, y):
        nonlocal steps
        steps += 1
        if steps == at_step:
            if mode in ("kill", "stop"):
                os.kill(os.getpid(), signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
            raise RuntimeError(f"injected failure at step {at_step}")
        return train_step(self, x, y)

    Engine.train_step = failing_step


if __name__ == "__main__":
    mode, rank, step = os.environ["FAULT"].split(":")
    _inject(mode, int(rank), int(step))
    sys.exit(main(sys.argv[1:]))
