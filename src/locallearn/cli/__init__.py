"""`locallearn` command line: train | eval | list (and the measurement commands registered in COMMANDS).

User errors (LocalLearnError) print one line on stderr and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..engine.host_memory import ask_for_huge_pages
from ..errors import LocalLearnError
from . import bench, demo, evaluate, listing, plan, profile, train

# name -> module with `add_parser(subparsers)` and `run(args) -> int`
COMMANDS = {
    "train": train,
    "eval": evaluate,
    "list": listing,
    "demo": demo,
    "profile": profile,
    "bench": bench,
    "plan": plan,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="locallearn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    ask_for_huge_pages()  # before any tensor exists: PyTorch reads the setting at its first CPU allocation
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except LocalLearnError as e:
        message = " ".join(str(e).split())  # one line, whatever the text it quotes
        print(f"locallearn: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "locallearn: interrupted; a run continues from its last checkpoint, if it wrote one, with --resume",
            file=sys.stderr,
        )
        return 130
