"""Name → object registries with "did you mean" errors.

Models, losses, data sources, collators, tokenizers and backends are each looked up by name in
one `Registry`; an unknown name raises `UnknownNameError` listing the valid names and the
closest match, so a typo in a config fails with the fix in the message.

`import_path("package.module:attr", field)` resolves the user's own factories, losses and
sources. A job run by the control plane runs with TENGINE_ALLOWED_IMPORTS set (comma-separated
module prefixes, `tengine/control/safety.py`), and then only modules under those prefixes are
imported: anyone who can submit a job must not be able to run any module on the cluster.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from tengine.errors import UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """A named collection; `field` is the config path shown in errors (e.g. 'model.name')."""

    def __init__(self, kind: str, field: str):
        self.kind = kind
        self.field = field
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False):
        """Register `obj` under `name`; without `obj`, returns a decorator."""

        def add(item: T) -> T:
            if name in self._items and not overwrite:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = item
            return item

        return add(obj) if obj is not None else add

    def visible(self) -> dict[str, T]:
        """What lookups see (a subclass may hide some items, e.g. test-only ones)."""
        return self._items

    def get(self, name: str) -> T:
        items = self.visible()
        if name not in items:
            raise UnknownNameError(self.unknown_message(name))
        return items[name]

    def unknown_message(self, name: str) -> str:
        names = self.names()
        return (
            f"{self.field}: unknown {self.kind} '{name}'{did_you_mean(name, names)}; "
            f"valid: {', '.join(names)}"
        )

    def names(self) -> list[str]:
        return sorted(self.visible())

    def __contains__(self, name: object) -> bool:
        return name in self.visible()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


ALLOWED_IMPORTS_ENV = "TENGINE_ALLOWED_IMPORTS"
ALLOWED_IMPORTS_SETTING = "control.allowed_imports"


def import_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Module prefixes as matched: stripped, empty ones dropped, each ending in '.', so 'mypkg'
    allows `mypkg` and `mypkg.models` but not `mypkg2`; first occurrence kept."""
    out: dict[str, None] = {}
    for prefix in prefixes:
        prefix = prefix.strip().rstrip(".")
        if prefix:
            out[prefix + "."] = None
    return tuple(out)


def import_allowed(module: str, prefixes: Iterable[str]) -> bool:
    return any(f"{module}.".startswith(p) for p in import_prefixes(prefixes))


def env_allowed_imports() -> tuple[str, ...] | None:
    """The prefixes TENGINE_ALLOWED_IMPORTS allows in this process; None when it is unset."""
    value = os.environ.get(ALLOWED_IMPORTS_ENV)
    return None if value is None else import_prefixes(value.split(","))


def not_allowed_message(field: str, module: str, allowed: Iterable[str], where: str) -> str:
    """The error for an import path outside the allowed prefixes: the field, the module, what
    is allowed and the setting that allows more."""
    package = module.split(".")[0]
    return (f"{field}: module '{module}' is not allowed {where} (allowed: "
            f"{', '.join(p + '*' for p in allowed) or 'none'}); an operator allows it with "
            f"{ALLOWED_IMPORTS_SETTING}: `tengine control start --allow-import {package}` or "
            f"`tengine jobs work --allow-import {package}`")


def import_path(spec: str, field: str) -> Callable:
    """Resolve 'package.module:attr' to the object; errors name the config field. With
    TENGINE_ALLOWED_IMPORTS set, a module outside its prefixes is refused before it is imported."""
    import importlib

    from tengine.errors import ConfigError

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{field}: '{spec}' is not an import path; use 'package.module:factory'")
    allowed = env_allowed_imports()
    if allowed is not None and not import_allowed(module_name, allowed):
        raise ConfigError(not_allowed_message(field, module_name, allowed,
                                              f"in this job ({ALLOWED_IMPORTS_ENV})"))
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{field}: cannot import module '{module_name}' ({err})") from None
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ConfigError(f"{field}: module '{module_name}' has no attribute '{attr}'") from None
    return obj
