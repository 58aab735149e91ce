"""How fast and how lean is `weightwatch register` on a large weight file?

Generates a file of --size-gb gigabytes (random bytes, so nothing compresses or shortcuts),
reads it once so it is in the page cache, then times in the same run, on the same cached
file: `md5sum`, `sha256sum`, `weightwatch register` (one read computing size, SHA-256,
SHA-1, MD5, the BEP 52 pieces root, the IPFS CIDs and the short hashes: AutoV1, AutoV3 for
safetensors, CRC-32, BLAKE3) and `weightwatch register --shards`
(the 1 GB shard SHA-256s as well), round after round (--runs, medians reported). Prints
each wall time, the ratios against md5sum (the slowest single digest) and sha256sum, and
register's peak RSS. With --gguf the file is a Q4_0 GGUF whose tensors register
fingerprints, and `register --no-tensors` is timed too, so the fingerprint's own cost
shows. Then the digest pass alone (`digest_file`, no database) with no CIDs and with each
set of IPFS layouts, to show what the CIDs cost: each kind of leaf (dag-pb 256 KiB, raw
256 KiB, raw 1 MiB) is one more SHA-256 pass over the file. In every mode: the digest pass
with and without the short hashes (their cost), and each hasher's CPU-seconds per GB
alone on one thread, with the wall-time bound they set on this machine's cores. The load
average (`uptime`) is printed before and after: on a shared machine the wall ratios
drift with it, the CPU-seconds much less.

    python benchmarks/register.py --size-gb 4
    OPENBLAS_NUM_THREADS=1 python benchmarks/register.py --gguf --size-gb 1

Goal (issue 16, --gguf): register of a 1 GB Q4_0 GGUF at most 2x md5sum, peak RSS under
150 MB; the fingerprint reads and sketches a fixed budget of rows (about 8 million values),
whatever the file's size, on its own thread beside the digest pass. Aim: 1.8x on a quiet
machine, so that the budget holds on a busier one (issue 18's short hashes included).

Goal (issue 4): register at most 1.2x md5sum alone; peak RSS at most 150 MB on 4 GB.
Goal (issue 18): with the new digests (CIDs among them), at most 1.3x md5sum.
Where fingerprints/_stitch.c is built (x86-64 with SHA-NI), MD5, SHA-1, SHA-256 and the
pieces-root leaves are one interleaved lane costing about what MD5 alone costs; the
hasher table prints that lane beside the separate hashlib costs, and the bound uses it.
Without it the hashlib lanes alone (MD5 1.5 + SHA-1 0.6 + two SHA-256 passes 0.7 each, per
GB) bound the 4 GB goal above 1.3x on two cores.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from fingerprints.ipfs import REGISTER_LAYOUTS

GNU_TIME = "/usr/bin/time"


# The IPFS layouts of fingerprints.ipfs, cumulatively: kubo's default first (the CID people
# post), then the layouts that share its leaves' kind, then those with 1 MiB raw leaves.
CID_SETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("no CIDs", ()),
    ("cid-v0 (kubo default)", ("cid-v0",)),
    ("+ cid-v1 (raw 256 KiB leaves)", ("cid-v0", "cid-v1")),
    ("+ cid-v1-1m, cid-v1-2025 (1 MiB)", ("cid-v0", "cid-v1", "cid-v1-1m", "cid-v1-2025")),
)


STITCHED = "md5+sha1+sha256+pieces (stitched)"
STITCHED_PARTS = ("md5", "sha1", "sha256", "pieces root")


def make_file(path: Path, size: int) -> None:
    rng = np.random.default_rng(20261127)
    block = 64 << 20
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(block, left)
            f.write(rng.bytes(n))
            left -= n


def make_gguf(path: Path, size: int) -> None:
    """A LLaMA-shaped Q4_0 GGUF of about `size` bytes: 4096x4096 matrices of random blocks
    (a float16 scale and 16 bytes of nibbles each), so register fingerprints its tensors as
    it would a real quantised release (64 of them, the most it prints)."""
    import gguf  # the test extra's llama.cpp writer

    rng = np.random.default_rng(20261127)
    rows, cols = 4096, 4096
    row_bytes = cols // 32 * 18
    writer = gguf.GGUFWriter(path, "llama", use_temp_file=True)
    writer.add_block_count(max(1, size // (rows * row_bytes)))
    for i in range(max(1, size // (rows * row_bytes))):
        blocks = rng.integers(0, 256, (rows, cols // 32, 18), dtype=np.uint8)
        scales = (rng.standard_normal((rows, cols // 32)) * 0.002).astype(np.float16)
        blocks[:, :, :2] = scales.view(np.uint8).reshape(rows, cols // 32, 2)
        writer.add_tensor(f"blk.{i}.ffn_up.weight", blocks.reshape(rows, row_bytes),
                          raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def warm(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(16 << 20)
        while f.readinto(buf):
            pass


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KB) of a command, measured by GNU time."""
    wall, rss, _ = timed_cpu(cmd, env)
    return wall, rss


def timed_cpu(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KB) and CPU seconds (user + system) of a command."""
    out = subprocess.run([GNU_TIME, "-f", "%e %M %U %S", *cmd], capture_output=True,
                         text=True, env=env, check=True)
    wall, rss, user, system = re.findall(r"([\d.]+) (\d+) ([\d.]+) ([\d.]+)\s*$",
                                         out.stderr)[-1]
    return float(wall), int(rss), float(user) + float(system)


def hasher_costs(path: Path, runs: int) -> dict[str, float]:
    """CPU-seconds per GB of each hasher of the digest pass alone, fed the page-cached,
    mapped file in the pass's chunks on this thread (median of `runs`): the work each lane
    of `digest_file` does, without the others competing for the cores."""
    import mmap
    import time

    import blake3

    from fingerprints.digests import (
        CHUNK_SIZE,
        Crc32Hasher,
        RangeHasher,
        StitchedHasher,
        SuffixHasher,
        stitching_available,
    )
    from fingerprints.ipfs import file_cid_hashers
    from fingerprints.torrent import PiecesRootHasher

    makers = {
        "md5": lambda: hashlib.md5(), "sha1": lambda: hashlib.sha1(),
        "sha256": lambda: hashlib.sha256(), "pieces root": PiecesRootHasher,
        **{f"{layout.name} leaves": (lambda layout=layout: file_cid_hashers([layout])[0])
           for layout in REGISTER_LAYOUTS},
        "crc32": Crc32Hasher, "blake3": blake3.blake3,
        "autov1": lambda: RangeHasher("autov1", 1 << 20, 1 << 16),
        "autov3 (safetensors only)": lambda: SuffixHasher("autov3", 0),
    }
    if stitching_available():  # register's lane for the first four where it is built
        makers[STITCHED] = StitchedHasher
    size = path.stat().st_size
    out: dict[str, float] = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        whole = memoryview(m)
        for label, make in makers.items():
            seconds = []
            for _ in range(runs):
                hasher = make()
                start = time.thread_time()
                for pos in range(0, size, CHUNK_SIZE):
                    hasher.update(whole[pos:pos + CHUNK_SIZE])
                seconds.append(time.thread_time() - start)
            out[label] = statistics.median(seconds) / (size / 1e9)
        whole.release()
    return out


def load() -> str:
    """The load averages, as `uptime` prints them."""
    return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_seconds(cmd: list[str]) -> float:
    """User plus system CPU seconds of a command: the work it does, which the load of
    other processes changes much less than its wall time."""
    return timed_cpu(cmd)[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3,
                        help="rounds; each command's median over them is reported")
    parser.add_argument("--dir", default=None, help="where to write the file (default: a temp dir)")
    parser.add_argument("--gguf", action="store_true",
                        help="a Q4_0 GGUF file instead of random bytes: register fingerprints "
                             "its tensors too (goal, issue 16: at most 2x md5sum, under 150 MB)")
    parser.add_argument("--cids-only", action="store_true",
                        help="only the digest pass with and without IPFS CIDs (issue 18)")
    args = parser.parse_args()
    if not Path(GNU_TIME).exists() or not shutil.which("md5sum"):
        sys.exit("needs GNU time (/usr/bin/time) and coreutils md5sum/sha256sum")

    load_before = load()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / ("model.gguf" if args.gguf else "weights.bin")
        size = int(args.size_gb * 1e9)
        print(f"writing {size / 1e9:.2f} GB of {'Q4_0 GGUF' if args.gguf else 'random bytes'} "
              f"to {path} ...", flush=True)
        if args.gguf:
            make_gguf(path, size)
            size = path.stat().st_size
        else:
            make_file(path, size)
        warm(path)

        db = Path(tmp) / "bench.db"
        # No config: the benchmark measures register, not whatever config.toml is nearby.
        env = {k: v for k, v in os.environ.items() if k != "WEIGHTWATCH_CONFIG"}
        config = Path(tmp) / "bench.toml"
        config.write_text("# defaults only\n")
        register_cmd = [sys.executable, "-m", "monitor", "--config", str(config),
                        "--db", str(db), "--log-level",
                        "error", "register", str(path), "--model", "bench", "--format", "json"]
        commands = {"md5sum": ["md5sum", str(path)], "sha256sum": ["sha256sum", str(path)]}
        if not args.cids_only:
            commands.update({"register": register_cmd,
                             "register --shards": register_cmd + ["--shards"]})
        if args.gguf and not args.cids_only:
            # Digests alone, so the fingerprint's own share shows (register less this).
            commands["register --no-tensors"] = register_cmd + ["--no-tensors"]
        # Round after round, every command once a round: on a shared machine the load
        # drifts, and each command then sees the same drift; medians over the rounds.
        times: dict[str, list[float]] = {label: [] for label in commands}
        cpu: dict[str, list[float]] = {label: [] for label in commands}
        peaks = dict.fromkeys(commands, 0)
        for _ in range(args.runs):
            for label, cmd in commands.items():
                db.unlink(missing_ok=True)
                wall, rss, seconds = timed_cpu(cmd, env)
                times[label].append(wall)
                cpu[label].append(seconds)
                peaks[label] = max(peaks[label], rss)
        median = {label: statistics.median(t) for label, t in times.items()}
        median_cpu = {label: statistics.median(t) for label, t in cpu.items()}
        md5, sha = median["md5sum"], median["sha256sum"]
        results = {label: (median[label], peaks[label]) for label in commands
                   if label.startswith("register")}

        # Interleaved rounds, each with its own md5sum, and the median ratio: on a shared
        # machine the load changes between rounds, less within one.
        # (Not with --gguf, which is about the tensor fingerprint: the digests are the same.)
        # The short hashes' cost: the digest pass (register's CIDs) without and with them.
        short_ratios: dict[str, list[float]] = {"without short hashes": [],
                                                 "with short hashes": []}
        short_cpu: dict[str, list[float]] = {label: [] for label in short_ratios}
        for _ in range(args.runs):
            md5_round = timed(["md5sum", str(path)])[0]
            for label in short_ratios:
                code = ("import sys; from fingerprints.digests import digest_file; "
                        "from fingerprints.ipfs import REGISTER_LAYOUTS as L; "
                        f"digest_file(sys.argv[1], cid_layouts=L, "
                        f"short_hashes={label.startswith('with ')})")
                wall, _, seconds = timed_cpu([sys.executable, "-c", code, str(path)])
                short_ratios[label].append(wall / md5_round)
                short_cpu[label].append(seconds)
        costs = hasher_costs(path, max(1, min(3, args.runs)))

        digest_ratios: dict[str, list[float]] = {label: [] for label, _ in CID_SETS}
        digest_cpu: dict[str, list[float]] = {label: [] for label, _ in CID_SETS}
        for _ in range(0 if args.gguf else max(3, args.runs)):
            md5_round = timed(["md5sum", str(path)])[0]
            for label, names in CID_SETS:
                code = ("import sys; from fingerprints.digests import digest_file; "
                        "from fingerprints.ipfs import LAYOUT_BY_NAME as L; "
                        f"digest_file(sys.argv[1], cid_layouts=[L[n] for n in {names!r}])")
                wall = timed([sys.executable, "-c", code, str(path)])[0]
                digest_ratios[label].append(wall / md5_round)
                digest_cpu[label].append(cpu_seconds([sys.executable, "-c", code, str(path)]))
            digest_cpu.setdefault("md5sum", []).append(cpu_seconds(["md5sum", str(path)]))

    load_after = load()
    gbps = lambda s: size / s / 1e9  # noqa: E731
    print(f"file            {size / 1e9:.2f} GB, page-cached, {os.cpu_count()} cores, "
          f"{args.runs} rounds (medians)")
    print(f"before          {load_before}\nafter           {load_after}")
    print(f"md5sum          {md5:7.2f} s  ({gbps(md5):.2f} GB/s)")
    print(f"sha256sum       {sha:7.2f} s  ({gbps(sha):.2f} GB/s)")
    shard_count = max(1, -(-size // 1_000_000_000))
    for label, (reg, peak) in results.items():
        what = ("sha256, sha1, md5, pieces root, IPFS "
                + ", ".join(layout.name for layout in REGISTER_LAYOUTS)
                + ", autov1, crc32, blake3"
                + (", tensor fingerprint" if args.gguf and not label.endswith("--no-tensors")
                   else ""))
        if label.endswith("--shards"):
            what += f", {shard_count} shard sha256s"
        print(f"\n{label:21} {reg:7.2f} s  ({gbps(reg):.2f} GB/s): {what}")
        goal = (f"  (goal <= {'2.0, aim 1.8 when quiet' if args.gguf else '1.2'})"
                if label == "register" else "")
        print(f"  ratio to md5sum     {reg / md5:.2f}{goal}  "
              f"(rounds: {', '.join(f'{t / m:.2f}' for t, m in zip(times[label], times['md5sum']))})")
        print(f"  CPU seconds         {median_cpu[label]:.2f}  "
              f"({median_cpu[label] / (size / 1e9):.2f} per GB; md5sum "
              f"{median_cpu['md5sum']:.2f})")
        print(f"  ratio to sha256sum  {reg / sha:.2f}")
        print(f"  peak RSS            {peak / 1024:.0f} MB  (goal <= 150 MB)")
    if "register --no-tensors" in median:
        share = median["register"] - median["register --no-tensors"]
        print(f"\ntensor fingerprint  {share:7.2f} s  (register less register --no-tensors): "
              f"{share / md5:.2f}x md5sum")
        # CPU seconds drift less with other processes' load than wall time does.
        share = median_cpu["register"] - median_cpu["register --no-tensors"]
        print(f"  in CPU seconds    {share:7.2f} s  against md5sum's "
              f"{median_cpu['md5sum']:.2f} s: {share / median_cpu['md5sum']:.2f}x "
              f"(register {median_cpu['register']:.2f} s, digests only "
              f"{median_cpu['register --no-tensors']:.2f} s)")
    print("\nshort hashes (AutoV1, AutoV3 for safetensors, CRC-32, BLAKE3): the digest pass "
          "alone (digest_file, register's CIDs), median ratio to md5sum over interleaved "
          "rounds, and CPU seconds per GB:")
    for label, ratios in short_ratios.items():
        print(f"  {label:22} {statistics.median(ratios):5.2f}  "
              f"{statistics.median(short_cpu[label]) / (size / 1e9):5.2f} s/GB  "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    extra = (statistics.median(short_cpu["with short hashes"])
             - statistics.median(short_cpu["without short hashes"]))
    print(f"  their cost             {extra / (size / 1e9):5.2f} CPU s/GB, "
          f"{extra / 2 / md5:.2f}x md5sum on 2 cores")
    cores = os.cpu_count() or 1
    print(f"\neach hasher alone on one thread, CPU seconds per GB (median; register runs "
          f"them on {cores} cores at once):")
    for label, per_gb in costs.items():
        print(f"  {label:28} {per_gb:5.2f}")
    # What register runs: the stitched lane in place of its four digests where it is built.
    stitched = STITCHED in costs
    replaced = STITCHED_PARTS if stitched else ()
    register_set = [k for k in costs
                    if not k.startswith("autov3") and k not in replaced]
    total = sum(costs[k] for k in register_set)
    longest = costs[STITCHED] if stitched else costs["md5"]
    md5_per_gb = median_cpu["md5sum"] / (size / 1e9)
    print(f"  sum (this file's hashers{', stitched' if stitched else ''}) {total:5.2f}: at "
          f"least {max(longest, total / cores):.2f} s/GB on {cores} idle cores, "
          f"{max(longest, total / cores) / md5_per_gb:.2f}x "
          f"md5sum's {md5_per_gb:.2f} CPU s/GB (before start-up, database and fingerprint)")
    if args.gguf:
        return
    print("\ndigest pass alone (digest_file), by IPFS layouts computed "
          "(median ratio to md5sum over interleaved rounds):")
    for label, ratios in digest_ratios.items():
        print(f"  {label:34} {statistics.median(ratios):5.2f}  "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    # CPU seconds are the work: on N idle cores the pass takes at least max(md5's share,
    # total / N) seconds, so this bound (not the noisy wall time) says whether a budget holds.
    md5_cpu = statistics.median(digest_cpu.pop("md5sum"))
    print(f"\nCPU seconds per GB (median), and the wall-time bound on {cores} idle cores "
          f"as a ratio to md5sum ({md5_cpu / (size / 1e9):.2f} s/GB):")
    for label, seconds in digest_cpu.items():
        cpu = statistics.median(seconds)
        bound = max(md5_cpu, cpu / cores) / md5_cpu
        print(f"  {label:34} {cpu / (size / 1e9):5.2f} s/GB  bound {bound:.2f}")


if __name__ == "__main__":
    main()
