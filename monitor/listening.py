"""Which addresses a weightwatch server may listen on without being told it is public.

The Datasette UI (`serve`) and the daemon's metrics (`run --metrics-addr`) have no login,
so both bind loopback unless the operator says otherwise; this is the one rule for both.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses: only those may serve without an
    explicit opt-in, since nothing we serve asks for a login."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(value: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT`, `:PORT` or `PORT` as (host, port); ValueError with a
    one-line reason otherwise. A bare port listens on `default_host` (loopback)."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, e.g. [::1]:9464")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: expected HOST:PORT with a port from 0 to 65535")
    return host or default_host, int(port_text)
