"""URLs as they may be shown or logged: credentials and secret query values replaced.

Its own module, apart from the fetcher, so a command that only prints targets (`targets
list`) does not import the HTTP client; `monitor.fetch` re-exports both names.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters whose values are secrets in the wild (Torznab apikey, signed URLs...).
SECRET_PARAMS = {"apikey", "api_key", "key", "token", "access_token", "auth", "password",
                 "passkey", "secret", "signature", "sig", "x-amz-signature", "jackett_apikey",
                 "torrent_pass", "authkey", "rsskey"}


def redact_url(url: str) -> str:
    """The URL with credentials and secret-looking query values replaced by `REDACTED`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "REDACTED@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "REDACTED" if k.lower() in SECRET_PARAMS else v) for k, v in pairs],
                          safe=":/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
