"""`locallearn bench` moved: sweeps are campaigns, run from a checkout as `python benchmarks/sweep.py`.

The library measures (`locallearn profile`); the benchmarks schedule runs, merge result files and draw tables.
The command stays only to name its replacement.
"""

from __future__ import annotations

import argparse
import shlex

from ..errors import ConfigError

MOVED = "python benchmarks/sweep.py"


def add_parser(sub: argparse._SubParsersAction) -> None:
    # No prefix character can start an argument (argv never holds NUL): every flag is taken as-is into `rest`.
    p = sub.add_parser("bench", help=f"moved: run `{MOVED}` from a checkout", add_help=False, prefix_chars="\0")
    p.add_argument("rest", nargs="*")


def run(args: argparse.Namespace) -> int:
    raise ConfigError(f"`locallearn bench` moved to the benchmarks: run `{shlex.join([*MOVED.split(), *args.rest])}`")
