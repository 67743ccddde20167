"""Web origins (``scheme://host[:port]``) as ``FLUX_WS_ALLOWED_ORIGINS`` lists them; the check itself
is :mod:`api.live.origin`."""

from __future__ import annotations

from urllib.parse import urlsplit

ANY_ORIGIN = "*"
OPAQUE_ORIGIN = "null"  # what browsers send from sandboxed frames and file:// pages
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
EXAMPLE = "https://app.example.com or http://localhost:8080"


class InvalidOrigin(ValueError):
    """Text that is not an origin."""


def normalized(origin: str) -> str:
    """``origin`` as ``scheme://host[:port]``, lower case, without its scheme's default port;
    ``null`` as it is. Raises :class:`InvalidOrigin` for anything else (a path, no host...)."""
    text = origin.strip().lower()
    if text == OPAQUE_ORIGIN:
        return text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidOrigin(f"{origin!r} is not an origin such as {EXAMPLE}: {exc}") from exc
    extras = parts.query or parts.fragment or parts.username or parts.password or parts.path not in ("", "/")
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or extras:
        raise InvalidOrigin(f"{origin!r} is not an origin such as {EXAMPLE}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is None or port == DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def parse_allowed(setting: str) -> frozenset[str]:
    """The origins of a comma-separated list (``*`` stays ``*``); raises :class:`InvalidOrigin` for an
    entry that is not an origin."""
    entries = [entry.strip() for entry in setting.split(",") if entry.strip()]
    return frozenset(entry if entry == ANY_ORIGIN else normalized(entry) for entry in entries)
