"""The one compiled part: fingerprints/_stitch.c (MD5, SHA-1, SHA-256 and BitTorrent v2
leaves in one interleaved pass, see its header for why). Everything else is declared in
pyproject.toml. `optional=True`: where it cannot be built (no C compiler), the install
still succeeds and fingerprints/digests.py hashes with hashlib instead."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("fingerprints._stitch", ["fingerprints/_stitch.c"],
                             optional=True, extra_compile_args=["-O2"])])
