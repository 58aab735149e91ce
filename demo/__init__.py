"""The demo world: a deterministic demo release and a local server that leaks it among noise.

A package of its own beside `monitor` and `fingerprints`: it uses the monitor (the `demo`
command's runner drives the real pipeline), and the monitor imports it only when that
command runs, so the daemon never depends on it.
"""
