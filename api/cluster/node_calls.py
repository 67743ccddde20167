"""Calls between the nodes of one app: the HTTP client, and on whose behalf a call is made.

A node reads what another node serves by calling it: a read forwarded whole
(:mod:`api.cluster.forward`) or a share of a gathered read (:mod:`api.cluster.gather`), at the URL
the consumer group's metadata names for that node. The caller's identity travels with the call,
so that the other node authorizes the caller as the first one did.

Without ``FLUX_CLUSTER_SECRET`` the caller's ``Authorization`` header travels as it came, the
admin token included: whoever can make the group name a URL of theirs (anybody who may join the
consumer group on Kafka) would receive it. With the secret set (the same on every node):

- every node call carries it in :data:`SECRET_HEADER`;
- an admin caller travels as ``X-Flux-Caller: admin`` instead of its token, which never leaves the
  node it was sent to; a namespace's caller still travels with its own token, checked again by
  the other node (a token rotated meanwhile stops there too);
- a node honours ``X-Flux-Caller`` only on a call that shows the secret, and only for reads (the
  only calls nodes make), so the secret never stands in for the admin token on a write;
- the internal endpoints (``/api/internal/...``) answer calls that show the secret only.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping, Sequence

import httpx
from starlette.requests import HTTPConnection

from flux.config import Settings

log = logging.getLogger(__name__)

MAX_CALL_ITEMS = 1_000
"""Entity ids (``/lookup``) or namespaces (``/namespace-counts``) one internal call carries at most:
the internal endpoints refuse more (413), the gathering node splits longer lists into calls of this size."""

FORWARDED_BY = "X-Flux-Forwarded-By"
SECRET_HEADER = "X-Flux-Cluster-Secret"
CALLER_HEADER = "X-Flux-Caller"
ADMIN_CALLER = "admin"


class NodeCalls:
    """The HTTP client one node calls the others with, and the headers of each call."""

    def __init__(
        self,
        node_url: str,
        timeout_s: float,
        secret: str | None = None,
        admin_token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.node_url = node_url
        self._timeout_s = timeout_s
        self._secret = secret or None
        self._admin_token = admin_token or ""
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._warned = False

    @classmethod
    def from_settings(cls, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> NodeCalls:
        """The node calls of a node configured by ``settings``."""
        secret = settings.cluster_secret.get_secret_value() if settings.cluster_secret is not None else None
        return cls(settings.node_url(), settings.forward_timeout_s, secret, settings.admin_token, transport)

    @property
    def secured(self) -> bool:
        """Whether FLUX_CLUSTER_SECRET is set."""
        return self._secret is not None

    @property
    def client(self) -> httpx.AsyncClient:
        """The HTTP client to the other nodes (made on first use)."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout_s, transport=self._transport)
        return self._client

    async def close(self) -> None:
        """Close the connections to the other nodes."""
        if self._client is not None:
            await self._client.aclose()

    def headers(self, auth: str | None) -> dict[str, str]:
        """The headers of a call made on behalf of a caller who sent ``auth`` (its ``Authorization``)."""
        headers = {FORWARDED_BY: self.node_url}
        if self._secret is not None:
            headers[SECRET_HEADER] = self._secret
            if auth is not None and self._is_admin(auth):
                headers[CALLER_HEADER] = ADMIN_CALLER
                return headers  # the admin token stays here
        if auth is not None:
            headers["Authorization"] = auth
        return headers

    def _is_admin(self, auth: str) -> bool:
        scheme, _, token = auth.strip().partition(" ")
        token = token.strip()
        return (
            scheme.lower() == "bearer"
            and bool(self._admin_token)
            and hmac.compare_digest(token.encode(), self._admin_token.encode())
        )

    def secret_shown(self, connection: HTTPConnection) -> bool | None:
        """Whether ``connection`` shows this node's secret: None when it shows none, False when it shows
        another (or this node has none), True for a call of another node of this app."""
        given = connection.headers.get(SECRET_HEADER)
        if given is None:
            return None
        return self._secret is not None and hmac.compare_digest(given.encode(), self._secret.encode())

    def asserts_admin(self, connection: HTTPConnection) -> bool:
        """Whether ``connection`` is a node call on behalf of the admin (the secret shown)."""
        return connection.headers.get(CALLER_HEADER) == ADMIN_CALLER and self.secret_shown(connection) is True

    def warn_if_unprotected(self, auth_enabled: bool, owners: Mapping[str, Sequence[int]]) -> None:
        """Log once that callers' tokens go to other nodes unprotected: auth on, several nodes, no secret."""
        others = [url for url in owners if url != self.node_url]
        if self._secret is None and auth_enabled and others and not self._warned:
            self._warned = True
            log.warning(
                "FLUX_CLUSTER_SECRET is unset and other nodes serve (%s): callers' tokens, the admin token "
                "included, go to the URLs the consumer group names for them; set the same FLUX_CLUSTER_SECRET "
                "on every node (docs/cluster.md)",
                ", ".join(sorted(others)),
            )
