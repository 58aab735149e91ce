"""Rules that used to be decided in the CLI, tested where they now live, without it: what
`watermark detect` calls a scanned file."""

from __future__ import annotations

import pytest

from fingerprints.watermark import Attribution
from monitor.scan import VERDICTS, ScanReport
from monitor.watermark import detection_outcome


def marked(recipient: str) -> Attribution:
    return Attribution(outcome="marked", recipient=recipient, z=12.0, bound=1e-30)


@pytest.mark.parametrize(("verdict", "attribution", "outcome"), [
    ("match", marked("acme"), "marked"),
    ("match", Attribution(outcome="unmarked_original", recipient=None, z=0.4, bound=1.0),
     "unmarked_original"),
    # A match the watermark test did not run on (no marked copy of that model) is ours.
    ("match", None, "unmarked_original"),
    ("related", None, "not_our_model"),
    ("no_match", None, "not_our_model"),
    ("inconclusive", None, "inconclusive"),
    ("unknown_format", None, "unknown_format"),
    ("error", None, "error"),
])
def test_watermark_outcome_of_each_scan_verdict(verdict: str, attribution: Attribution | None,
                                                outcome: str) -> None:
    report = ScanReport(location="suspect.safetensors", verdict=verdict, attribution=attribution)
    assert detection_outcome(report) == outcome


def test_every_scan_verdict_has_a_watermark_outcome() -> None:
    outcomes = {detection_outcome(ScanReport(location="f", verdict=v)) for v in VERDICTS}
    assert outcomes == {"unmarked_original", "not_our_model", "inconclusive",
                        "unknown_format", "error"}
