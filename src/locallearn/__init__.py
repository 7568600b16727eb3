"""locallearn: train a network as K gradient-isolated stages, each by its own local loss.

The public API, imported on first use so that `import locallearn` (and every CLI start) stays fast:

- `create_learner(model_or_arch, method, K, ...)` -> `LocalLearner` (`forward`, `export()`, `stage_parameters`)
- `stage_optimizers(learner, torch.optim.SGD, lr=...)` -> one optimizer per stage
- `LocalEngine(learner, optimizers, amp=..., before_step=...)` with `train_step(x, y)`
- lower level: `split_model`, `trace_backbone`, `build_backbone`, `build_learner`, `MethodOptions`
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOME = {
    "create_learner": "api",
    "stage_optimizers": "api",
    "LocalEngine": "engine.local",
    "LocalLearner": "methods",
    "MethodOptions": "methods",
    "build_learner": "methods",
    "build_backbone": "models",
    "SplitNet": "split",
    "split_model": "split",
    "trace_backbone": "models.trace",
    "ConfigError": "errors",
}
__all__ = sorted(_HOME)

if TYPE_CHECKING:  # what type checkers and editors see; at run time `__getattr__` imports on first use
    from .api import create_learner as create_learner
    from .api import stage_optimizers as stage_optimizers
    from .engine.local import LocalEngine as LocalEngine
    from .errors import ConfigError as ConfigError
    from .methods import LocalLearner as LocalLearner
    from .methods import MethodOptions as MethodOptions
    from .methods import build_learner as build_learner
    from .models import build_backbone as build_backbone
    from .models.trace import trace_backbone as trace_backbone
    from .split import SplitNet as SplitNet
    from .split import split_model as split_model


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'locallearn' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
