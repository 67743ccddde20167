"""Which web pages may open ``WS /api/ws``: the ``Origin`` check of the WebSocket handshake.

Browsers let any page open a WebSocket to any host, sending the page's origin along, and unlike an
HTTP answer the socket's messages are not kept from the page. So a page of any site could read the
live feed through a visitor's browser that reaches Flux (an open Flux on ``localhost``, an
intranet). The handshake is therefore refused (403, before it is accepted) when it carries an
``Origin`` that is neither Flux's own (the host and port the request was sent to) nor listed in
``FLUX_WS_ALLOWED_ORIGINS`` (``*``: every origin). A handshake without an ``Origin`` header comes
from a program, not a browser page, and is always let through: the check protects browsers'
users, and a program can send whatever headers it likes anyway.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from flux.origins import ANY_ORIGIN, DEFAULT_PORTS, InvalidOrigin, normalized


def _same_origin(origin: str, host_header: str | None) -> bool:
    """Whether the normalized ``origin`` names the host and port the request was sent to."""
    scheme, _, _ = origin.partition("://")
    if host_header is None or scheme not in DEFAULT_PORTS:
        return False
    try:
        sent_to = urlsplit(f"//{host_header.strip().lower()}")
        page = urlsplit(origin)
        ports = (page.port or DEFAULT_PORTS[scheme], sent_to.port or DEFAULT_PORTS[scheme])
    except ValueError:
        return False
    return page.hostname == sent_to.hostname and ports[0] == ports[1]


def refusal(connection: HTTPConnection, allowed: frozenset[str]) -> str | None:
    """Why a handshake may not go on (its ``Origin`` is not allowed), or None when it may."""
    origin = connection.headers.get("origin")
    if origin is None or ANY_ORIGIN in allowed:
        return None  # a program, not a browser page; or every page is welcome
    try:
        page = normalized(origin)
    except InvalidOrigin:
        page = None
    if page is not None and (page in allowed or _same_origin(page, connection.headers.get("host"))):
        return None
    return (
        f"WebSocket connections from pages of {origin[:100]!r} are not allowed: only Flux's own origin and "
        "those listed in FLUX_WS_ALLOWED_ORIGINS"
    )
