"""Fingerprints of released model weights: file digests, indicator parsing, safe readers.

This is a pure library. It reads bytes from local files (or from a byte-range reader it is
handed) and parses text; it never touches the network, a database or the scheduler, so
release engineers can run it next to the weights and the daemon can run it on hostile
input. ``monitor`` may import it; it never imports ``monitor``.
"""
