"""The digest algorithms a registry holds, and the short forms people write some of them in.

One table for every reader and writer of digests: the store refuses an algorithm not in
`HEX_LENGTHS` (the database only bounds the name's shape, so a new algorithm is one line
here, not a table rebuild), bundles and indicator imports check each value's length against
it, and the detectors read the short forms from `SHORT_FORMS`.

Short forms (issue 18), as image-model hubs and AUTOMATIC1111's web UI show them:

- AutoV1: SHA-256 of the 64 KiB at offset 1 MiB, shown as its first 8 hex. A file of at
  most 1 MiB has the SHA-256 of nothing as its AutoV1 (`EMPTY_AUTOV1`), shared by every
  such file: it names none, so it is never registered. A1111 wrote it as "Model hash:
  925997e9" and in checkpoint titles ("model.ckpt [925997e9]") until January 2023; the
  2022 NovelAI leak spread so.
- AutoV2: the first 10 hex of the file's SHA-256: A1111's "Model hash:" since then, and
  Civitai's. Derived from the registered SHA-256, never stored for a registered file.
- AutoV3: SHA-256 of a safetensors file's tensor data (without the header, so editing the
  metadata keeps it: what `modelspec.hash_sha256` and `sshs_model_hash` hold, and A1111's
  "addnet hash" of a LoRA in its "Lora hashes:" list), shown by Civitai as its first 12
  hex (the A1111-forge tracker, issue 2878, shows Civitai's stored AutoV3 and the 12-hex
  form side by side; Civitai's API returns the 12: "AutoV3": "7AAE878CB805").
- CRC32 (8 hex) and BLAKE3 (64 hex) of the whole file, as Civitai lists them in
  `files[].hashes` of its model-version API.

A registered file holds AutoV1, AutoV3 and BLAKE3 at full length (64 hex); a hub record
imported without the file gives only what the hub shows (8 hex of AutoV1, 12 of AutoV3),
so those two accept either length.
"""

from __future__ import annotations

from dataclasses import dataclass

# Full length, in hex characters, of each algorithm's value as the registry holds it.
HEX_LENGTHS: dict[str, int] = {
    "md5": 32, "sha1": 40, "sha256": 64, "btih": 40, "btmh": 64,
    "pieces_root": 64, "shard": 64,
    # IPFS CIDs' root digests, one per import layout (fingerprints.ipfs)
    "cid-v0": 64, "cid-v1": 64, "cid-v1-1m": 64, "cid-v1-2025": 64,
    # Hub and A1111 hashes (issue 18); autov2 only for a hub record without its SHA-256
    "autov1": 64, "autov2": 10, "autov3": 64, "crc32": 8, "blake3": 64,
}
# AutoV1 of any file of at most 1 MiB: SHA-256 of the empty read at offset 1 MiB.
EMPTY_AUTOV1 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# Digests a registered artifact's own record holds (the `artifacts` table, a bundle's
# artifact entry); any other digest of an artifact travels as an indicator.
ARTIFACT_FIELDS = frozenset({"sha256", "sha1", "md5", "pieces_root", "shard"})


@dataclass(frozen=True)
class ShortForm:
    """A digest as written shortened: its first `length` hex, matched among the registered
    values of `algos` that start with it."""

    name: str              # "autov2"
    label: str             # "AutoV2", as hubs spell it
    length: int            # hex characters shown
    algos: tuple[str, ...]  # registry algorithms whose values it is a prefix of

    @property
    def bits(self) -> int:
        return 4 * self.length


SHORT_FORMS: dict[str, ShortForm] = {form.name: form for form in (
    ShortForm("autov1", "AutoV1", 8, ("autov1",)),
    ShortForm("autov2", "AutoV2", 10, ("sha256", "autov2")),
    ShortForm("autov3", "AutoV3", 12, ("autov3",)),
    ShortForm("crc32", "CRC32", 8, ("crc32",)),
)}


def value_lengths(algo: str) -> tuple[int, ...]:
    """The hex lengths a value of `algo` may have: its full length, and the length a hub
    shows for a short form kept at full length when registered (AutoV1, AutoV3)."""
    full = HEX_LENGTHS[algo]
    form = SHORT_FORMS.get(algo)
    return (full,) if form is None or form.length == full else (full, form.length)


def check_algo(algo: str) -> None:
    """Refuse (ValueError, one line) an algorithm the registry does not hold."""
    if algo not in HEX_LENGTHS:
        raise ValueError(f"unknown digest algorithm {algo[:40]!r} (known: "
                         f"{', '.join(HEX_LENGTHS)})")


def chance(form: ShortForm, registered: int) -> float:
    """The chance that an unrelated value written in this short form matches one of
    `registered` values by accident: registered / 2^bits."""
    return registered / float(2 ** form.bits)
