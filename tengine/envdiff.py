"""What differs between two environment snapshots (`env.json`): `tengine env diff` and
`tengine runs compare` both show it. No torch here (the control plane uses it)."""

from __future__ import annotations

from typing import Any

FIELDS = ("python", "platform", "cuda", "devices", "cpu_count")
# variables that differ between any two launches and say nothing about what a run computes
VOLATILE = ("MASTER_PORT", "RAY_RAYLET_PID", "RAY_JOB_ID", "TORCHELASTIC_RUN_ID",
            "TORCHELASTIC_RESTART_COUNT", "TENGINE_LAUNCH")


def mapping_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {"changed": {k: [a[k], b[k]] for k in sorted(a.keys() & b.keys()) if a[k] != b[k]},
            "only_a": {k: a[k] for k in sorted(a.keys() - b.keys())},
            "only_b": {k: b[k] for k in sorted(b.keys() - a.keys())}}


def env_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The fields, git, distributions and variables that differ (the same ones are left out;
    so are VOLATILE variables: a port, a process id)."""
    git_a, git_b = a.get("git") or {}, b.get("git") or {}
    return {
        "fields": {k: [a.get(k), b.get(k)] for k in FIELDS if a.get(k) != b.get(k)},
        "git": {k: [git_a.get(k), git_b.get(k)] for k in ("commit", "branch", "dirty")
                if git_a.get(k) != git_b.get(k)},
        "distributions": mapping_diff(a.get("distributions") or a.get("packages") or {},
                                       b.get("distributions") or b.get("packages") or {}),
        "environment": mapping_diff(*({k: v for k, v in (env.get("environment") or {}).items()
                                       if k not in VOLATILE} for env in (a, b))),
    }


def diff_lines(diff: dict[str, Any], a: str, b: str) -> list[str]:
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
