"""Load a config: YAML (with `extends:` bases) + `--set a.b=value` overrides → TengineConfig.

    cfg = load_config("configs/quickstart.yaml", ["optim.lr=3e-4", "training.max_steps=50"])

`extends` is a path relative to the including file or, where no such file exists, one of the
presets shipped inside the package (`presets/NAME.yaml`, the files in `tengine/config/presets/`,
so an installed wheel finds them too); mappings merge deeply (the child wins), lists are replaced. Override values are parsed as YAML
scalars (`3e-4` → float, `null`, `[1, 2]`). Any problem raises `ConfigError` with one line per
problem: the field path, the bad value and what is allowed, plus "did you mean" for unknown keys.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from tengine.config.schema import TengineConfig
from tengine.errors import ConfigError
from tengine.registry import did_you_mean

PRESETS_DIR = Path(__file__).resolve().parent / "presets"  # package data: ships in the wheel
MAX_EXTENDS_DEPTH = 8


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: Path, what: str = "config file") -> dict:
    """A YAML file whose top level is a mapping, or a ConfigError that says what is wrong."""
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _resolve_base(ref: str, including: Path) -> Path:
    """Next to the including file first (a user's own base wins), then the shipped presets."""
    name = ref.removeprefix("presets/")
    for candidate in (including.parent / ref, PRESETS_DIR / name, PRESETS_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{including}: extends '{ref}' not found (looked for "
                      f"{including.parent / ref} and for a preset of that name); presets: "
                      f"{', '.join(preset_names())}, as `extends: presets/NAME.yaml`")


def load_raw(path: str | Path, _depth: int = 0) -> dict:
    """The merged mapping of a YAML file and its `extends` chain, before validation."""
    path = Path(path)
    data = read_yaml(path)
    base_ref = data.pop("extends", None)
    if base_ref is None:
        return data
    if _depth >= MAX_EXTENDS_DEPTH:
        raise ConfigError(f"{path}: extends chain deeper than {MAX_EXTENDS_DEPTH} (a cycle?)")
    if not isinstance(base_ref, str):
        raise ConfigError(f"{path}: extends must be one path string, got {base_ref!r}")
    return deep_merge(load_raw(_resolve_base(base_ref, path), _depth + 1), data)


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    data = copy.deepcopy(data)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{item}': expected KEY=VALUE, e.g. --set optim.lr=3e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        set_value(data, key.strip(), value, what=f"--set {key}")
    return data


def set_value(data: dict, dotted: str, value, what: str | None = None) -> None:
    """Set `a.b.c` in a nested mapping in place, creating sections on the way."""
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{what or dotted}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def validate(data: dict) -> TengineConfig:
    try:
        return TengineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError([describe_error(e) for e in err.errors()]) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> TengineConfig:
    """Config from a YAML file (or `base` mapping, or defaults) with `KEY=VALUE` overrides."""
    data = load_raw(path) if path is not None else copy.deepcopy(base or {})
    return validate(apply_overrides(data, overrides))


def to_yaml(cfg: TengineConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


# --- error messages -------------------------------------------------------------------------

def _fields_at(loc: tuple, root: type[BaseModel] = TengineConfig) -> list[str]:
    """Field names valid at a location (for "did you mean" on unknown keys)."""
    model: type[BaseModel] | None = root
    for part in loc:
        field = model.model_fields.get(part) if model else None
        ann = getattr(field, "annotation", None)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return list(model.model_fields) if model else []


def describe_error(e: dict, root: type[BaseModel] = TengineConfig) -> str:
    """One line for one pydantic error: the field path, the bad value and what is allowed."""
    loc = tuple(p for p in e["loc"] if isinstance(p, str))
    path = ".".join(str(p) for p in e["loc"]) or "(config)"
    value = e.get("input")
    kind = e["type"]
    if kind == "extra_forbidden":
        valid = _fields_at(loc[:-1], root)
        return (f"{path}: unknown key{did_you_mean(loc[-1], valid)}; "
                f"valid keys here: {', '.join(valid)}")
    if kind == "missing":
        return f"{path}: required"
    msg = e["msg"]
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
        return msg if msg.split(" ", 1)[0].count(".") else f"{path}: {msg}"
    if kind in ("literal_error", "enum"):
        expected = e.get("ctx", {}).get("expected", "")
        return f"{path}: {value!r} is not allowed; allowed: {expected}"
    return f"{path}: {value!r} is invalid: {msg}"
