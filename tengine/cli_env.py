"""`tengine env diff RUN_A RUN_B`: what differs between the environments two runs had.

    tengine env diff runs/a runs/b [--json]

Reads each run's `env.json` (written at its start, without a process or the network): python,
platform, CUDA, devices, threads, the git commit, branch and dirty flag, every installed
distribution, and the relevant environment variables (secrets masked as `***`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tengine.errors import ConfigError

FIELDS = ("python", "platform", "cuda", "devices", "cpu_count")


def read_env(run_dir: str | Path) -> dict[str, Any]:
    file = Path(run_dir) / "env.json"
    if not file.is_file():
        raise ConfigError(f"env diff: '{run_dir}' has no env.json; give a run dir (tengine "
                          "writes env.json when a run starts)")
    return json.loads(file.read_text())


def _mapping_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {"changed": {k: [a[k], b[k]] for k in sorted(a.keys() & b.keys()) if a[k] != b[k]},
            "only_a": {k: a[k] for k in sorted(a.keys() - b.keys())},
            "only_b": {k: b[k] for k in sorted(b.keys() - a.keys())}}


def env_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The fields, git, distributions and variables that differ (the same ones are left out)."""
    git_a, git_b = a.get("git") or {}, b.get("git") or {}
    return {
        "fields": {k: [a.get(k), b.get(k)] for k in FIELDS if a.get(k) != b.get(k)},
        "git": {k: [git_a.get(k), git_b.get(k)] for k in ("commit", "branch", "dirty")
                if git_a.get(k) != git_b.get(k)},
        "distributions": _mapping_diff(a.get("distributions") or a.get("packages") or {},
                                       b.get("distributions") or b.get("packages") or {}),
        "environment": _mapping_diff(a.get("environment") or {}, b.get("environment") or {}),
    }


def _lines(diff: dict[str, Any], a: str, b: str) -> list[str]:
    rows = [("", a, b)]
    for k, (va, vb) in {**diff["fields"], **{f"git {k}": v for k, v in diff["git"].items()}}.items():
        rows.append((k, str(va), str(vb)))
    for section in ("distributions", "environment"):
        d = diff[section]
        rows += [(f"{section[:-1] if section.endswith('s') else section} {k}", str(va), str(vb))
                 for k, (va, vb) in d["changed"].items()]
        rows += [(f"{section[:-1] if section.endswith('s') else section} {k}", str(v), "-")
                 for k, v in d["only_a"].items()]
        rows += [(f"{section[:-1] if section.endswith('s') else section} {k}", "-", str(v))
                 for k, v in d["only_b"].items()]
    if len(rows) == 1:
        return ["no difference in python, platform, devices, git, distributions or variables"]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def cmd_env_diff(args: argparse.Namespace) -> int:
    diff = env_diff(read_env(args.a), read_env(args.b))
    print(json.dumps(diff, indent=1) if args.json else "\n".join(_lines(diff, args.a, args.b)))
    return 0


def add_commands(sub) -> None:
    env = sub.add_parser("env", help="run environments").add_subparsers(dest="action", required=True)
    p = env.add_parser("diff", help="what differs between two runs' env.json")
    p.add_argument("a", metavar="RUN_A")
    p.add_argument("b", metavar="RUN_B")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_env_diff)
