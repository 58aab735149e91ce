"""Health: the back-off ladder, the down and recovered transitions, the one word
`targets` and `report` show for a target, and what `weightwatch health` calls unhealthy
(a watched target down, the daemon's heartbeat missing or stale, the outbox stuck).

Pure functions over rows the store reads (`TargetStateRow`, `HeartbeatRow`,
`QueueTrouble`): the store persists what `after_run` decides, the CLI, the report and the
metrics call the rest, so each rule is written once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypedDict

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


def down(states: Mapping[str, TargetStateRow],
         targets: Collection[str] | None = None) -> list[TargetStateRow]:
    """Those of `failing` that are down: past `alerts.target_down_after` failures in a row,
    the operator's line between a hiccup and an outage."""
    return [state for state in failing(states, targets) if health(state) == "down"]


# --- the daemon's heartbeat ------------------------------------------------------------

# The daemon records a beat this often (more often for a target on a shorter interval, so
# a short-interval test or deployment learns of a dead daemon as fast as of a dead target).
HEARTBEAT_INTERVAL = 60.0
# A beat may be late by this much before the daemon counts as hung: a run holding the event
# loop (a large weight file being fingerprinted) delays it without anything being wrong.
HEARTBEAT_GRACE = 60.0


class HeartbeatRow(TypedDict):
    """The `daemon` table's one row (migration 15): the last `weightwatch run`."""

    pid: int
    host: str
    started_at: str
    beat_at: str
    interval_s: float
    stopped_at: str | None
    metrics_url: str | None


def heartbeat_interval(target_intervals: Iterable[float]) -> float:
    """Seconds between beats: HEARTBEAT_INTERVAL, or the shortest target interval if less
    (never under a second)."""
    return max(1.0, min([HEARTBEAT_INTERVAL, *target_intervals]))


def stale_after(interval_s: float) -> float:
    """How old a beat may be before the daemon counts as dead or hung: its interval plus
    a grace of HEARTBEAT_GRACE, or of one more interval where that is shorter."""
    return interval_s + min(HEARTBEAT_GRACE, max(interval_s, 2.0))


def _age(now: str, then: str) -> float:
    return (datetime.fromisoformat(now) - datetime.fromisoformat(then)).total_seconds()


# --- the delivery queues ---------------------------------------------------------------

# An alert or notice still undelivered this long after it was queued, with at least one
# failed attempt, means delivery is broken (SMTP down, credentials wrong), not slow.
QUEUE_STUCK_AFTER = 3600.0
# A message given up on (after `mark_retry`'s last attempt) keeps `health` failing this
# long, so the operator sees it even if nobody looked the day it happened.
QUEUE_FAILED_WINDOW = 7 * 86400.0


class QueueTrouble(TypedDict):
    """One delivery queue's undelivered messages, as the store counts them."""

    queue: str                   # outbox (hit alerts) or notices (target health)
    pending: int                 # waiting to be sent, or being sent
    retrying: int                # of those, how many failed an attempt already
    retrying_since: str | None   # when the oldest of them was queued
    last_error: str | None       # the newest error among the retrying and failed
    failed: int                  # given up on
    failed_last_at: str | None   # the last attempt of the newest of those


# --- `weightwatch health` --------------------------------------------------------------

Check = Literal["target", "daemon", "outbox", "database"]


@dataclass(frozen=True)
class Finding:
    """One reason `weightwatch health` is not ok (a problem) or one worth a look (a
    warning), with what it concerns."""

    check: Check
    subject: str
    message: str


@dataclass(frozen=True)
class Verdict:
    problems: list[Finding]
    warnings: list[Finding]

    @property
    def ok(self) -> bool:
        return not self.problems


def verdict(states: Mapping[str, TargetStateRow], targets: Collection[str] | None,
            heartbeat: HeartbeatRow | None, queues: Sequence[QueueTrouble], *, now: str,
            stale_seconds: float | None = None, daemon: bool = True) -> Verdict:
    """What `weightwatch health` reports at `now`: a watched target down, the daemon's
    heartbeat missing, stopped or older than `stale_seconds` (default `stale_after` of
    its interval; not checked unless `daemon`), a queue stuck or given up on. A target
    failing but not yet down is a warning."""
    problems: list[Finding] = []
    warnings: list[Finding] = []
    for state in failing(states, targets):
        name = state.get("name", "?")
        error = state.get("last_error") or "no error recorded"
        failures = state.get("consecutive_failures", 0)
        if health(state) == "down":
            problems.append(Finding("target", name, f"target {name} is down since "
                                    f"{state.get('down_since')} ({failures} failed "
                                    f"run{'s' * (failures != 1)} in a row): {error}"))
        else:
            warnings.append(Finding("target", name, f"target {name} is failing ({failures} "
                                    f"failed run{'s' * (failures != 1)}, not yet down): "
                                    f"{error}"))
    if daemon:
        problem = _heartbeat_problem(heartbeat, now, stale_seconds)
        if problem:
            problems.append(Finding("daemon", "heartbeat", problem))
    for queue in queues:
        problems.extend(_queue_problems(queue, now))
    return Verdict(problems, warnings)


def _heartbeat_problem(beat: HeartbeatRow | None, now: str,
                       stale_seconds: float | None) -> str | None:
    if beat is None:
        return "no daemon has recorded a heartbeat in this database (is `weightwatch run` running?)"
    where = f"pid {beat['pid']} on {beat['host']}"
    if beat["stopped_at"]:
        return f"the daemon ({where}) stopped at {beat['stopped_at']}"
    limit = stale_seconds if stale_seconds is not None else stale_after(beat["interval_s"])
    age = _age(now, beat["beat_at"])
    if age > limit:
        return (f"the daemon's heartbeat is stale: last beat {age:.0f}s ago at {beat['beat_at']} "
                f"({where}), over the {limit:.0f}s allowed; the daemon is dead or hung")
    return None


def _queue_problems(queue: QueueTrouble, now: str) -> list[Finding]:
    what = "alert" if queue["queue"] == "outbox" else "health notice"
    error = f" (last error: {queue['last_error']})" if queue["last_error"] else ""
    found = []
    since = queue["retrying_since"]
    if since and _age(now, since) > QUEUE_STUCK_AFTER:
        found.append(Finding("outbox", queue["queue"], (
            f"{queue['retrying']} {what}(s) undelivered after failed attempts, the oldest "
            f"queued at {since}{error}")))
    failed_at = queue["failed_last_at"]
    if queue["failed"] and failed_at and _age(now, failed_at) <= QUEUE_FAILED_WINDOW:
        found.append(Finding("outbox", queue["queue"], (
            f"{queue['failed']} {what}(s) given up on after their last attempt, the newest at "
            f"{failed_at}{error}")))
    return found
