"""Target health: the back-off ladder, the down and recovered transitions, and the one
word `targets` and `report` show for a target.

Pure functions over a target's state row (`TargetStateRow`): the store persists what
`after_run` decides, the CLI and the report call `health` and `failing`, so the rule is
written once.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitor.models import NoticeKind, TargetHealth, TargetStateRow

if TYPE_CHECKING:
    from monitor.config import Target


def backoff_seconds(failures: int) -> float:
    """The escalating wait after `failures` failed runs in a row: 5 min, tripling, capped
    at a day, so a broken source is retried soon at first and rarely once it stays down."""
    return min(300.0 * 3.0 ** max(failures - 1, 0), 86400.0)


def later(now: str, seconds: float) -> str:
    """`now` (ISO 8601) plus `seconds`, to the second."""
    return (datetime.fromisoformat(now) + timedelta(seconds=seconds)).isoformat(
        timespec="seconds")


@dataclass(frozen=True)
class RunOutcome:
    """What a finished run changes in its target's state, and the transition it crossed
    (a notice is queued for it), if any."""

    changes: dict[str, Any]
    failures: int
    transition: NoticeKind | None


def after_run(state: TargetStateRow, status: str, *, now: str, error: str | None,
              down_after: int) -> RunOutcome:
    """How a run that ended with `status` at `now` moves the target's health.

    A failed run backs the target off on an escalating ladder; the `down_after`-th failure
    in a row is the one down transition, and the first success after it the one recovery.
    An interrupted run (shutdown) is neither success nor failure."""
    failures = state.get("consecutive_failures", 0)
    changes: dict[str, Any] = {}
    transition: NoticeKind | None = None
    if status == "ok":
        changes.update(last_success_at=now, consecutive_failures=0, last_error=None,
                       backoff_until=None, down_since=None)
        if state.get("down_since"):
            transition = "target_recovered"
    elif status == "failed":
        failures += 1
        changes.update(consecutive_failures=failures, last_error=error,
                       backoff_until=later(now, backoff_seconds(failures)))
        if failures == down_after:
            changes["down_since"] = now
            transition = "target_down"
    return RunOutcome(changes, failures, transition)


def backing_off(state: Mapping[str, Any], now: str) -> str | None:
    """The time before which the target is not crawled again (the back-off after a failed
    run), or None if it may be crawled at `now`."""
    until = state.get("backoff_until")
    return str(until) if until and until > now else None


def health(state: Mapping[str, Any], *, enabled: bool = True) -> TargetHealth:
    """One word for a target: disabled, down (past `down_after` failures), failing (its
    last run failed), ok, or new (never read successfully nor failed)."""
    if not enabled:
        return "disabled"
    if state.get("down_since"):
        return "down"
    if state.get("consecutive_failures"):
        return "failing"
    return "ok" if state.get("last_success_at") else "new"


def watched(targets: Sequence[Target]) -> set[str] | None:
    """The targets whose failures count, as `weightwatch targets` shows them: the config's
    enabled ones; None (every target with state) for a config that names none, as when a
    copy of the database is read elsewhere."""
    return {t.name for t in targets if t.enabled} if targets else None


def failing(states: Mapping[str, TargetStateRow],
            targets: Collection[str] | None = None) -> list[TargetStateRow]:
    """The states of the targets whose last run failed, by name; only those among
    `targets` unless None."""
    return [state for name, state in sorted(states.items())
            if health(state) in ("down", "failing") and (targets is None or name in targets)]
