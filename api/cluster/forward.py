"""Reads for a partition another node serves are forwarded to that node.

Each node serves the partitions the consumer group assigned it. A read that needs one partition
(an entity, its ``?at=``, its history) raises :class:`flux.model.state.PartitionUnavailable` on a node
that does not serve it; the error handler then asks the group's assignment which node does and
relays the request there, answering with that node's response and ``X-Flux-Served-By``. A
request is forwarded at most once (``X-Flux-Forwarded-By``), so a partition on the move answers
503 with ``Retry-After`` instead of bouncing between nodes. Who the caller is travels as
:mod:`api.cluster.node_calls` says (with ``FLUX_CLUSTER_SECRET``, never the admin token).
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
from starlette.requests import Request
from starlette.responses import Response

from api.cluster.node_calls import FORWARDED_BY, NodeCalls

SERVED_BY = "X-Flux-Served-By"
FORWARDABLE = ("GET", "HEAD")
_RETURNED_HEADERS = ("content-type", "link", "retry-after", "www-authenticate")


def forward_url(owner: str, request: Request) -> str:
    """``request``'s URL at ``owner``: its path encoded again from what this node decoded (so an id
    with ``%``, ``?``, ``#``, spaces or any other character reaches the owner as the same id), and
    its query string as it came."""
    path = quote(request.scope["path"], safe="/")
    query = request.scope.get("query_string", b"").decode("latin-1")
    return owner + path + (f"?{query}" if query else "")


class OwnerUnreachable(RuntimeError):
    """The node serving a partition did not answer."""


class Forwarder:
    """Relays requests to the node that serves their partition."""

    def __init__(self, calls: NodeCalls) -> None:
        self._calls = calls
        self.node_url = calls.node_url

    def target(self, request: Request, owner: str | None) -> str | None:
        """The node to forward ``request`` to, or None when it cannot be forwarded."""
        if owner is None or owner == self.node_url or request.method not in FORWARDABLE:
            return None
        if FORWARDED_BY in request.headers:
            return None  # forwarded once already: the assignment is changing
        return owner

    async def forward(self, request: Request, owner: str) -> Response:
        """The owner's answer to ``request``; raises :class:`OwnerUnreachable`."""
        headers = self._calls.headers(request.headers.get("authorization"))
        if "accept" in request.headers:
            headers["Accept"] = request.headers["accept"]
        url = forward_url(owner, request)
        try:
            answer = await self._calls.client.request(request.method, url, headers=headers)
        except httpx.HTTPError as exc:
            raise OwnerUnreachable(f"{owner} serves this partition but did not answer: {exc!r}") from exc
        returned = {k: v for k, v in answer.headers.items() if k.lower() in _RETURNED_HEADERS}
        returned[SERVED_BY] = answer.headers.get(SERVED_BY, owner)
        return Response(answer.content, status_code=answer.status_code, headers=returned)
