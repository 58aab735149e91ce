"""Reading the CIDs of one page grows linearly with the page: `fingerprints.ipfs.find_cids`
on a gateway directory listing of N entries (each row a name with non-ASCII text, a link
to the entry's CID with `?filename=`), against decoding the same page's UTF-8 once (a
linear reference), measured in the same run (CPU time, medians of `--runs`). The ratio
stays flat as N grows fourfold twice when the work is linear; it grew with N while each
CID's str offset was the decode of everything before it (12,498 CIDs: 37 s).

    .venv/bin/python benchmarks/cid_listing.py [--runs 5] [--entries 2000,8000,32000]
"""

from __future__ import annotations

import argparse
import random

from timing import median_cpu

from fingerprints.ipfs import DAG_PB, Cid, find_cids


def listing(entries: int, rng: random.Random) -> str:
    """A boxo-shaped listing body of `entries` rows, each with its own CIDv0."""
    return "".join(
        f'<div><a href="/ipfs/QmRoot/héron-{i}.bin">héron-{i}.bin ☃</a></div><div><a '
        f'class="ipfs-hash" href="/ipfs/{Cid(0, DAG_PB, rng.randbytes(32))}?filename='
        f'héron-{i}.bin">Qm…</a></div><div>1.2 MB</div>\n' for i in range(entries))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--entries", default="2000,8000,32000")
    args = parser.parse_args()
    rng = random.Random(18)
    print(f"{'entries':>8} {'page MB':>8} {'find_cids s':>12} {'decode s':>9} {'ratio':>7}")
    for entries in (int(n) for n in args.entries.split(",")):
        text = listing(entries, rng)
        data = text.encode("utf-8")
        found = median_cpu(lambda: sum(1 for _ in find_cids(text)), args.runs)  # noqa: B023
        reference = median_cpu(lambda: data.decode("utf-8"), args.runs)  # noqa: B023
        assert sum(1 for _ in find_cids(text)) == entries
        print(f"{entries:>8} {len(data) / 1e6:>8.2f} {found:>12.4f} {reference:>9.5f} "
              f"{found / reference:>7.0f}")


if __name__ == "__main__":
    main()
