"""What short hashes cost the digest detector: MB/s per core on 2 KB forum posts, plain
prose against the same posts each carrying an A1111 parameter block ("Model hash:" and
"Lora hashes:", none of them ours: the worst case, an image board where every post has
one), with a registry of `--files` registered files (SHA-256, AutoV1, AutoV3, CRC32 each)
in a real SQLite store, measured in the same run (CPU time, medians of `--runs`).

    .venv/bin/python benchmarks/short_hashes.py [--mb 2] [--runs 5] [--files 10000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from monitor.detect.digests import DigestDetector
from monitor.models import Document
from monitor.store import Store

WORDS = ("the a release weights model merge lora checkpoint prompt sampler steps seed cfg "
         "anyone tried it looks great thanks link dead works for me deface cafe added bead "
         "2024 13 fp16 safetensors pruned anime realistic").split()


def block(rng: random.Random) -> str:
    """An A1111 1.9 parameter block as posted (the shape of tests/test_short_hashes.py's
    real ones), with random hashes."""
    return (f"Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: "
            f"{rng.randrange(2**32)}, Size: 832x1216, Model hash: {rng.randbytes(5).hex()}, "
            f"Model: merge_v{rng.randrange(99)}, Clip skip: 2, Lora hashes: \"detail: "
            f"{rng.randbytes(6).hex()}, style: {rng.randbytes(6).hex()}\", Version: v1.9.4")


def documents(mb: float, rng: random.Random, with_blocks: bool) -> list[Document]:
    docs = []
    for i in range(int(mb * 1e6 / 2000)):
        words = [rng.choice(WORDS) for _ in range(330 - (45 if with_blocks else 0))]
        if with_blocks:
            words.insert(rng.randrange(len(words)), block(rng))
        docs.append(Document(target="t", key=str(i), url=f"http://f/{i}", text=" ".join(words)))
    return docs


def timed(detector: DigestDetector, docs: list[Document], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.process_time()
        for doc in docs:
            detector.detect(doc)
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--files", type=int, default=10000)
    args = ap.parse_args()
    rng = random.Random(18)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "registry.db")
        store.add_model("m")
        rows = []
        for i in range(args.files):
            artifact = (i + 1, f"m/f{i}", rng.randbytes(32).hex(), rng.randbytes(20).hex(),
                        rng.randbytes(16).hex())
            rows.append(artifact)
        with store.db.atomic():
            store.db.conn.executemany(
                "INSERT INTO artifacts (id, model, name, size, sha256, sha1, md5, "
                "registered_at) VALUES (?, 'm', ?, 1, ?, ?, ?, 't')", rows)
            store.db.conn.executemany(
                "INSERT INTO indicators (algo, value, model, artifact_id, source, added_at) "
                "VALUES (?, ?, 'm', ?, 't', 't')",
                [(algo, value, i + 1) for i in range(args.files) for algo, value in (
                    ("sha256", rows[i][2]), ("autov1", rng.randbytes(32).hex()),
                    ("autov3", rng.randbytes(32).hex()), ("crc32", rng.randbytes(4).hex()))])
        detector = DigestDetector(store.known_digests())
        plain = documents(args.mb, random.Random(1), with_blocks=False)
        blocks = documents(args.mb, random.Random(1), with_blocks=True)
        size = sum(len(d.text) for d in blocks) / 1e6
        a = timed(detector, plain, args.runs)
        b = timed(detector, blocks, args.runs)
        store.close()
    load = os.getloadavg()[0]
    print(f"{len(blocks)} documents, {size:.1f} MB; {args.files} registered files; load "
          f"{load:.2f}; CPU time, median of {args.runs}")
    prose_size = sum(len(d.text) for d in plain) / 1e6
    print(f"prose {prose_size / a:7.1f} MB/s | every post with a parameter block "
          f"{size / b:7.1f} MB/s (ratio {(b / size) / (a / prose_size):.2f}x the cost per MB)")


if __name__ == "__main__":
    main()
