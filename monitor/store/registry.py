"""The registry: released models, their artifacts and digests, tensor fingerprints,
remote scan verdicts and watermarked copies. It only grows, so counts and largest ids say
whether anything new was registered."""

from __future__ import annotations

import bisect
import json
import sqlite3
import urllib.parse
from array import array
from collections.abc import ItemsView, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from fingerprints.algos import (
    ARTIFACT_FIELDS,
    EMPTY_AUTOV1,
    HEX_LENGTHS,
    ShortForm,
    check_algo,
)
from monitor.models import (
    ArtifactRow,
    ImportedFileRow,
    IndicatorRow,
    KnownDigest,
    WatermarkRow,
    WeightScanRow,
    utcnow,
)
from monitor.store.connection import Database, Reader, insert, marks

if TYPE_CHECKING:
    # numpy and the fingerprint types load only where prints are read: every command opens
    # the store, few read tensor fingerprints; the bundle's row shape only for types.
    from fingerprints.bundle import BundleFile
    from fingerprints.weightprint import WeightPrint

# A stored tensor fingerprint: (model, file name, print); attributed, with the recipient
# of the artifact it was made from (None for the release itself).
StoredPrint = tuple[str, str, "WeightPrint"]
AttributedPrint = tuple[str, str, "WeightPrint", str | None]


class Registry:
    def __init__(self, db: Database):
        self.db = db

    def add_model(self, name: str, *, now: str | None = None) -> None:
        self.db.execute("INSERT INTO models (name, created_at) VALUES (?, ?) "
                        "ON CONFLICT(name) DO NOTHING", [name, now or utcnow()])

    def add_artifact(self, *, model: str, name: str, path: str | None, size: int, sha256: str,
                     sha1: str, md5: str, pieces_root: str | None = None,
                     shards: Sequence[str] = (), release: str | None = None,
                     recipient: str | None = None, cids: Mapping[str, str] | None = None,
                     now: str | None = None) -> tuple[int, list[bool]]:
        """Register one released file and its digests; returns its id and, per digest,
        whether it was new to the registry. `cids` maps an IPFS layout's name (`cid-v0`...)
        to the hex SHA-256 digest of the file's root in that layout: kept as indicators of
        the artifact like its other digests, under the layout's name."""
        now = now or utcnow()
        digests = [("sha256", sha256), ("sha1", sha1), ("md5", md5)]
        digests += sorted((cids or {}).items())
        if pieces_root:
            digests.append(("pieces_root", pieces_root))
        if len(shards) > 1:  # a single shard is the file's SHA-256, already listed
            digests += [("shard", shard) for shard in shards]
        with self.db.atomic():
            self.add_model(model, now=now)
            row = self.db.execute(
                "SELECT id FROM artifacts WHERE model = ? AND sha256 = ? AND recipient IS ?",
                [model, sha256, recipient]).fetchone()
            if row:
                artifact_id = row[0]
                # Registered before these digests existed: fill them in (but never blank
                # them, e.g. from a bundle written before they were computed).
                fill: dict[str, Any] = {}
                if pieces_root:
                    fill["pieces_root"] = pieces_root
                if shards:
                    fill["shards"] = json.dumps(list(shards))
                if fill:
                    self.db.table("artifacts").update(artifact_id, fill)
            else:
                artifact_id = insert(self.db, "artifacts", {
                    "model": model, "name": name, "path": path, "size": size, "sha256": sha256,
                    "sha1": sha1, "md5": md5, "pieces_root": pieces_root,
                    "shards": json.dumps(list(shards)), "release": release,
                    "recipient": recipient, "registered_at": now})
            added = [self.add_indicator(algo=algo, value=value, model=model, name=name, size=size,
                                        source=f"register:{path or name}", artifact_id=artifact_id,
                                        recipient=recipient, now=now)
                     for algo, value in digests]
        return artifact_id, added

    def add_folder_cids(self, *, model: str, name: str, cids: Sequence[tuple[str, str]],
                        recipient: str | None = None, now: str | None = None) -> list[bool]:
        """Record a released folder's IPFS CIDs (layout name, hex root digest): indicators
        of no single artifact, named after the folder, so a post of the whole folder's CID
        names it. Without a size: a folder is no file a torrent's manifest could list. The
        source names the folder, not its path: these travel in bundles."""
        return [self.add_indicator(algo=algo, value=value, model=model, name=name,
                                   source=f"register:{name}", recipient=recipient, now=now)
                for algo, value in cids]

    def add_short_hashes(self, artifact_id: int, model: str, hashes: Mapping[str, str]) -> None:
        """Record a registered file's hub and A1111 hashes (`fingerprints.algos`: "autov1",
        "autov3" and "blake3" at 64 hex, "crc32" at 8) as indicators of the artifact, named,
        sized and attributed as its other digests; adding them again changes nothing. The
        AutoV1 of a file of at most 1 MiB (`EMPTY_AUTOV1`, shared by all of them) is skipped.
        "autov2" is the SHA-256's first 10 hex, which the registry derives: given, it must
        agree with the artifact's SHA-256 and is not stored. A value of the wrong length or
        an unknown algorithm is refused (ValueError) before anything is written."""
        row = self.db.execute(
            "SELECT name, path, size, sha256, recipient FROM artifacts WHERE id = ? AND model = ?",
            [artifact_id, model]).fetchone()
        if row is None:
            raise ValueError(f"no artifact {artifact_id} of model {model[:60]!r}")
        name, path, size, sha256, recipient = row
        wanted: list[tuple[str, str]] = []
        for algo, value in sorted(hashes.items()):
            check_algo(algo)
            value = value.lower()
            if algo in ARTIFACT_FIELDS or algo.startswith("cid-"):
                raise ValueError(f"{algo} is not a short hash (add_artifact records it)")
            if not (len(value) == HEX_LENGTHS[algo] and _is_hex(value)):
                raise ValueError(f"{algo} must be {HEX_LENGTHS[algo]} hex characters, got "
                                 f"{value[:70]!r}")
            if algo == "autov1" and value == EMPTY_AUTOV1:
                continue  # every file of at most 1 MiB has it: it names none
            if algo == "autov2":
                if value != sha256[:len(value)]:
                    raise ValueError(f"autov2 {value} is not the start of the artifact's "
                                     f"SHA-256 {sha256[:16]}...")
                continue
            wanted.append((algo, value))
        with self.db.atomic():
            for algo, value in wanted:
                self.add_indicator(algo=algo, value=value, model=model, name=name, size=size,
                                   source=f"register:{path or name}", artifact_id=artifact_id,
                                   recipient=recipient)

    def artifacts(self, model: str | None = None) -> list[ArtifactRow]:
        """Registered files (name, size, digests, release, recipient), for manifest matching
        and bundles."""
        sql = "SELECT * FROM artifacts"
        params: list[Any] = []
        if model:
            sql += " WHERE model = ?"
            params.append(model)
        return cast(list[ArtifactRow], list(self.db.query(sql + " ORDER BY id", params)))

    def add_indicator(self, *, algo: str, value: str, model: str, source: str,
                      name: str | None = None, size: int | None = None,
                      artifact_id: int | None = None, recipient: str | None = None,
                      now: str | None = None) -> bool:
        """Add a known digest; True if it was not known for this model before. A name or size
        given for a digest already known fills the row's if it had none, and a name or size
        the row lacks is kept beside it (`imported_files`, which a second name of the same
        bytes needs), so sources imported in any order add up."""
        check_algo(algo)
        now = now or utcnow()
        value = value.lower()
        with self.db.atomic():
            self.add_model(model, now=now)
            row = self.db.execute(
                "SELECT id, name, size FROM indicators WHERE algo = ? AND value = ? AND model = ?",
                [algo, value, model]).fetchone()
            if row is None:
                self.db.execute(
                    "INSERT INTO indicators (algo, value, model, artifact_id, recipient, name, "
                    "size, source, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [algo, value, model, artifact_id, recipient, name, size, source, now])
                return True
            new_name = name if name and name != row[1] else None
            new_size = size if size is not None and row[2] is None else None
            if new_name is None and new_size is None:
                return False
            self.db.execute("UPDATE indicators SET name = COALESCE(name, ?), "
                            "size = COALESCE(size, ?) WHERE id = ?", [new_name, new_size, row[0]])
            if artifact_id is None:
                # What this source adds, kept beside the row (which holds one name); a
                # registered artifact's name and size are in `artifacts` already.
                self._add_file_claim(model=model, indicator_id=row[0], name=new_name,
                                     size=new_size, source=source, now=now)
            return False

    def add_imported_file(self, *, model: str, name: str, size: int, source: str,
                          now: str | None = None) -> bool:
        """Record a released file's name and size given without a digest (a size list, a
        v1 torrent's file list); True if it was not known for this model before."""
        now = now or utcnow()
        with self.db.atomic():
            self.add_model(model, now=now)
            return self._add_file_claim(model=model, indicator_id=None, name=name, size=size,
                                        source=source, now=now)

    def _add_file_claim(self, *, model: str, indicator_id: int | None, name: str | None,
                        size: int | None, source: str, now: str) -> bool:
        cur = self.db.execute(
            "INSERT INTO indicator_files (model, indicator_id, name, size, source, added_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [model, indicator_id, name, size, source, now])
        return cur.rowcount == 1

    def known_size(self, algo: str, value: str) -> tuple[int, str] | None:
        """A size already known for this digest (whatever the model: the same bytes have
        one size) and where it came from; None if none is."""
        row = self.db.execute(
            "SELECT COALESCE(a.size, i.size), i.source FROM indicators i "
            "LEFT JOIN artifacts a ON a.id = i.artifact_id WHERE i.algo = ? AND i.value = ? "
            "AND COALESCE(a.size, i.size) IS NOT NULL "
            "UNION ALL SELECT f.size, f.source FROM indicator_files f "
            "JOIN indicators i ON i.id = f.indicator_id "
            "WHERE i.algo = ? AND i.value = ? AND f.size IS NOT NULL LIMIT 1",
            [algo, value.lower(), algo, value.lower()]).fetchone()
        return (row[0], row[1]) if row else None

    def imported_files(self) -> list[ImportedFileRow]:
        """Every (name, size) the imported indicators state, for manifest matching: each name
        of a digest with each size of it (a checksum list names it, LFS pointers size it),
        and the files given without a digest. Registered artifacts are not included."""
        names: dict[int, dict[str, None]] = {}
        sizes: dict[int, dict[int, None]] = {}
        heads: dict[int, tuple[str, str]] = {}
        for ind_id, model, algo, name, size in self.db.execute(
                "SELECT id, model, algo, name, size FROM indicators WHERE artifact_id IS NULL "
                "AND (name IS NOT NULL OR size IS NOT NULL) "
                "UNION ALL SELECT i.id, i.model, i.algo, f.name, f.size FROM indicator_files f "
                "JOIN indicators i ON i.id = f.indicator_id WHERE i.artifact_id IS NULL"):
            heads[ind_id] = (model, algo)
            if name:
                names.setdefault(ind_id, {})[name] = None
            if size is not None:
                sizes.setdefault(ind_id, {})[size] = None
        out: list[ImportedFileRow] = [
            {"model": model, "name": name, "size": size, "algo": algo,
             "ref": f"indicator:{ind_id}"}
            for ind_id, (model, algo) in heads.items()
            for name in names.get(ind_id, ()) for size in sizes.get(ind_id, ())]
        out += [{"model": model, "name": name, "size": size, "algo": None,
                 "ref": f"file:{file_id}"}
                for file_id, model, name, size in self.db.execute(
                    "SELECT id, model, name, size FROM indicator_files "
                    "WHERE indicator_id IS NULL ORDER BY id")]
        return out

    def file_claims(self, models: Sequence[str] = ()) -> list[BundleFile]:
        """Every name and size imports gave (`indicator_files`), with the digest each names
        or sizes (algo and value; None for a file given without one), oldest first: what a
        bundle carries so the monitoring machine matches manifests as this one does."""
        where, params = "", list(models)
        if models:
            where = f" WHERE f.model IN ({marks(len(models))})"
        return cast("list[BundleFile]", list(self.db.query(
            "SELECT f.model, i.algo, i.value, f.name, f.size, f.source FROM indicator_files f "
            f"LEFT JOIN indicators i ON i.id = f.indicator_id{where} ORDER BY f.id", params)))

    def add_file_claim(self, *, model: str, digest: tuple[str, str] | None, name: str | None,
                       size: int | None, source: str, now: str | None = None) -> bool:
        """Record a name or size a bundle carries for a known digest of `model` (or a file
        given without a digest) exactly as the machine that wrote the bundle had it; True if
        new. `add_indicator` keeps only what a row lacks, which re-importing a row already
        named and sized would lose. A digest not in the registry is refused (ValueError)."""
        now = now or utcnow()
        with self.db.atomic():
            self.add_model(model, now=now)
            indicator_id = None
            if digest is not None:
                algo, value = digest
                row = self.db.execute(
                    "SELECT id FROM indicators WHERE algo = ? AND value = ? AND model = ?",
                    [algo, value.lower(), model]).fetchone()
                if row is None:
                    raise ValueError(f"no {algo} {value[:16]}... of {model[:60]} to name or size")
                indicator_id = row[0]
            return self._add_file_claim(model=model, indicator_id=indicator_id, name=name,
                                        size=size, source=source, now=now)

    def imported_files_version(self) -> int:
        """Grows whenever an import states a name or size not stated before."""
        return int(self.db.execute(
            "SELECT COALESCE(MAX(id), 0) FROM indicator_files").fetchone()[0])

    def models(self) -> list[str]:
        """Names of the registered models, sorted."""
        return [row[0] for row in self.db.execute("SELECT name FROM models ORDER BY name")]

    def indicators(self, *, models: Sequence[str] = (),
                   standalone: bool = False) -> list[IndicatorRow]:
        """Indicator rows in the order they were added; `standalone` keeps only those not
        derived from a registered artifact (imported lists, magnets, bundles)."""
        where: list[str] = []
        params: list[Any] = []
        if models:
            where.append(f"model IN ({marks(len(models))})")
            params.extend(models)
        if standalone:
            where.append("artifact_id IS NULL")
        sql = "SELECT * FROM indicators" + (" WHERE " + " AND ".join(where) if where else "")
        return cast(list[IndicatorRow], list(self.db.query(sql + " ORDER BY id", params)))

    def registry_counts(self) -> dict[str, int]:
        """Rows in each registry table; the registry only grows, so a change in these
        counts means something new was registered."""
        return {table: self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("models", "artifacts", "indicators")}

    # --- tensor fingerprints ------------------------------------------------------------

    def add_weight_print(self, *, model: str, name: str, print_: WeightPrint,
                         artifact_id: int | None = None,
                         now: str | None = None) -> tuple[int, bool]:
        """Store one weight file's tensor fingerprint; returns its id and whether it was
        new (the same file fingerprinted with the same key is stored once)."""
        now = now or utcnow()
        with self.db.atomic():
            self.add_model(model, now=now)
            row = self.db.execute(
                "SELECT id FROM weight_prints WHERE model = ? AND name = ? AND key = ?",
                [model, name, print_.key]).fetchone()
            if row:
                return row[0], False
            print_id = insert(self.db, "weight_prints", {
                "model": model, "artifact_id": artifact_id, "name": name, "key": print_.key,
                "null_dims": print_.null_dims, "version": print_.version,
                "tensors": len(print_.tensors), "added_at": now})
            # One tensor at a time (batch_size=1): a batch held every tensor's arrays as
            # bytes at once, tens of MB for a large model, most of register's peak memory.
            self.db.table("tensor_prints").insert_all(({
                "print_id": print_id, "position": i, "name": t.name, "canonical": t.canonical,
                "rows": t.shape[0], "columns": t.shape[1], "dtype": t.dtype,
                "stats": json.dumps(t.stats),
                "sketch": t.sketch.astype("<f2").tobytes(),
                "sample_index": t.sample_index.astype("<i8").tobytes(),
                "samples": t.samples.astype("<f4").tobytes(), "role": t.role or None,
                "column_sketch": (None if t.column_sketch is None
                                  else t.column_sketch.astype("<f2").tobytes())}
                for i, t in enumerate(print_.tensors)), batch_size=1)
        return print_id, True

    @overload
    def weight_prints(self, models: Sequence[str] = (), *,
                      with_recipient: Literal[False] = False) -> list[StoredPrint]: ...

    @overload
    def weight_prints(self, models: Sequence[str] = (), *,
                      with_recipient: Literal[True]) -> list[AttributedPrint]: ...

    def weight_prints(self, models: Sequence[str] = (), *, with_recipient: bool = False
                      ) -> list[StoredPrint] | list[AttributedPrint]:
        """Every stored tensor fingerprint as (model, file name, print), oldest first; with
        `with_recipient`, (model, file name, print, recipient of its artifact or None)."""
        import numpy as np

        from fingerprints.weightprint import SKETCH_DIMS, TensorPrint, WeightPrint

        where, params = "", list(models)
        if models:
            where = f" WHERE p.model IN ({marks(len(models))})"
        found: list[AttributedPrint] = []
        for row in list(self.db.query(
                "SELECT p.*, a.recipient AS recipient FROM weight_prints p LEFT JOIN artifacts a "
                f"ON a.id = p.artifact_id{where} ORDER BY p.id", params)):
            tensors = [TensorPrint(
                name=t["name"], canonical=t["canonical"], shape=(t["rows"], t["columns"]),
                dtype=t["dtype"], stats=json.loads(t["stats"]),
                # Every row before version 3, keyed runs of rows since (the key says which).
                sketch=np.frombuffer(t["sketch"], "<f2").reshape(-1, SKETCH_DIMS),
                sample_index=np.frombuffer(t["sample_index"], "<i8").astype(np.int64),
                samples=np.frombuffer(t["samples"], "<f4").reshape(-1, t["columns"]),
                role=t["role"] or "",
                column_sketch=None if t["column_sketch"] is None else np.frombuffer(
                    t["column_sketch"], "<f2").reshape(t["columns"], -1))
                for t in self.db.query("SELECT * FROM tensor_prints WHERE print_id = ? "
                                       "ORDER BY position", [row["id"]])]
            found.append((row["model"], row["name"], WeightPrint(
                key=bytes(row["key"]), tensors=tensors, null_dims=row["null_dims"],
                version=row["version"]), row["recipient"]))
        if with_recipient:
            return found
        return [(model, name, print_) for model, name, print_, _ in found]

    def printed_tensors(self, artifact_id: int) -> int | None:
        """How many tensors the stored fingerprint of this artifact has; None if it has none
        (re-registering a file does not fingerprint it again)."""
        row = self.db.execute("SELECT tensors FROM weight_prints WHERE artifact_id = ?",
                              [artifact_id]).fetchone()
        return row[0] if row else None

    def weight_print_version(self) -> int:
        """Grows whenever a fingerprint, a digest or a recipient's mark is added (scans look
        digests up first, and name recipients by marks): remote scans made before are
        stale. The tables only grow, so the sum of their largest ids does too."""
        return int(self.db.execute(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM weight_prints) + "
            "(SELECT COALESCE(MAX(id), 0) FROM indicators) + "
            "(SELECT COALESCE(MAX(id), 0) FROM watermarks)").fetchone()[0])

    def weight_scan(self, url: str) -> WeightScanRow | None:
        """The last remote scan of `url` (redacted), if any."""
        rows = list(self.db.query("SELECT * FROM weight_scans WHERE url = ?", [url]))
        return cast(WeightScanRow, rows[0]) if rows else None

    def record_weight_scan(self, url: str, *, verdict: str, model: str | None = None,
                           score: float | None = None, bytes_read: int = 0,
                           error: str | None = None, details: str = "{}",
                           now: str | None = None) -> None:
        """Remember a remote scan's verdict (the URL redacted) for this registry version."""
        self.db.table("weight_scans").upsert({
            "url": url, "scanned_at": now or utcnow(), "verdict": verdict, "model": model,
            "score": score, "bytes_read": bytes_read, "error": error, "details": details,
            "registry_version": self.weight_print_version()}, pk="url")

    # --- watermarks ----------------------------------------------------------------------

    def add_watermark(self, *, model: str, recipient: str, key: bytes, key_id: str,
                      version: int, densities: dict[str, float],
                      artifact_id: int | None = None, now: str | None = None) -> bool:
        """Record a recipient's marking key; True if new. Issuing the same recipient again
        with the same key keeps the record; a different key is refused (ValueError): two
        copies with different marks for one recipient would make attribution ambiguous."""
        now = now or utcnow()
        with self.db.atomic():
            self.add_model(model, now=now)
            row = self.db.execute("SELECT key_id FROM watermarks WHERE model = ? AND "
                                  "recipient = ?", [model, recipient]).fetchone()
            if row:
                if row[0] != key_id:
                    raise ValueError(f"{recipient} already has a {model} copy marked with "
                                     f"another key (key id {row[0]})")
                return False
            self.db.table("watermarks").insert({
                "model": model, "recipient": recipient, "key": key, "key_id": key_id,
                "version": version, "densities": json.dumps(densities, sort_keys=True),
                "artifact_id": artifact_id, "issued_at": now})
            return True

    def watermarks(self, model: str | None = None) -> list[WatermarkRow]:
        """Recipients with marked copies: model, recipient, key, key_id, densities (dict)."""
        sql, params = "SELECT * FROM watermarks", []
        if model:
            sql, params = sql + " WHERE model = ?", [model]
        rows = list(self.db.query(sql + " ORDER BY id", params))
        for row in rows:
            row["key"] = bytes(row["key"])
            row["densities"] = json.loads(row["densities"])
        return cast(list[WatermarkRow], rows)

    def known_digests(self) -> KnownDigests:
        """Every registered digest value (lowercase hex) to what it identifies: the values
        held compactly, what they identify read on a match."""
        return KnownDigests(self.db)

    def infohashes(self) -> list[KnownDigest]:
        """The registered torrents' infohashes (`btih`, `btmh`): what the `dht` source
        watches the swarms of."""
        return known_entries(self.db.query(
            _KNOWN_SQL + " WHERE i.algo IN ('btih', 'btmh') ORDER BY i.id"))


_KNOWN_SQL = (
    "SELECT i.id, i.algo, i.value, i.model, i.source, "
    "COALESCE(a.name, i.name) AS artifact, COALESCE(i.recipient, a.recipient) AS recipient, "
    "a.release AS release, COALESCE(a.size, i.size) AS size "
    "FROM indicators i LEFT JOIN artifacts a ON a.id = i.artifact_id")


def known_entries(rows: Iterable[dict[str, Any]]) -> list[KnownDigest]:
    """`_KNOWN_SQL`'s rows as registry entries."""
    return [KnownDigest(
        algo=row["algo"], value=row["value"], model=row["model"], artifact=row["artifact"],
        recipient=row["recipient"], source=row["source"], indicator_id=row["id"],
        release=row["release"], size=row["size"]) for row in rows]


class KnownDigests(Mapping[str, Sequence[KnownDigest]]):
    """The registry's digests as detectors read them. Each value is kept as its bytes
    (`packed`, 16 to 32 bytes and a set slot, where a dict of `KnownDigest`s cost about
    390 bytes a digest), so a crawl or a rematch holds a million digests in about 100 MB;
    what a value identifies is read from the database when a document mentions it (the
    store must still be open then). `items()` reads them all at once, for scans."""

    def __init__(self, db: Database):
        self._db = db
        # `targets test` closes the store before detecting: lookups then reopen the file.
        self._path = next((row[2] for row in db.execute("PRAGMA database_list")
                           if row[1] == "main"), "")
        packed: set[bytes] = set()
        # A value that is not hex (none is, from any reader of ours) is kept as it is.
        self._other: dict[str, list[KnownDigest]] = {}
        for (value,) in db.execute("SELECT DISTINCT value FROM indicators"):
            try:
                key = bytes.fromhex(value)
            except ValueError:
                key = None
            if key is not None and key.hex() == value:
                packed.add(key)
            else:
                self._other[value] = []
        self.packed = frozenset(packed)
        # Each short form's registered prefixes, read when first needed (`_prefixes`).
        self._by_form: dict[str, array[int]] = {}
        # Whether any IPFS CID is registered: only then is text searched for CIDs.
        self.has_cids = db.execute(
            "SELECT 1 FROM indicators WHERE algo LIKE 'cid-%' LIMIT 1").fetchone() is not None
        if self._other:
            for entry in self._query(f" WHERE i.value IN ({marks(len(self._other))})",
                                     list(self._other)):
                self._other[entry.value].append(entry)

    def starting_with(self, form: ShortForm, prefix: str) -> list[KnownDigest]:
        """The registered values of `form`'s algorithms that start with `prefix` (lowercase
        hex, `form.length` of it). The prefixes are held in memory (`_prefixes`), so a short
        hash that is not ours, nearly every one seen, costs no query; one that is is read
        by a range over the value index."""
        if len(prefix) != form.length or not _is_hex(prefix):
            return []  # int() would also take "_", blanks and a sign
        prefixes = self._prefixes(form)
        key = int(prefix, 16)
        at = bisect.bisect_left(prefixes, key)
        if at == len(prefixes) or prefixes[at] != key:
            return []
        return self._query(f" WHERE i.algo IN ({marks(len(form.algos))}) AND i.value >= ? "
                           "AND i.value < ?", [*form.algos, prefix, prefix + "g"])

    def registered(self, form: ShortForm) -> int:
        """How many distinct values a text written in `form` could match: the N of the
        N / 2^bits chance of an accidental match."""
        return len(self._prefixes(form))

    def _prefixes(self, form: ShortForm) -> array[int]:
        """The distinct prefixes of `form`'s registered values, sorted, 8 bytes each (a
        million SHA-256s' AutoV2s in 8 MB); read once per form, when a text first names
        one, so a crawl that never meets a short hash never reads them."""
        if form.name not in self._by_form:
            found: set[int] = set()
            for row in self._rows(f"SELECT substr(value, 1, {form.length}) AS p FROM "
                                  f"indicators WHERE algo IN ({marks(len(form.algos))})",
                                  form.algos):
                head = row["p"]
                if len(head) == form.length and _is_hex(head):
                    found.add(int(head, 16))
            self._by_form[form.name] = array("Q", sorted(found))
        return self._by_form[form.name]

    def _query(self, where: str, params: Sequence[str]) -> list[KnownDigest]:
        return known_entries(self._rows(_KNOWN_SQL + where + " ORDER BY i.id", params))

    def _rows(self, sql: str, params: Sequence[str]) -> list[dict[str, Any]]:
        try:
            return list(self._db.query(sql, params))
        except sqlite3.ProgrammingError:
            if not self._path:
                raise
            self._db = Reader(sqlite3.connect(
                f"file:{urllib.parse.quote(self._path)}?mode=ro", uri=True))
            return list(self._db.query(sql, params))

    def __getitem__(self, value: str) -> Sequence[KnownDigest]:
        if value in self._other:
            return self._other[value]
        try:
            key = bytes.fromhex(value)
        except ValueError:
            raise KeyError(value) from None
        if key not in self.packed or key.hex() != value:
            raise KeyError(value)
        return self._query(" WHERE i.value = ?", [value])

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, str):
            return False
        if value in self._other:
            return True
        try:
            key = bytes.fromhex(value)
        except ValueError:
            return False
        return key in self.packed and key.hex() == value

    def __iter__(self) -> Iterator[str]:
        yield from (key.hex() for key in self.packed)
        yield from self._other

    def __len__(self) -> int:
        return len(self.packed) + len(self._other)

    def items(self) -> ItemsView[str, Sequence[KnownDigest]]:
        index: dict[str, Sequence[KnownDigest]] = {}
        for entry in self._query("", []):
            cast(list[KnownDigest], index.setdefault(entry.value, [])).append(entry)
        return index.items()


_LOWER_HEX = frozenset("0123456789abcdef")


def _is_hex(value: str) -> bool:
    return _LOWER_HEX.issuperset(value)

