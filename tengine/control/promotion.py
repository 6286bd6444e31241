"""Promotion only when better: a candidate version against the one an alias points at, on
numbers measured the same way (the same held-out data, the same exact evaluation).

    decision = reg.promote_if_better("m", 2, metric="val_loss", mode="min", margin=0.01,
                                     candidate_value=2.91, baseline_version=1,
                                     baseline_value=3.02, job_id="job-…")
    decision["decision"]        # promoted | kept | conflict

`better(...)` is the rule: with mode min the candidate must be below the baseline by more than
`margin` × |baseline| (max: above it). The alias moves by compare-and-set (it must still point
at the baseline the numbers were measured against, else `conflict` and nothing moves), and the
decision, both numbers and why are recorded in the same transaction either way.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import insert, select

from tengine.control.store import aliases, promotions
from tengine.errors import Invalid

P = promotions.c


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def better(candidate: float, baseline: float | None, mode: str, margin: float,
           has_baseline: bool = True) -> tuple[bool, str]:
    """`has_baseline` False: the alias points at no version (anything finite wins); a baseline
    version whose number is missing or not finite is never beaten: nothing was compared."""
    if mode not in ("min", "max"):
        raise Invalid(f"mode {mode!r} must be min or max")
    if not _finite(candidate):
        return False, f"the candidate's value {candidate!r} is not a finite number"
    if not has_baseline:
        return True, "nothing to beat: the alias points at no version"
    if not _finite(baseline):
        return False, f"the baseline's value {baseline!r} is not a finite number: nothing compared"
    need = abs(baseline) * margin
    gain = baseline - candidate if mode == "min" else candidate - baseline
    word = "below" if mode == "min" else "above"
    if gain > need:
        return True, f"{candidate:.6g} is {gain:.6g} {word} {baseline:.6g} (margin {need:.6g})"
    return False, (f"{candidate:.6g} is not {word} {baseline:.6g} by more than the margin "
                   f"{need:.6g} ({margin:.3g} relative)")


def decide_and_record(registry, name: str, candidate: int, *, alias: str, metric: str, mode: str,
                      margin: float, candidate_value: float, baseline_version: int | None,
                      baseline_value: float | None, job_id: str | None) -> dict[str, Any]:
    """The decision, made and recorded in one transaction (see the module docstring)."""
    ok, why = better(candidate_value, baseline_value, mode, margin,
                     has_baseline=baseline_version is not None)
    with registry.store.transaction() as db:
        registry._row(db, name, candidate)  # the candidate exists (NotFound otherwise)
        now_at = db.execute(select(aliases.c.version).where(
            aliases.c.name == name, aliases.c.alias == alias)).scalar()
        decision = "promoted" if ok else "kept"
        if ok and now_at != baseline_version:
            decision, why = "conflict", (f"alias '{alias}' moved to v{now_at} while v{candidate} "
                                         f"was measured against v{baseline_version}; nothing moved")
        row = {"name": name, "alias": alias, "candidate": candidate, "baseline": baseline_version,
               "metric": metric, "mode": mode, "margin": margin,
               "candidate_value": candidate_value, "baseline_value": baseline_value,
               "decision": decision, "reason": why, "job_id": job_id, "ts": registry.clock()}
        db.execute(insert(promotions).values(**row))
        if decision == "promoted":
            registry._move_alias(db, name, alias, candidate, old=now_at, by=job_id or "promotion",
                                 reason=f"{metric} {why}")
    return row


def history(registry, name: str) -> list[dict[str, Any]]:
    rows = registry.store.read(select(promotions).where(P.name == name).order_by(P.id))
    return [{k: v for k, v in dict(r).items() if k != "id"} | {"id": r["id"]} for r in rows]

