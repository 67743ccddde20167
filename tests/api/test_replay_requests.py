"""Replay requests (/api/admin/replay): what a request may say, who may make it, and the job answers.

The jobs themselves (folding the log into a new generation) need a broker: tests/e2e/test_replay.py.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.api.helpers import ADMIN, assert_refused, bearer, register


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "exactly one of"),
        ({"fromBeginning": True, "fromTimestamp": 5}, "exactly one of"),
        ({"fromBeginning": False}, "fromBeginning must be true"),
        ({"fromTimestamp": "yesterday"}, "RFC 3339"),
        ({"fromTimestamp": "2026-01-01T00:00:00"}, "time zone"),
        ({"fromTimestamp": int(time.time() * 1000) + 3_600_000}, "in the future"),
        ({"fromOffsets": "0:5,x"}, "PARTITION:OFFSET"),
        ({"fromOffsets": {"0": -1}}, "offsets >= 0"),
        ({"fromBeginning": True, "speed": 3}, "unknown field"),
        ({"fromTimestamp": 10, "toTimestamp": 5}, "before fromTimestamp"),
        ([], "body must be a JSON object"),
    ],
)
async def test_replay_requests_are_checked(client: httpx.AsyncClient, body: Any, message: str) -> None:
    assert_refused(await client.post("/api/admin/replay", json=body), 400, message)


async def test_a_malformed_replay_body_or_an_unknown_job_is_refused(client: httpx.AsyncClient) -> None:
    malformed = await client.post("/api/admin/replay", content=b"{", headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    missing = await client.get("/api/admin/replay/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    assert (await client.delete("/api/admin/replay/nope")).status_code == 404


async def test_a_replay_answers_202_with_its_job_at_location_and_one_runs_at_a_time(client: httpx.AsyncClient) -> None:
    started = await client.post("/api/admin/replay", json={"fromOffsets": "1:5, 0:0"})
    assert started.status_code == 202
    job = started.json()
    assert started.headers["location"] == f"/api/admin/replay/{job['jobId']}"
    assert job["status"] == "running" and job["from"] == "offsets" and job["fromOffsets"] == {"0": 0, "1": 5}
    assert (await client.get(started.headers["location"])).json()["jobId"] == job["jobId"]
    busy = await client.post("/api/admin/replay", json={"fromBeginning": True})
    assert busy.status_code == 409 and "already running" in busy.json()["error"]
    cancelled = await client.delete(started.headers["location"])
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = await client.post("/api/admin/replay", json={"fromBeginning": True})
    assert again.status_code == 202
    listed = (await client.get("/api/admin/replay")).json()
    assert [j["jobId"] for j in listed] == [again.json()["jobId"], job["jobId"]]


async def test_replay_needs_the_admin_token_when_auth_is_on(secured: httpx.AsyncClient) -> None:
    assert (await secured.post("/api/admin/replay", json={"fromBeginning": True})).status_code == 401
    assert (await secured.get("/api/admin/replay")).status_code == 401
    _, token = await register(secured)
    tenant = bearer(token)
    assert (await secured.post("/api/admin/replay", json={"fromBeginning": True}, headers=tenant)).status_code == 403
    response = await secured.post("/api/admin/replay", json={"fromBeginning": True}, headers=ADMIN)
    assert response.status_code == 202, response.text
