"""The demo world: a deterministic demo release and a local server that leaks it among noise."""
