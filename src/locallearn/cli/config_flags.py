"""The flags that build a RunConfig, generated from its fields: one flag per top-level field, its help the
field's docstring, its type the field's. Nested settings (`method_options.*`, `pipeline.*`, `log.*`) are set with
`--set key=value`; `--help` lists their keys. train, profile and plan (and benchmarks/sweep.py) share these flags; a
sweep (profile, benchmarks/sweep.py) takes comma lists for the fields it sweeps.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..config import RunConfig, build_config, field_types
from ..fielddocs import field_docs


@dataclass(frozen=True)
class ConfigFlag:
    flag: str  # e.g. --batch-size
    dest: str  # the RunConfig field, e.g. batch_size


def _without_none(kind: Any) -> Any:
    """`X | None` -> X; any other type as it is."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return kind


def _scalar(kind: Any) -> Any:
    """`int | None` -> int; a type argparse can convert to (str for `Any`: the config converts it)."""
    kind = _without_none(kind)
    return kind if kind in (int, float, str, bool) else str


def _list_item(kind: Any) -> Any | None:
    """The item type of a list field (`list[float]`, `list[str] | None`), else None."""
    kind = _without_none(kind)
    return typing.get_args(kind)[0] if typing.get_origin(kind) is list else None


class _FlatList(argparse.Action):
    """A list flag given as words, commas, or both: `--milestones 0.3 0.6`, `--cuts layer2.0,layer3.0`."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option=None):
        setattr(namespace, self.dest, [v for group in values for v in group])


def comma_list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """An argparse type: `2,4,8` -> [2, 4, 8]."""

    def parse(text: str) -> list[Any]:
        try:
            return [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(
                f"expected {kind.__name__} values separated by commas, got '{text}'"
            ) from e

    parse.__name__ = f"{kind.__name__} list"
    return parse


# Fields holding a dataclass of their own: set with `--set name.key=value`.
_NESTED = tuple(name for name, kind in field_types(RunConfig).items() if dataclasses.is_dataclass(kind))


def config_flags() -> list[ConfigFlag]:
    """Every generated flag, in field order: `batch_size` -> `--batch-size`."""
    return [ConfigFlag(f"--{name.replace('_', '-')}", name) for name in field_types(RunConfig) if name not in _NESTED]


def _set_help() -> str:
    keys = "; ".join(
        f"{name}.{{{', '.join(f.name for f in dataclasses.fields(field_types(RunConfig)[name]))}}}" for name in _NESTED
    )
    return f"any config key, e.g. --set method_options.ixx_1=5 (repeatable). Nested keys: {keys}"


def add_config_flags(p: argparse.ArgumentParser, sweep: Iterable[str] = ()) -> None:
    """Add `--config`, one flag per RunConfig field and `--set` to `p`. Fields named in `sweep` take a comma
    list (every value is a run), and `--config` then takes several recipes."""
    sweep = tuple(sweep)
    if sweep:
        p.add_argument("--config", nargs="+", default=None, help="one or more YAML recipes (each is a run)")
    else:
        p.add_argument("--config", help="YAML recipe (see `locallearn list`)")
    types_, docs = field_types(RunConfig), field_docs(RunConfig)
    for spec in config_flags():
        kind, doc = _scalar(types_[spec.dest]), docs.get(spec.dest, "").replace("%", "%%")  # argparse formats help
        if spec.dest in sweep:
            p.add_argument(
                spec.flag, dest=spec.dest, type=comma_list(kind), default=None, help=f"{doc} A comma list sweeps it."
            )
        elif kind is bool:
            p.add_argument(spec.flag, dest=spec.dest, action=argparse.BooleanOptionalAction, default=None, help=doc)
        elif (item := _list_item(types_[spec.dest])) is not None:
            p.add_argument(
                spec.flag, dest=spec.dest, type=comma_list(item), nargs="+", action=_FlatList, default=None, help=doc
            )
        else:
            p.add_argument(spec.flag, dest=spec.dest, type=kind, default=None, help=doc)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=_set_help())


def config_from_args(args: argparse.Namespace, base: dict | None = None) -> RunConfig:
    """The RunConfig of parsed flags: recipe, then flags, then `--set` (a saved `base` replaces the defaults
    when no recipe is given, e.g. on --resume)."""
    flags = {spec.dest: getattr(args, spec.dest) for spec in config_flags()}
    return build_config(args.config, flags, args.overrides, base=base if args.config is None else None)


def command_words(args: argparse.Namespace, skip: Iterable[str] = ()) -> list[str]:
    """The recipe and flags of `args` as command-line words (fields in `skip` left out)."""
    words = ["--config", args.config] if args.config else []
    for spec in config_flags():
        value = getattr(args, spec.dest)
        if value is None or spec.dest in skip:
            continue
        if isinstance(value, bool):
            words.append(spec.flag if value else f"--no-{spec.flag[2:]}")
        elif isinstance(value, list):
            words += [spec.flag, *map(str, value)]
        else:
            words += [spec.flag, str(value)]
    for override in args.overrides:
        words += ["--set", override]
    return words
