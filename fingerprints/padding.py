"""Recipient sizes: padding every reader ignores, so each recipient's copy of a file has a
size no other copy has, and a listing of names and sizes alone names whose copy it was.

A torrent index page shows a torrent's file names and sizes and nothing more, and a v1
torrent carries no digest of any one file; a recipient's watermark is in the tensor values,
which only a download shows. So when a recipient's copy is written, its head grows by a
number of bytes derived from the recipient, where the formats allow bytes that change no
tensor:

- safetensors: spaces appended to the JSON header. Hugging Face's format description says
  the header "MAY be trailing padded with whitespace (0x20)"; the 8-byte length grows with
  it and the data section, whose offsets count from the header's end, is copied as it is.
  The padding is a multiple of 8 bytes, so a header the writer aligned to 8 (as the
  reference writer does, for memory-mapped zero-copy reads) stays aligned.
- GGUF: one more string key (PADDING_KEY) whose value is spaces, inserted after the last
  key. Tensor offsets count from the data section, which starts at the first multiple of
  `general.alignment` after the tensor infos; the value's length is chosen so the data
  section moves by exactly a multiple of the alignment and the tensor infos are copied as
  they are (llama.cpp's gguf spec, and gguf-py's GGUFReader, which the tests load it with).
- Every other format is refused (PaddingError): a PyTorch zip's members sit at offsets its
  central directory records (growing one shifts the rest, and `torch.load` checks them), an
  ONNX protobuf or a TFLite flatbuffer has no field every runtime ignores, and NumPy's .npy
  header is padded to 64 bytes by a rule its reader enforces. Those copies keep their size.

The amount is `slot * unit` bytes (unit 8, or the GGUF alignment), with the slot first
tried derived from a per-recipient seed and the file's name (HMAC-SHA256), then the next
ones in turn, skipping sizes already taken by another copy or file of the model: stable for
a recipient, collision-free across a release's recipients, at most SLOTS units (4 KiB of
spaces for safetensors; for GGUF at most MAX_GGUF_PADDING, 16 KiB: about 510 slots at the
default alignment of 32, fewer for a file that asks for a larger alignment).

Padding is not a watermark: re-saving the file drops it. It is what names the recipient
before anyone downloads a byte; the mark in the values is what proves it once the file is
in hand. Pure: reads through a ByteSource, writes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from fingerprints.gguf import GgufFile
from fingerprints.safetensors import SafetensorsReader
from fingerprints.tensors import WeightReader

__all__ = ["PADDING_KEY", "SLOTS", "Padded", "PaddingError", "SizesTaken", "choose_padding",
           "pad_bytes", "padded_head", "slots"]

SLOTS = 512
SAFETENSORS_UNIT = 8
# A GGUF file's padding grows by its alignment per slot; one that asks for a large alignment
# gets fewer slots rather than more bytes (about 510 slots at the default of 32).
MAX_GGUF_PADDING = 16 * 1024
# A GGUF key as gguf-py spells its own: a dotted lower_snake_case namespace.
PADDING_KEY = "weightwatch.padding"
_GGUF_STRING = 8  # GGUF_TYPE_STRING
# The key-value pair around its value: key length, key, value type, value length.
_GGUF_KV_OVERHEAD = 8 + len(PADDING_KEY.encode()) + 4 + 8


class PaddingError(ValueError):
    """A file whose size cannot be made a recipient's own; one line."""


class SizesTaken(PaddingError):
    """Every size the file could be padded to belongs to another copy already."""


@dataclass(frozen=True)
class Padded:
    """A copy's head: `head`, then the original's bytes from `data_start` on."""

    head: bytes
    data_start: int
    slot: int
    size: int  # the copy's size in bytes

    @property
    def shift(self) -> int:
        """How far every tensor's bytes move in the copy."""
        return len(self.head) - self.data_start


def _layout(reader: WeightReader) -> tuple[int, int, int]:
    """(bytes per slot, the smallest slot the format can use, how many slots)."""
    if isinstance(reader, SafetensorsReader):
        return SAFETENSORS_UNIT, 1, SLOTS
    if isinstance(reader, GgufFile):
        if not reader.infos_end:
            raise PaddingError("GGUF header spans unknown: parse it with fingerprints.gguf")
        if PADDING_KEY in reader.metadata:
            raise PaddingError(f"{reader.label}: padded already (it has {PADDING_KEY}); "
                               f"issue copies from the original")
        # The key must fit between the tensor infos' end and the moved data section.
        gap = reader.data_start - reader.infos_end
        first = max(1, -(-(_GGUF_KV_OVERHEAD - gap) // reader.alignment))
        count = min(SLOTS, MAX_GGUF_PADDING // reader.alignment - first + 1)
        return reader.alignment, first, max(1, count)
    kind = type(reader).__name__
    raise PaddingError(f"{kind}: only safetensors and GGUF files can be padded to a "
                       f"recipient's own size (other formats have no bytes every reader "
                       f"ignores)")


def slots(reader: WeightReader) -> range:
    """The slots `reader`'s file can be padded by (SLOTS of them, fewer for a GGUF file
    with a large alignment)."""
    _unit, first, count = _layout(reader)
    return range(first, first + count)


def padded_head(reader: WeightReader, slot: int) -> Padded:
    """The head of `reader`'s file padded by `slot` units (see the module docstring)."""
    unit = _layout(reader)[0]
    if slot not in (allowed := slots(reader)):
        raise PaddingError(f"padding slot {slot} is outside {allowed[0]}..{allowed[-1]}")
    source = reader.source
    if isinstance(reader, SafetensorsReader):
        start = reader.header_size
        header = source.read(8, start - 8) + b" " * (slot * unit)
        head = struct.pack("<Q", len(header)) + header
    else:
        assert isinstance(reader, GgufFile)
        start = reader.data_start
        fixed = source.read(0, 24)
        kv_count = struct.unpack_from("<Q", fixed, 16)[0]
        target = start + slot * unit  # the copy's data section starts here
        value = b" " * (target - reader.infos_end - _GGUF_KV_OVERHEAD)
        key = PADDING_KEY.encode()
        head = b"".join([
            fixed[:16], struct.pack("<Q", kv_count + 1), source.read(24, reader.kv_end - 24),
            struct.pack("<Q", len(key)), key, struct.pack("<I", _GGUF_STRING),
            struct.pack("<Q", len(value)), value,
            source.read(reader.kv_end, reader.infos_end - reader.kv_end)])
        assert len(head) == target
    return Padded(head=head, data_start=start, slot=slot,
                  size=len(head) + source.size - start)


def _order(seed: bytes, name: str, allowed: range) -> Iterator[int]:
    """Every slot once, from one the seed and name pick: a recipient's own order."""
    digest = hmac.new(seed, f"weightwatch-padding/v1\x1f{name}".encode(),
                      hashlib.sha256).digest()
    start = int.from_bytes(digest[:8], "little")
    for i in range(len(allowed)):
        yield allowed[(start + i) % len(allowed)]


def choose_padding(reader: WeightReader, *, seed: bytes, name: str,
                   taken: Collection[int]) -> Padded:
    """The padded head of the first slot, in the recipient's order (`seed`: per recipient
    and model, e.g. the watermark key; `name`: the file's name in the release), whose size
    is not in `taken` (the sizes of the model's other files and other recipients' copies).
    SizesTaken when every slot is taken; PaddingError for a format that cannot be padded."""
    unit = _layout(reader)[0]
    for slot in _order(seed, name, slots(reader)):
        # Both formats grow by exactly slot * unit: the head is built once, for the slot kept.
        if reader.source.size + slot * unit not in taken:
            return padded_head(reader, slot)
    raise SizesTaken(f"{name}: all {len(slots(reader))} padded sizes are taken by other copies; "
                       f"a copy with a size of its own cannot be written")


def pad_bytes(data: bytes, padded: Padded) -> bytes:
    """The whole padded copy of a file held in memory (`data`: the original's bytes)."""
    return padded.head + data[padded.data_start:]
