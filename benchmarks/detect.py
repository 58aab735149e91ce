"""Text detection speed: MB/s per core of the rule and digest detectors together, for
1k/10k/100k registered digests and 50/500/5,000 rules shaped like the shipped config's
(a name regex, a leak-talk regex and a keyword list per model), against pyahocorasick alone
over the same literals and `grep -F` over the same text, measured in the same run (medians
of `--runs`). Issue 16's targets: >= 50 MB/s with 10,000 digests and 500 rules, and 5,000
rules at most twice the cost of 500.

    .venv/bin/python benchmarks/detect.py [--mb 2] [--runs 3] [--digests 1000,10000,100000]
        [--rules 50,500,5000] [--memory 30000] [--engine pyahocorasick]

`--memory N` also registers N digests in a scratch database and prints what the detectors'
registry costs per digest, compact (`Store.known_digests()`: values as bytes) against the
KnownDigest dict it replaces (`known_digests().items()`), each built in the same run.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

import ahocorasick
from timing import median_cpu

from monitor.config import Rule, keywords_pattern
from monitor.detect import detect_all
from monitor.detect.digests import DigestDetector
from monitor.detect.literals import required_literals
from monitor.detect.multipattern import engines
from monitor.detect.rules import RuleDetector
from monitor.models import Document, KnownDigest
from monitor.store import Store

WORDS = ("the a release weights model quantised checksum forum thread reply quote post new "
         "anyone tried running it on two cards fine tune benchmark scores tokenizer context "
         "window license download mirror link dead works for me thanks deface cafe added "
         "bead 2024 13 gb fp16 gguf q4 llama falcon mistral").split()


def rules_like_config(n: int) -> list[Rule]:
    """A third each of name regexes, leak-talk regexes and keyword lists, one model each."""
    rules = []
    for i in range(n):
        model = f"model{i:04d}x"
        kind = i % 3
        if kind == 0:
            pattern = rf"(?i)(?<![\w-]){model}[-_ ]?7b(?!\w)"
        elif kind == 1:
            pattern = rf"(?i){model}[-_ ]?7b.{{0,80}}\b(leak(ed)?|torrent|magnet|weights? dump)\b"
        else:
            pattern = keywords_pattern([f"{model}-chat", f"{model} instruct", f"proj{i}codename"])
        rules.append(Rule(name=f"r{i}", pattern=pattern, model=model))
    return rules


def documents(mb: float, rng: random.Random) -> list[Document]:
    """2 KB posts of forum prose; one in fifty mentions a model, one in a hundred carries
    a hex digest (unregistered) and one in two hundred a magnet."""
    docs = []
    for i in range(int(mb * 1e6 / 2000)):
        words = [rng.choice(WORDS) for _ in range(330)]
        if i % 50 == 0:
            words.insert(100, f"model{rng.randrange(50):04d}x-7b leaked")
        if i % 100 == 0:
            words.insert(200, rng.randbytes(32).hex())
        if i % 200 == 0:
            words.insert(250, f"magnet:?xt=urn:btih:{rng.randbytes(20).hex()}&dn=x")
        docs.append(Document(target="t", key=str(i), url=f"http://f/{i}", text=" ".join(words)))
    return docs


def registry(n: int, rng: random.Random) -> dict[str, list[KnownDigest]]:
    known = {}
    for i in range(n):
        value = rng.randbytes((32, 20, 16)[i % 3]).hex()
        known[value] = [KnownDigest(algo=("sha256", "sha1", "md5")[i % 3], value=value,
                                    model="m", artifact="a", recipient=None, source="s",
                                    indicator_id=i)]
    return known


def registry_memory(n: int) -> None:
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "registry.db")
        with store.db.atomic():
            for i in range(n // 3):
                store.add_artifact(model="m", name=f"m/f{i}", path=f"/r/{i}", size=i,
                                   sha256=rng.randbytes(32).hex(), sha1=rng.randbytes(20).hex(),
                                   md5=rng.randbytes(16).hex())
        measured = []
        for build in (store.known_digests, lambda: dict(store.known_digests().items())):
            gc.collect()
            tracemalloc.start()
            start = time.perf_counter()
            held = build()
            seconds = time.perf_counter() - start
            measured.append((tracemalloc.get_traced_memory()[0] / len(held),
                             seconds * 1e6 / len(held)))
            tracemalloc.stop()
            del held
        store.close()
    (compact, compact_us), (full, full_us) = measured
    print(f"registry of {n} digests: compact {compact:.0f} bytes and {compact_us:.1f} us per "
          f"digest, KnownDigest dict {full:.0f} bytes and {full_us:.1f} us (ratio "
          f"{full / compact:.1f}x memory; timings under tracemalloc)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--digests", default="1000,10000,100000")
    ap.add_argument("--rules", default="50,500,5000")
    ap.add_argument("--memory", type=int, default=0)
    ap.add_argument("--engine", choices=engines(), default=engines()[0])
    args = ap.parse_args()
    rng = random.Random(16)
    docs = documents(args.mb, rng)
    text = "\n".join(d.text for d in docs)
    mb = len(text.encode()) / 1e6
    print(f"{len(docs)} documents, {mb:.1f} MB; load {os.getloadavg()[0]:.2f}; "
          f"CPU time (process_time), median of {args.runs}; literal engine {args.engine}")
    costs: dict[tuple[int, int], float] = {}
    for n_digests in map(int, args.digests.split(",")):
        known = registry(n_digests, rng)
        digests = DigestDetector(known)
        for n_rules in map(int, args.rules.split(",")):
            rules = rules_like_config(n_rules)
            detectors = [RuleDetector(rules, engine=args.engine), digests]
            ours = median_cpu(lambda: [detect_all(detectors, d) for d in docs], args.runs)
            literals = sorted({lit for r in rules for lit in required_literals(r.pattern) or []})
            automaton = ahocorasick.Automaton()
            for lit in literals:
                automaton.add_word(lit, lit)
            automaton.make_automaton()
            lowered = text.lower()
            aho = median_cpu(lambda: sum(1 for _ in automaton.iter(lowered)), args.runs)
            with tempfile.TemporaryDirectory() as tmp:
                pats, corpus = f"{tmp}/p", f"{tmp}/t"
                with open(pats, "w") as f:
                    f.write("\n".join(literals))
                with open(corpus, "w") as f:
                    f.write(text)

                def grep() -> None:
                    subprocess.run(["grep", "-c", "-i", "-F", "-f", pats, corpus],
                                   stdout=subprocess.DEVNULL, check=False)
                grep_wall = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    grep()
                    grep_wall.append(time.perf_counter() - start)
                grep_s = statistics.median(grep_wall)
            costs[(n_digests, n_rules)] = ours
            print(f"{n_digests:>7} digests {n_rules:>5} rules: detect {mb / ours:7.1f} MB/s | "
                  f"pyahocorasick alone {mb / aho:7.1f} MB/s (ratio {aho / ours:.2f}) | "
                  f"grep -F {mb / grep_s:7.1f} MB/s (ratio {grep_s / ours:.2f})")
    for n_digests in map(int, args.digests.split(",")):
        if (n_digests, 500) in costs and (n_digests, 5000) in costs:
            print(f"{n_digests} digests: 5,000 rules cost {costs[(n_digests, 5000)] / costs[(n_digests, 500)]:.2f}x 500 rules (target <= 2)")
    if (10000, 500) in costs:
        print(f"10,000 digests, 500 rules: {mb / costs[(10000, 500)]:.1f} MB/s per core (target >= 50)")
    if args.memory:
        registry_memory(args.memory)


if __name__ == "__main__":
    main()
