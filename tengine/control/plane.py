"""ControlPlane: the job queue, scheduler, model registry, experiment DB and retraining
triggers over one store, behind one `call`.

    plane = ControlPlane("sqlite:///runs/control/tengine.db")
    plane.call("registry", "register", "mymodel", artifact_uri=..., sha256=..., size=...)

`call(component, method, ...)` is what the Ray actor exposes and what a local client calls
in-process, so both paths run exactly the same code. Only public methods of the five
components (`COMPONENTS`) are reachable.
"""

from __future__ import annotations

import time
from typing import Any

from tengine.control import safety
from tengine.control.experiments import ExperimentDB
from tengine.control.jobs import JobQueue
from tengine.control.registry import ModelRegistry
from tengine.control.scheduler import Scheduler
from tengine.control.store import open_store, redact_uri
from tengine.control.triggers import Triggers
from tengine.errors import Invalid
from tengine.registry import did_you_mean

COMPONENTS = ("jobs", "schedules", "registry", "runs", "triggers")


class ControlPlane:
    """`allowed_imports`: module prefixes, beyond `tengine.`, that submitted jobs' configs may
    import (models, losses, data sources): the operator's `control.allowed_imports`."""

    def __init__(self, store_uri: str, clock=time.time, allowed_imports: tuple[str, ...] = (),
                 artifact_root: str | None = None):
        self.store_uri = store_uri
        self.store = open_store(store_uri)
        self.allowed_imports = safety.allowed_imports(allowed_imports)
        self.jobs = JobQueue(self.store, clock, validate=lambda type, config: safety.check_job_imports(
            type, config, self.allowed_imports))
        self.schedules = Scheduler(self.store, self.jobs, clock)
        self.registry = ModelRegistry(self.store, clock, artifact_root)
        self.runs = ExperimentDB(self.store, clock)
        self.triggers = Triggers(self.store, self.jobs, clock)

    def call(self, component: str, method: str, *args: Any, **kwargs: Any) -> Any:
        if component not in COMPONENTS:
            raise Invalid(f"unknown component '{component}'{did_you_mean(component, list(COMPONENTS))}")
        target = getattr(self, component)
        fn = getattr(target, method, None)
        if method.startswith("_") or not callable(fn):
            public = [m for m in dir(target) if not m.startswith("_") and callable(getattr(target, m))]
            raise Invalid(f"{component} has no operation '{method}'{did_you_mean(method, public)}")
        return fn(*args, **kwargs)

    def status(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for job in self.jobs.list():
            states[job.state] = states.get(job.state, 0) + 1
        return {"store": redact_uri(self.store_uri), "identity": self.store.identity,
                "allowed_imports": list(self.allowed_imports),
                "artifact_root": self.registry._setting("artifact_root"), "jobs": states,
                "schedules": len(self.schedules.list()),
                "model_versions": len(self.registry.list_models(status=None))}

    def tick(self) -> list[str]:
        """One round of the background loop: expire dead leases, fire due schedules, evaluate
        the retraining triggers (each fires at most once per cooldown); the new jobs' ids."""
        self.jobs.expire_leases()
        created = self.schedules.tick()
        return created + [e["job_id"] for e in self.triggers.evaluate() if e.get("fired")]
