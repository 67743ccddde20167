"""X-Idempotency-Key on a real broker: the keys are durable and every process of an app honours them.

Replayed answers, reused keys and what a key is scoped to are proven in process:
tests/api/test_idempotency_keys.py.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import NodeFactory


def event(entity_id: str, **props: Any) -> dict[str, Any]:
    return {
        "stream": "s",
        "source": "a",
        "timestamp": 1_700_000_000_000,
        "payload": {"entity_id": entity_id, "properties": props},
    }


def keyed(key: str) -> dict[str, str]:
    return {"X-Idempotency-Key": key}


def test_keys_survive_a_restart_and_are_honoured_by_every_process(new_flux: NodeFactory, uid: str) -> None:
    first_node = new_flux(2)
    other_node = new_flux(join=first_node)
    key = f"k-{uuid.uuid4()}"
    body = [event(f"i{uid}/d", v=1)]
    answer = first_node.client.post("/api/events/batch", json=body, headers=keyed(key))
    assert answer.status_code == 200
    on_other = other_node.wait_for(
        lambda: (
            (r := other_node.client.post("/api/events/batch", json=body, headers=keyed(key))).headers.get(
                "idempotent-replayed"
            )
            and r
        ),
        what="the other process replays the answer",
    )
    assert on_other.json() == answer.json()
    other_node.stop()
    first_node.stop()
    first_node.start()
    after = first_node.client.post("/api/events/batch", json=body, headers=keyed(key))
    assert after.headers["idempotent-replayed"] == "true" and after.json() == answer.json()
