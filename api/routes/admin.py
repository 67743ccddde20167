"""Admin jobs: ``/api/admin/replay`` starts, shows and cancels replays (see :mod:`flux.model.replay`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.body import read_json
from api.deps import Admin, NodeDep
from api.errors import ApiError
from api.models import AUTH_ERRORS, ERRORS, ErrorOut, ReplayJobOut, json_body, ref
from api.responses import JSON
from flux.model.replay import InvalidReplay, ReplayBusy, ReplayJob, Replays, parse_replay_request

router = APIRouter(tags=["admin"])

MAX_REPLAY_BODY_BYTES = 64 * 1024
UNKNOWN_JOB: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "No job with that id"}}
BUSY: dict[int | str, dict[str, Any]] = {409: {"model": ErrorOut, "description": "Another replay is running"}}


def _job(replays: Replays, job_id: str) -> ReplayJob:
    job = replays.get(job_id)
    if job is None:
        raise ApiError(404, f"no replay job {job_id!r} on this node")
    return job


@router.post(
    "/api/admin/replay",
    status_code=202,
    response_model=ReplayJobOut,
    responses={**BUSY, **AUTH_ERRORS, **ERRORS},
    openapi_extra=json_body(ref("ReplayIn")),
)
async def start_replay(request: Request, node: NodeDep, _: Admin) -> JSON:
    """Re-derive state from the events topic into a new generation, then switch to it (admin).

    Answers at once with the job; follow it at ``Location``.
    """
    body = await read_json(request, MAX_REPLAY_BODY_BYTES)
    try:
        job = node.replays.start(parse_replay_request(body))
    except InvalidReplay as exc:
        raise ApiError(400, str(exc)) from exc
    except ReplayBusy as exc:
        raise ApiError(409, str(exc)) from exc
    location = f"/api/admin/replay/{job.job_id}"
    return JSON(job.public(), status_code=202, headers={"Location": location})


@router.get("/api/admin/replay", response_model=list[ReplayJobOut], responses=AUTH_ERRORS)
async def list_replays(node: NodeDep, _: Admin) -> JSON:
    """The replay jobs this node ran since it started, newest first (admin)."""
    return JSON([job.public() for job in node.replays.all()])


@router.get(
    "/api/admin/replay/{job_id}",
    response_model=ReplayJobOut,
    responses={**UNKNOWN_JOB, **AUTH_ERRORS},
)
async def show_replay(node: NodeDep, _: Admin, job_id: str) -> JSON:
    """A replay job: status, offsets per partition, events/s, ETA, and the report when done (admin)."""
    return JSON(_job(node.replays, job_id).public())


@router.delete(
    "/api/admin/replay/{job_id}",
    response_model=ReplayJobOut,
    responses={**UNKNOWN_JOB, **AUTH_ERRORS, 409: {"model": ErrorOut, "description": "The job is switching"}},
)
async def cancel_replay(node: NodeDep, _: Admin, job_id: str) -> JSON:
    """Cancel a replay before it switches (admin); the current generation stays. A finished job is shown as is."""
    replays = node.replays
    _job(replays, job_id)
    try:
        job = await replays.cancel(job_id)
    except ReplayBusy as exc:
        raise ApiError(409, str(exc)) from exc
    assert job is not None
    return JSON(job.public())
