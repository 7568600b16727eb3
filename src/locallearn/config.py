"""Run configuration: typed dataclasses are the source of truth; YAML recipes and CLI flags fill them.

Precedence: dataclass defaults < recipe file (`--config`) < explicit flags < `--set key=value` overrides.
Every value, from any of them, is converted to its field's type here (`coerce`) and the whole config is then
checked (`RunConfig.validate`, which asks `pipeline` and each method part to check its own): an unknown key,
a value of the wrong type or out of range is a `ConfigError` naming the key, the value and what is expected.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .logs import require_tensorboard
from .methods import MethodOptions, MethodSpec, parse_method
from .schedule import RENAMED, SCHEDULES

# Keys a recipe may carry for humans; they do not change the run.
META_KEYS = ("reproduces", "notes", "paper")
PIPELINE_MODES = ("sync", "async")
OPTIMIZERS = ("sgd", "adamw")
PIPELINE_BACKENDS = ("auto", "gloo", "nccl")


@dataclass
class PipelineOptions:
    """Settings of `--engine pipeline` (one stage group per torchrun rank), e.g. `--set pipeline.replicas=2`."""

    depth: int = 2
    """Carries a rank may send ahead of what its successor has taken before it waits (bounds memory and lead)."""
    replicas: int = 1
    """Data-parallel replicas of every stage group; the world size must be a multiple of it."""
    ema_interval: int = 1
    """Steps between shipments of EMA sources (MAN, MAN++, MLAAN) to their twins' rank (1 = the local engine's
    updates; N: twins follow a copy up to N-1 steps old, and ranks wait for it once every N steps)."""
    mode: str = "sync"
    """sync (lock-step, equal to the local engine) or async (DGL-style replay buffer; isolated methods only)."""
    replay: int = 4
    """async: received carries each rank keeps, to train on again while its predecessor is slower."""
    max_reuse: int = 2
    """async: times one received carry may be trained on."""
    backend: str = "auto"
    """auto (nccl when every rank has a GPU of its own, else gloo with host copies), gloo or nccl."""
    timeout: float = 600.0
    """Seconds any single torch.distributed wait may block before the run fails."""
    heartbeat_timeout: float = 60.0
    """Seconds without a heartbeat after which a rank counts as dead and every rank stops with an error."""

    def validate(self) -> None:
        checks = [
            (self.depth >= 1, f"pipeline.depth must be >= 1, got {self.depth}"),
            (self.replicas >= 1, f"pipeline.replicas must be >= 1, got {self.replicas}"),
            (self.ema_interval >= 1, f"pipeline.ema_interval must be >= 1, got {self.ema_interval}"),
            (self.mode in PIPELINE_MODES, f"pipeline.mode must be sync or async, not '{self.mode}'"),
            (self.replay >= 1 and self.max_reuse >= 1, "pipeline.replay and pipeline.max_reuse must be >= 1"),
            (self.backend in PIPELINE_BACKENDS, f"pipeline.backend must be auto, gloo or nccl, not '{self.backend}'"),
            (
                self.timeout > 0 and self.heartbeat_timeout > 0,
                "pipeline.timeout and pipeline.heartbeat_timeout must be > 0",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass
class LogOptions:
    """Where a run's metrics go besides metrics.jsonl / metrics.csv, e.g. `--set log.tensorboard=true`."""

    tensorboard: bool = False
    """Also write TensorBoard event files under <out>/tensorboard/: per-stage loss and accuracy, LR, throughput
    and memory (needs `pip install 'locallearn[tensorboard]'`)."""


@dataclass
class RunConfig:
    arch: str = "resnet32"
    """Registered backbone name, or `package.module:callable` returning an nn.Sequential / Backbone."""
    zero_init_residual: bool = False
    """ImageNet ResNets: start the last BN of every residual block at 0 (MLAAN's ImageNet code)."""
    method: str = "infopro"
    """objective[:variant][+mechanism[:arg]]...: e2e, greedy, dgl, infopro[:contrast|:softmax] (+ mechanisms)."""
    K: int = 4
    """Number of gradient-isolated modules asked for (forced to 1 for e2e); MAN++ may train one more stage, the
    stem's: summary.json records K and the stages trained."""
    split: Any = None
    """table | balanced-memory | stem-merged | even | even-memory | [[stage, block], ...] | units:i,j."""
    cuts: list[str] | None = None
    """Module names where stages 1..K-1 begin, e.g. [layer2.1, layer3.0] (a traced model: any module), not split."""
    dataset: str = "cifar10-sample"
    """cifar10, cifar100, svhn, stl10, cifar10-sample (bundled) or imagenet (a train/ + val/ class-folder tree)."""
    data_dir: str | None = None
    """Folder holding the dataset's files as distributed (archive or extracted); for imagenet, train/ and val/."""
    image_size: int = 224
    """imagenet: the crop size S (RandomResizedCrop S to train, resize round(S*256/224) + CenterCrop S to test).
    profile and plan: the height and width of the synthetic input (default there: the dataset's)."""
    workers: int = 8
    """imagenet: JPEG-decoding worker processes per loader and per process (0 decodes in the main process)."""
    download: bool = False
    """Download the dataset into data_dir when it is missing (needs a network)."""
    train_limit: int | None = None
    """Use only the first N training images."""
    test_limit: int | None = None
    """Use only the first N test images."""
    epochs: int = 160
    """Training epochs."""
    batch_size: int = 1024
    """Training batch size (the whole batch, over every data-parallel replica)."""
    lr: float = 0.8
    """Peak learning rate of every stage's optimizer."""
    optimizer: str = "sgd"
    """sgd (with momentum and nesterov below) or adamw (betas 0.9, 0.999: the ViT recipes' optimizer)."""
    momentum: float = 0.9
    """SGD momentum."""
    nesterov: bool = True
    """Nesterov momentum."""
    weight_decay: float = 1e-4
    """SGD weight decay (L2)."""
    schedule: str = "cosine"
    """cosine (from lr down to 0, first epoch at lr), paper-cos (the InfoPro-family CIFAR rule: first epochs
    blend from 0.01 into the cosine over warmup_epochs; the reproduction recipes set it), step (x0.1 at
    milestones) or const."""
    warmup_epochs: int = 10
    """paper-cos: length of the linear blend from 0.01 into the cosine curve (the papers use 10)."""
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    """Fractions of `epochs` where the step schedule multiplies the LR by 0.1 (160 epochs: 80, 120)."""
    seed: int = 0
    """Seeds the initialisation; each epoch's shuffling and augmentation are a function of (seed, epoch)."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:1 ..."""
    amp: str = "auto"
    """auto (bf16 on CUDA, none on CPU), none, bf16, fp16."""
    channels_last: bool = True
    """Use channels_last memory format on CUDA (ignored on CPU)."""
    compile: bool = False
    """torch.compile each stage."""
    return_freed_memory: bool | None = None
    """CPU (glibc): give every tensor of 4 MiB or more its own mapping, returned to the OS when it dies, so the
    process's resident size follows the live tensors (ResNet-32 K = 16, batch 1024: 37% of E2E's peak RSS
    instead of 47-50%). Each such tensor is then new memory to fault in: cheap at batch 1024 with the huge pages a
    CPU run asks for, +40% step time at batch 256 (docs/results.md section 8). null (auto): on for batches of 512
    or more (`engine/host_memory.py`); false keeps glibc's own behaviour."""
    activation_checkpoint: str = "none"
    """none, per-unit (recompute every unit's activations in backward; any method) or per-stage:J (E2E: keep only
    the inputs of the J stages a local method at K = J would use, same `split`); same gradients, less memory."""
    engine: str = "local"
    """local (all stages in sequence on one device) or pipeline (one stage group per torchrun rank)."""
    eval_batch_size: int = 1024
    """Batch size of evaluation."""
    log_every: int = 20
    """Steps between progress-bar refreshes (each one syncs with the device once)."""
    checkpoint_every: int = 0
    """Also checkpoint every N training steps within an epoch (0: at the end of each epoch only); a run
    resumes from the last of them, mid-epoch, exactly as if it had not stopped."""
    threads: int | None = None
    """torch CPU threads (None keeps torch's default)."""
    method_options: MethodOptions = field(default_factory=MethodOptions)
    """Hyper-parameters of the objective and mechanisms (each declared by its part, e.g. InfoProOptions)."""
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)
    """Settings of the pipeline engine (ignored by the local engine)."""
    log: LogOptions = field(default_factory=LogOptions)
    """Extra metrics writers (TensorBoard)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Ranges and choices of a config whose values already have their fields' types (see `coerce`); its parts
        (`pipeline`, `method_options`) check themselves."""
        spec = self.spec
        if spec.is_e2e:
            self.K = 1
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}"),
            *[
                (
                    limit is None or limit >= 1,
                    f"{name} must be >= 1 images (drop it to use the whole split), got {limit}",
                )
                for name, limit in (("train_limit", self.train_limit), ("test_limit", self.test_limit))
            ],
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.momentum >= 0 and self.weight_decay >= 0, "momentum and weight_decay must be >= 0"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (
                all(0 <= m <= 1 for m in self.milestones),
                f"milestones are fractions of epochs in [0, 1], got {self.milestones}",
            ),
            (self.log_every >= 1, f"log_every must be >= 1 steps, got {self.log_every}"),
            (
                self.threads is None or self.threads >= 1,
                f"threads must be >= 1 (or null: torch's default), got {self.threads}",
            ),
            (self.workers >= 0 and self.image_size >= 1, "workers must be >= 0 and image_size >= 1"),
            (
                self.schedule not in RENAMED,
                f"schedule '{self.schedule}' is now called '{RENAMED.get(self.schedule)}'; set schedule: "
                f"{RENAMED.get(self.schedule)}",
            ),
            (
                self.schedule in SCHEDULES,
                f"schedule must be one of {', '.join(SCHEDULES)}, not '{self.schedule}'",
            ),
            (
                self.optimizer in OPTIMIZERS,
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, not '{self.optimizer}'",
            ),
            (self.amp in ("auto", "none", "bf16", "fp16"), f"amp must be auto, none, bf16 or fp16, not '{self.amp}'"),
            (self.engine in ("local", "pipeline"), f"engine must be local or pipeline, not '{self.engine}'"),
            (self.K >= 1, f"K must be >= 1, got {self.K}"),
            (
                self.K >= 2 or spec.is_e2e,
                f"K=1 leaves method '{self.method}' no module boundary: it would train end to end with an extra head; "
                "use --method e2e, or K >= 2",
            ),
            (
                self.checkpoint_every >= 0,
                f"checkpoint_every must be >= 0 steps, got {self.checkpoint_every}",
            ),
            (
                not (self.checkpoint_every and self.engine == "pipeline" and self.pipeline.mode == "async"),
                "checkpoint_every needs pipeline.mode sync: asynchronous ranks never finish a step together",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        parse_activation_checkpoint(self.activation_checkpoint)
        self.pipeline.validate()
        if self.log.tensorboard:
            require_tensorboard()
        self.method_options.validate()  # each objective's and mechanism's options check themselves

    @property
    def spec(self) -> MethodSpec:
        """`method` parsed (once per distinct string: `parse_method` is cached)."""
        return parse_method(self.method)


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Field name -> type (resolved from the annotations, which are strings under `from __future__`)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _describe(kind: Any) -> str:
    """What a value of field type `kind` must be, in words, for the error message."""
    if kind is float:
        return "a number (float, e.g. 0.1 or 1e-3)"
    if kind is int:
        return "a whole number (int)"
    if kind is bool:
        return "true or false (bool)"
    if kind is str:
        return "a string (str)"
    args = typing.get_args(kind)
    if typing.get_origin(kind) is list:
        return f"a list of {_describe(args[0]).split(' (')[0].removeprefix('a ')}s ({kind})"
    return " or ".join("null" if a is type(None) else _describe(a) for a in args)


def _exact(value: Any, kind: type) -> Any:
    """`value` as `kind`, or ValueError. YAML reads `1e-3` (no dot) as a string: numbers may come as text."""
    if isinstance(value, bool):  # a bool is an int to Python, never a number to a user
        if kind is bool:
            return value
        raise ValueError
    if kind is bool:
        raise ValueError
    if kind is str:
        if isinstance(value, (str, int, float)):  # `data_dir: 2024` is a folder name, not a number
            return str(value)
        raise ValueError
    if not isinstance(value, (str, int, float)):
        raise ValueError
    try:
        number = float(value)  # ValueError for text that is not a number
    except OverflowError:  # an integer beyond any float
        raise ValueError from None
    if not math.isfinite(number):
        raise ValueError
    if kind is float:
        return number
    if isinstance(value, int):
        return value
    if not number.is_integer():
        raise ValueError
    return int(number)


def coerce(value: Any, kind: Any) -> Any:
    """`value` converted to the field type `kind` (ValueError when it is not one)."""
    if kind is Any:
        return value
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):  # `X | None`
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(value, inner)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError
        return [coerce(v, args[0]) for v in value]
    if value is None:
        raise ValueError
    return _exact(value, kind)


def _apply(target: Any, values: dict[str, Any], where: str, prefix: str = "") -> None:
    types_ = field_types(type(target))
    for key, value in values.items():
        if key in META_KEYS and isinstance(target, RunConfig):
            continue
        if key not in types_:
            raise ConfigError(f"unknown key '{prefix}{key}' in {where}; valid keys: {', '.join(types_)}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"'{prefix}{key}' in {where} must be a mapping of {type(current).__name__} keys")
            _apply(current, value, where, f"{prefix}{key}.")
            continue
        try:
            setattr(target, key, coerce(value, types_[key]))
        except ValueError:
            shown = json.dumps(value, default=str)
            raise ConfigError(f"'{prefix}{key}' in {where} must be {_describe(types_[key])}; got {shown}") from None


def load_recipe(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe '{path}' not found; `locallearn list` shows the bundled recipes in configs/")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"recipe '{path}' cannot be read ({e.strerror or e}); check its permissions") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
        detail = f" (line {mark.line + 1}: {problem})" if mark and problem else ""
        raise ConfigError(f"recipe '{path}' is not valid YAML{detail}; fix it or start from `locallearn list`") from e
    if not isinstance(data, dict):
        raise ConfigError(f"recipe '{path}' must be a mapping of keys to values")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`method_options.ixx_1=5` -> (["method_options", "ixx_1"], 5) with a YAML-typed value."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"bad --set '{text}'; write key=value, e.g. --set method_options.ixx_1=5")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ConfigError(f"bad --set '{text}': the value is not valid YAML; quote it or fix the brackets") from e
    return key.strip().split("."), parsed


def build_config(
    recipe: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Resolve a config; `base` (a saved config, when resuming) replaces the defaults."""
    cfg = config_from_dict(base) if base is not None else RunConfig()
    if recipe is not None:
        _apply(cfg, load_recipe(recipe), f"recipe {recipe}")
    _apply(cfg, {k: v for k, v in (flags or {}).items() if v is not None}, "flags")
    for text in overrides or []:
        path, value = parse_override(text)
        nested: Any = value
        for part in reversed(path):
            nested = {part: nested}
        _apply(cfg, nested, f"--set {text}")
    cfg.validate()
    return cfg


def parse_activation_checkpoint(spec: str) -> tuple[str, int | None]:
    """`none` | `per-unit` | `per-stage:J` -> (kind, J or None)."""
    kind, _, count = str(spec).partition(":")
    if kind in ("none", "per-unit") and not count:
        return kind, None
    if kind == "per-stage" and count.isdigit() and int(count) >= 2:
        return kind, int(count)
    raise ConfigError(f"activation_checkpoint must be none, per-unit or per-stage:J with J >= 2 segments, not '{spec}'")


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a saved (resolved) config, e.g. from a checkpoint."""
    cfg = RunConfig()
    _apply(cfg, data, "saved config")
    return cfg
