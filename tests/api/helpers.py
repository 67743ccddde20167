"""What the API-tier tests share: tokens, request bodies, and registering a namespace."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

ADMIN_TOKEN = "test-admin-" + "x" * 40
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECURED: dict[str, Any] = {  # the settings of a node with auth on
    "auth_enabled": True,
    "admin_token": ADMIN_TOKEN,
    "rate_limit_per_minute": 300,
    "max_properties_per_event": 20,
    "max_property_key_length": 16,
}


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of ``token``."""
    return {"Authorization": f"Bearer {token}"}


def event(
    entity_id: str, timestamp: int | None = None, event_id: str | None = None, **properties: Any
) -> dict[str, Any]:
    """An event setting ``properties`` of ``entity_id`` (at ``timestamp``, else now; with ``event_id``,
    else a fresh one)."""
    body: dict[str, Any] = {
        "stream": "test",
        "source": "pytest",
        "payload": {"entity_id": entity_id, "properties": properties},
    }
    if timestamp is not None:
        body["timestamp"] = timestamp
    if event_id is not None:
        body["eventId"] = event_id
    return body


def new_name() -> str:
    """A namespace name nobody registered."""
    return f"ns-{uuid.uuid4().hex[:10]}"


async def register(client: httpx.AsyncClient, name: str | None = None) -> tuple[str, str]:
    """Register a namespace as the admin; returns (name, token)."""
    name = name or new_name()
    response = await client.post("/api/namespaces", json={"name": name}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return name, str(response.json()["token"])


def ids(response: httpx.Response) -> list[str]:
    """The ids of the entities a list answered."""
    return [entity["id"] for entity in response.json()]


def assert_refused(response: httpx.Response, status: int, message: str) -> None:
    """``response`` is Flux's JSON error ``{"error": ...}`` of ``status``, its message containing ``message``."""
    assert response.status_code == status, response.text
    assert message in response.json()["error"], response.text


def next_link(response: httpx.Response) -> str | None:
    """The target of the ``Link: <...>; rel="next"`` header, if any."""
    link = response.headers.get("link")
    return None if link is None else link[1 : link.index(">")]
