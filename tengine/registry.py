"""Name → object registries with "did you mean" errors.

Models, losses, data sources, collators, tokenizers and backends are each looked up by name in
one `Registry`; an unknown name raises `UnknownNameError` listing the valid names and the
closest match, so a typo in a config fails with the fix in the message.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
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

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(self.unknown_message(name))
        return self._items[name]

    def unknown_message(self, name: str) -> str:
        names = sorted(self._items)
        return (
            f"{self.field}: unknown {self.kind} '{name}'{did_you_mean(name, names)}; "
            f"valid: {', '.join(names)}"
        )

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))


def import_path(spec: str, field: str) -> Callable:
    """Resolve 'package.module:attr' to the object; errors name the config field."""
    import importlib

    from tengine.errors import ConfigError

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{field}: '{spec}' is not an import path; use 'package.module:factory'")
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
