"""Where a webhook may point: ``http``/``https`` URLs whose host resolves to allowed addresses.

Unless ``FLUX_WEBHOOK_ALLOW_PRIVATE=true``, every address the host resolves to must be a public
one (not loopback, private, link-local, multicast, reserved or unspecified). The check runs at
registration and again before every delivery attempt, and the delivery connects to the address
it checked (the URL's host goes in ``Host`` and, for https, in the TLS server name), so a DNS
answer that changes between the check and the connection (DNS rebinding) cannot redirect it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flux.model.webhooks import InvalidWebhook, blocked_address

MAX_URL_LENGTH = 2048

Resolver = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True)
class Target:
    """Where a webhook URL points: scheme, host (an IP literal without brackets) and port."""

    scheme: str
    host: str
    port: int


def check_url(url: Any) -> Target:
    """The target of an ``http``/``https`` URL with a host and no credentials, else :class:`InvalidWebhook`."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise InvalidWebhook(f"url must be an http or https URL of at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidWebhook(f"url {url!r} is not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidWebhook(f"url must use http or https, not {parts.scheme or 'no scheme'!r}")
    if not parts.hostname:
        raise InvalidWebhook(f"url {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhook("url must not carry credentials (user:password@); verify the signature instead")
    if parts.fragment:
        raise InvalidWebhook("url must not have a fragment (#...)")
    return Target(scheme, parts.hostname, port or (443 if scheme == "https" else 80))


class TargetRefused(Exception):
    """The URL may not be a webhook target (the message says why)."""


async def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in the resolver's order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def check_target(url: str, allow_private: bool, resolver: Resolver = resolve) -> tuple[Target, list[str]]:
    """The URL's target and the addresses it resolves to, all allowed; :class:`TargetRefused` otherwise."""
    try:
        target = check_url(url)
    except InvalidWebhook as exc:
        raise TargetRefused(str(exc)) from exc
    try:
        addresses = await resolver(target.host, target.port)
    except (OSError, UnicodeError) as exc:
        raise TargetRefused(f"url host {target.host!r} does not resolve: {exc}") from exc
    if not addresses:
        raise TargetRefused(f"url host {target.host!r} resolves to no address")
    if not allow_private:
        for address in addresses:
            why = blocked_address(address)
            if why is not None:
                raise TargetRefused(
                    f"url host {target.host!r} resolves to {why}; webhooks may only reach public addresses "
                    "(FLUX_WEBHOOK_ALLOW_PRIVATE=true lifts this)"
                )
    return target, addresses


@dataclass(frozen=True)
class Request:
    """How to send one delivery: the URL to connect to, extra headers, httpx request extensions."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, Any]


def pinned(url: str, target: Target, address: str) -> Request:
    """``url`` rewritten to connect to ``address`` while the server still sees the URL's host."""
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    rewritten = urlunsplit((parts.scheme, f"{literal}:{target.port}", parts.path or "/", parts.query, ""))
    extensions: dict[str, Any] = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return Request(rewritten, {"host": parts.netloc}, extensions)


async def delivery_request(url: str, allow_private: bool, resolver: Resolver = resolve) -> Request:
    """What to send a delivery to, checked now (:class:`TargetRefused` if the URL is no longer allowed).
    With private targets allowed, the URL is used as it is."""
    if allow_private:
        try:
            check_url(url)
        except InvalidWebhook as exc:
            raise TargetRefused(str(exc)) from exc
        return Request(url, {}, {})
    target, addresses = await check_target(url, allow_private, resolver)
    return pinned(url, target, addresses[0])
