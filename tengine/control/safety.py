"""What a job on the control plane may import, and the secrets kept out of its records.

    allowed = allowed_imports(["mycompany.models"])    # ('tengine.', 'mycompany.models.')
    check_job_imports("train", {"config": cfg.model_dump(mode="json")}, allowed)  # or Invalid
    redact("WANDB_API_KEY=abc123")                     # 'WANDB_API_KEY=***'

A config names code by import path (`model.name`, `task.loss`, `data.source` may each be
`package.module:attr`), and the job's process imports it: whoever can submit a job to a shared
control plane could otherwise run any module installed on the cluster (`os:system` is one
`--set` away). So a job may import only modules under the allowed prefixes: `tengine.` by
default, more with `control.allowed_imports` (`tengine control start --allow-import PREFIX`,
`tengine jobs work --allow-import PREFIX`). Two lines of defence:

1. at submit, `check_job_imports` refuses a job whose resolved config imports anything else
   (the submitter sees why at once, and the job never reaches a runner);
2. a runner starts the job's process with TENGINE_ALLOWED_IMPORTS set (`executors._run_child`),
   and `tengine.registry.import_path` refuses there too: this covers what submit cannot see,
   the trial configs of a sweep file and the config an evaluate job reads from a run dir.

Prefixes match at dots: `mypkg` allows `mypkg` and `mypkg.models`, not `mypkg2`. No torch, no
Ray here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tengine.errors import Invalid
from tengine.redact import redact, redact_env  # noqa: F401 — re-exported
from tengine.registry import (
    ALLOWED_IMPORTS_ENV,
    ALLOWED_IMPORTS_SETTING,  # noqa: F401 — re-exported for the CLI's help
    import_allowed,
    import_prefixes,
    not_allowed_message,
)

DEFAULT_ALLOWED = ("tengine.",)
# the config fields whose value may be an import path (`registry.import_path` resolves each)
IMPORT_FIELDS = (("model", "name"), ("task", "loss"), ("data", "source"), ("logging", "callbacks"))

__all__ = ["ALLOWED_IMPORTS_ENV", "DEFAULT_ALLOWED", "IMPORT_FIELDS", "allowed_imports",
           "check_job_imports", "config_imports", "redact", "redact_env"]


def allowed_imports(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The defaults plus `extra` (each item may hold several prefixes, comma-separated),
    normalised: stripped, deduplicated, each ending in '.'."""
    if isinstance(extra, str):
        extra = [extra]
    return import_prefixes([*DEFAULT_ALLOWED, *(p for item in extra for p in item.split(","))])


def config_imports(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, module) of every import path in a resolved train config (the shape of
    `cfg.model_dump(mode="json")`), e.g. [("model.name", "mypkg.models")]."""
    found = []
    for section, key in IMPORT_FIELDS:
        value = cfg[section].get(key) if isinstance(cfg.get(section), dict) else None
        for item in value if isinstance(value, list) else [value]:  # a list: logging.callbacks
            if isinstance(item, str) and ":" in item:
                found.append((f"{section}.{key}", item.partition(":")[0]))
    return found


def check_job_imports(job_type: str, job_config: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """Raise `Invalid` naming the field, the module and the setting when the job's config
    (`job_config["config"]`: train, retrain, evaluate jobs) imports outside `allowed`. A sweep
    job carries only its sweep file's path: its trials are checked where they run."""
    cfg = job_config.get("config") if isinstance(job_config, dict) else None
    if not isinstance(cfg, dict):
        return
    problems = [not_allowed_message(field, module, allowed,
                                    f"in {job_type} jobs on this control plane")
                for field, module in config_imports(cfg) if not import_allowed(module, allowed)]
    if problems:
        raise Invalid("\n".join(problems))
