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

from tengine.envdiff import diff_lines, env_diff
from tengine.errors import ConfigError


def read_env(run_dir: str | Path) -> dict[str, Any]:
    file = Path(run_dir) / "env.json"
    if not file.is_file():
        raise ConfigError(f"env diff: '{run_dir}' has no env.json; give a run dir (tengine "
                          "writes env.json when a run starts)")
    return json.loads(file.read_text())


def cmd_env_diff(args: argparse.Namespace) -> int:
    diff = env_diff(read_env(args.a), read_env(args.b))
    print(json.dumps(diff, indent=1) if args.json else "\n".join(diff_lines(diff, args.a, args.b)))
    return 0


def add_commands(sub) -> None:
    env = sub.add_parser("env", help="run environments").add_subparsers(dest="action", required=True)
    p = env.add_parser("diff", help="what differs between two runs' env.json")
    p.add_argument("a", metavar="RUN_A")
    p.add_argument("b", metavar="RUN_B")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_env_diff)
