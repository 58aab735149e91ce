"""Making what was written survive a crash or a power cut before it is relied on."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries (a new name in it), to the disk: what is
    renamed into place, or reported as written, must be there after a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
