"""Fingerprint bundles to and from the store: export the registry, import a bundle.

The bundle format itself (reading, validating, writing) is `fingerprints.bundle`, a pure
library; this module is the part that knows the database. An import that adds to the
registry matches the stored documents again, as `monitor.registry` does for every way in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from fingerprints.algos import ARTIFACT_FIELDS
from fingerprints.bundle import (
    Bundle,
    BundleArtifact,
    BundleError,
    BundleFile,
    BundleIndicator,
    BundleMark,
    BundlePrint,
)
from fingerprints.watermark import key_id
from monitor import __version__
from monitor.models import utcnow
from monitor.registry import Rematch, registry_change, rematch_with_defaults
from monitor.rematch import RematchResult
from monitor.store import Store


@dataclass
class ImportCounts:
    models: int
    models_new: int
    artifacts: int
    artifacts_new: int
    digests: int
    digests_new: int
    prints: int = 0
    prints_new: int = 0
    watermarks: int = 0
    watermarks_new: int = 0
    files: int = 0  # names and sizes imports gave (bundle version 5)
    files_new: int = 0
    # The rematch that followed (None: the registry did not change, or no rematch asked).
    rematched: RematchResult | None = field(default=None, compare=False)


# --- export ------------------------------------------------------------------------------


def bundle_from_store(store: Store, models: Sequence[str] = ()) -> Bundle:
    """The registry (or the part of it for `models`) as a bundle: artifacts without their
    paths, the indicators that were not derived from an artifact plus the digests of
    artifacts that an artifact's bundle record has no field for (IPFS CIDs, AutoV1, AutoV3,
    CRC32, BLAKE3; as indicators they keep the file's name and size), the tensor
    fingerprints, each recipient's mark (its derived
    key: the master secret is never stored), and every name and size imports gave (each
    digest's, beyond the one name and size its indicator entry holds, and files given
    without a digest)."""
    chosen = sorted(set(models)) if models else store.models()
    wanted = set(chosen)
    artifacts: list[BundleArtifact] = [
        {"model": a["model"], "name": a["name"], "size": a["size"], "sha256": a["sha256"],
         "sha1": a["sha1"], "md5": a["md5"], "pieces_root": a["pieces_root"],
         "shards": json.loads(a["shards"] or "[]"), "release": a["release"],
         "recipient": a["recipient"]}
        for a in store.artifacts() if a["model"] in wanted]
    indicators: list[BundleIndicator] = [
        {"algo": i["algo"], "value": i["value"], "model": i["model"], "name": i["name"],
         "size": i["size"], "recipient": i["recipient"],
         # an artifact's source names its path on this machine, which never travels
         "source": i["source"] if i["artifact_id"] is None else f"register:{i['name']}"}
        for i in store.indicators(models=chosen)
        if i["artifact_id"] is None or i["algo"] not in ARTIFACT_FIELDS]
    copies = {a["id"]: a["sha256"] for a in store.artifacts() if a["recipient"]}
    marks: list[BundleMark] = [
        {"model": w["model"], "recipient": w["recipient"], "key": w["key"],
         "version": w["version"], "densities": w["densities"],
         "artifact": copies.get(w["artifact_id"]) if w["artifact_id"] is not None else None}
        for w in store.watermarks() if w["model"] in wanted]
    files: list[BundleFile] = [
        {"model": f["model"], "algo": f["algo"], "value": f["value"], "name": f["name"],
         "size": f["size"], "source": f["source"]}
        for f in store.registry.file_claims(chosen)]
    return Bundle(created_at=utcnow(), generator=f"weightwatch {__version__}", models=chosen,
                  artifacts=artifacts, indicators=indicators,
                  weight_prints=[BundlePrint(*found) for found in
                                 store.weight_prints(chosen, with_recipient=True)],
                  watermarks=marks, files=files)


# --- import ------------------------------------------------------------------------------


def import_bundle(store: Store, bundle: Bundle, *,
                  rematch: Rematch | None = rematch_with_defaults) -> ImportCounts:
    """Add a bundle's models, artifacts, indicators and tensor fingerprints to the registry
    in one transaction (all or nothing); what is already registered is skipped. If that
    changed the registry, `rematch` runs once the transaction is committed (its result is
    `rematched`).

    Standalone indicators go in before artifacts, as on the machine that wrote the bundle
    (where an artifact's digest that was already known as an indicator stayed that
    indicator), so the imported registry answers lookups as the original did."""
    with registry_change(store, rematch) as change:
        counts = _import(store, bundle)
    counts.rematched = change.rematched
    return counts


def _import(store: Store, bundle: Bundle) -> ImportCounts:
    before = store.registry_counts()
    digests = digests_new = 0
    with store.db.atomic():
        for model in bundle.models:
            store.add_model(model)
        for ind in bundle.indicators:
            digests += 1
            digests_new += store.add_indicator(
                algo=ind["algo"], value=ind["value"], model=ind["model"], name=ind["name"],
                size=ind["size"], source=ind["source"], recipient=ind["recipient"])
        for art in bundle.artifacts:
            _, added = store.add_artifact(
                model=art["model"], name=art["name"], path=None, size=art["size"],
                sha256=art["sha256"], sha1=art["sha1"], md5=art["md5"],
                pieces_root=art["pieces_root"], shards=art["shards"], release=art["release"],
                recipient=art["recipient"])
            digests += len(added)
            digests_new += sum(added)
        # After both: a name or size may be of an artifact's digest. The bundle was checked
        # to carry every digest named (parse_bundle), so each has its row by now.
        try:
            files_new = sum(store.registry.add_file_claim(
                model=f["model"], digest=None if f["algo"] is None or f["value"] is None
                else (f["algo"], f["value"]), name=f["name"], size=f["size"],
                source=f["source"]) for f in bundle.files)
        except ValueError as exc:  # a Bundle built by hand, not read by parse_bundle
            raise BundleError(f"files: {exc}") from None
        # Each fingerprint and mark linked to the file it describes, as on the machine that
        # wrote the bundle: a fingerprint without a recipient is the original's, whose kept
        # rows the watermark test compares with.
        by_file: dict[tuple[str, str, str | None], int] = {}
        by_copy: dict[tuple[str, str, str | None], int] = {}
        for a in store.artifacts():
            by_file.setdefault((a["model"], a["name"], a["recipient"]), a["id"])
            by_copy.setdefault((a["model"], a["sha256"], a["recipient"]), a["id"])
        prints_new = sum(store.add_weight_print(
            model=p.model, name=p.name, print_=p.fingerprint,
            artifact_id=by_file.get((p.model, p.name, p.recipient)))[1]
            for p in bundle.weight_prints)
        marks_new = sum(_import_mark(store, mark, None if mark["artifact"] is None else by_copy[
            (mark["model"], mark["artifact"], mark["recipient"])]) for mark in bundle.watermarks)
    after = store.registry_counts()
    return ImportCounts(
        models=len(bundle.models), models_new=after["models"] - before["models"],
        artifacts=len(bundle.artifacts), artifacts_new=after["artifacts"] - before["artifacts"],
        digests=digests, digests_new=digests_new, prints=len(bundle.weight_prints),
        prints_new=prints_new, watermarks=len(bundle.watermarks), watermarks_new=marks_new,
        files=len(bundle.files), files_new=files_new)


def _import_mark(store: Store, mark: BundleMark, artifact_id: int | None) -> bool:
    """Record one recipient's mark; True if new. A recipient already recorded with another
    key is refused (BundleError, so the whole import is undone): which of two marks is
    theirs could not be told."""
    try:
        return store.add_watermark(
            model=mark["model"], recipient=mark["recipient"], key=mark["key"],
            key_id=key_id(mark["key"]), version=mark["version"], densities=mark["densities"],
            artifact_id=artifact_id)
    except ValueError as exc:
        raise BundleError(f"watermarks ({mark['recipient'][:60]}): {exc}") from None
