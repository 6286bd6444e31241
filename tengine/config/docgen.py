"""Render the config reference (docs/config.md) from the schema: one table per section.

    python scripts/gen_config_docs.py          # rewrite docs/config.md
    python scripts/gen_config_docs.py --check  # exit 1 if docs/config.md is stale
"""

from __future__ import annotations

import json
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tengine.config.schema import TengineConfig

HEADER = """# Config reference

Generated from `tengine/config/schema.py` by `scripts/gen_config_docs.py`; do not edit by hand
(a test fails when this file is stale). Every field has a default; a YAML config sets only what
it changes, may start from a base with `extends: presets/NAME.yaml`, and any field can be
overridden on the command line with `--set section.field=value`.
"""


def _bounds(metadata) -> str:
    parts = []
    for m in metadata:
        for attr, sym in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            if getattr(m, attr, None) is not None:
                parts.append(f"{sym} {getattr(m, attr)}")
    return f" ({', '.join(parts)})" if parts else ""


def _type_name(ann) -> str:
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(ann)
        return _type_name(base) + _bounds(meta)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(ann))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(a) for a in typing.get_args(ann))
    if ann is type(None):
        return "null"
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(ann))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(ann, "__name__", str(ann))


def _default(field) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "required"
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):  # alert rules
        value = [v.model_dump(exclude_defaults=True) for v in value]
    return f"`{json.dumps(value if not isinstance(value, tuple) else list(value))}`"


def _is_section(field) -> bool:
    ann = field.annotation
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _table(model: type[BaseModel], prefix: str) -> list[str]:
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if _is_section(field):
            continue
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        kind = _type_name(field.annotation) + _bounds(field.metadata)
        rows.append(f"| `{prefix}{name}` | {kind} | {_default(field)} | {desc} |")
    return rows


def render() -> str:
    out = [HEADER, "## Top level", "", *_table(TengineConfig, ""), ""]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if _is_section(field):
                path = f"{prefix}{name}"
                out.extend([f"## `{path}`", "", field.description or "", "",
                            *_table(field.annotation, f"{path}."), ""])
                walk(field.annotation, f"{path}.")

    walk(TengineConfig, "")
    return "\n".join(out).rstrip() + "\n"
