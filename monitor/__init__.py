"""weightwatch: a leak-detection monitoring daemon for released model weights.

The data flow goes one way: targets (config) -> fetcher -> source adapters -> documents ->
detectors -> hits -> store -> alerter. Each stage lives in its own module.
"""

__version__ = "0.1.0"
