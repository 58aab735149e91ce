"""Silences: stop emailing what the security team already knows about, for a while.

As in Prometheus Alertmanager: a silence is a set of matchers on a hit's labels and a time
window. Hits are still recorded while silenced; only their alerts wait. An alert a silence
holds back is deferred to the silence's end, so when the silence ends (or is expired by
hand) whatever it held back is emailed once, by the next flush.

Matchers are `KEY=VALUE` (equal), `KEY!=VALUE`, `KEY=~REGEX` (the whole value matches)
and `KEY!~REGEX`, on the labels in MATCH_KEYS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from monitor.models import SilenceRow, SilenceState

MATCH_KEYS = ("severity", "kind", "model", "recipient", "target", "url", "indicator",
              "artifact", "detector", "rule")
_MATCHER = re.compile(r"^([a-z_]+)(=~|!~|!=|=)(.*)$", re.DOTALL)


class SilenceError(ValueError):
    """A matcher or silence that cannot be used; one line."""


@dataclass(frozen=True)
class Matcher:
    key: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"

    def matches(self, labels: Mapping[str, Any]) -> bool:
        actual = "" if labels.get(self.key) is None else str(labels[self.key])
        if self.op in ("=", "!="):
            hit = actual == self.value
        else:
            hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op in ("=", "=~") else not hit


def parse_matcher(text: str) -> Matcher:
    """`KEY=VALUE` and friends; SilenceError naming the problem."""
    m = _MATCHER.match(text.strip())
    if not m:
        raise SilenceError(f"{text!r}: a matcher is KEY=VALUE, KEY!=VALUE, KEY=~REGEX or "
                           f"KEY!~REGEX")
    key, op, value = m.groups()
    if key not in MATCH_KEYS:
        raise SilenceError(f"{text!r}: unknown key {key!r} (known: {', '.join(MATCH_KEYS)})")
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise SilenceError(f"{text!r}: invalid regex: {exc}") from None
    return Matcher(key, op, value)


@dataclass(frozen=True)
class Silence:
    id: int
    matchers: tuple[Matcher, ...]
    reason: str
    created_by: str
    starts_at: str
    ends_at: str
    expired_at: str | None = None

    @classmethod
    def from_row(cls, row: SilenceRow) -> Silence:
        return cls(id=row["id"], reason=row["reason"], created_by=row["created_by"],
                   starts_at=row["starts_at"], ends_at=row["ends_at"],
                   expired_at=row["expired_at"],
                   matchers=tuple(parse_matcher(m) for m in json.loads(row["matchers"])))

    def state(self, now: str) -> SilenceState:
        return silence_state(self.expired_at, self.starts_at, self.ends_at, now)

    def active(self, now: str) -> bool:
        return self.state(now) == "active"

    def matches(self, labels: Mapping[str, Any]) -> bool:
        """All matchers hold (a silence with no matchers matches nothing)."""
        return bool(self.matchers) and all(m.matches(labels) for m in self.matchers)

    def describe(self) -> str:
        return " ".join(str(m) for m in self.matchers)


def silence_state(expired_at: str | None, starts_at: str, ends_at: str, now: str
                  ) -> SilenceState:
    """Where a silence stands at `now`: expired by hand, ended, active or pending (it
    starts later). The one rule `silence list` shows and the alerter applies."""
    if expired_at:
        return "expired"
    if ends_at <= now:
        return "ended"
    return "active" if starts_at <= now else "pending"


def silencing(silences: list[Silence], labels: Mapping[str, Any]) -> Silence | None:
    """The silence (among active ones) that holds this alert back the longest, if any."""
    found = [s for s in silences if s.matches(labels)]
    return max(found, key=lambda s: s.ends_at) if found else None
