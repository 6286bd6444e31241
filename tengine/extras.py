"""Optional dependencies: import one where it is used, or fail with the extra that provides it.

    transformers = require("transformers", "hf", "model.name 'hf'")
    check("ray", "ray", "tengine sweep (Ray Tune)")   # the same error, without importing it

The core install is the single-process engine; Ray, DeepSpeed, Accelerate, transformers, W&B,
ONNX and Optuna come with extras (`pip install 'tengine[hf]'`, `[all]` for everything). A
missing one is a `ConfigError` (exit 2) naming what asked for it and the command that installs
it, never an ImportError traceback from deep inside a run.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from tengine.errors import ConfigError

# What each multi-process backend imports, and the extra that provides it (preflight checks
# these before any work: `engine.run._check_backend`).
BACKEND_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "ddp": (("accelerate", "ray"),),
    "deepspeed": (("deepspeed", "deepspeed"),),
}


def _missing(top: str, extra: str, for_what: str, otherwise: str | None) -> ConfigError:
    return ConfigError(f"{for_what} needs the '{top}' package, which is not installed; "
                       f"install it with: pip install 'tengine[{extra}]'"
                       + (f" (or {otherwise})" if otherwise else ""))


def require(module: str, extra: str, for_what: str, otherwise: str | None = None) -> ModuleType:
    """Import `module`; when it is not installed raise ConfigError naming `extra` (and the
    `otherwise` way that needs no install, where there is one)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        if err.name is not None and err.name.split(".")[0] != top:
            raise  # the package is there but broken: its own error is the useful one
        raise _missing(top, extra, for_what, otherwise) from None


def installed(module: str) -> bool:
    """Whether top-level `module` can be imported, found without importing it (milliseconds:
    for a preflight that must not pay DeepSpeed's or Ray's import time)."""
    if sys.modules.get(module) is not None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # an import hook refusing it
        return False


def check(module: str, extra: str, for_what: str, otherwise: str | None = None) -> None:
    """`require` without the import: raise the same ConfigError when `module` is missing."""
    if not installed(module):
        raise _missing(module, extra, for_what, otherwise)
