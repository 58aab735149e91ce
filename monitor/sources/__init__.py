"""Source adapters by target kind: a target's `kind` in config.toml names one of these."""

from monitor.sources.base import Source, SourceError
from monitor.sources.forum import ForumSource
from monitor.sources.imageboard import ImageboardSource
from monitor.sources.torrent_index import TorrentIndexSource

ADAPTERS: dict[str, type[Source]] = {
    cls.kind: cls for cls in (ForumSource, ImageboardSource, TorrentIndexSource)
}

__all__ = ["ADAPTERS", "Source", "SourceError"]
