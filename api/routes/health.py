"""Operations: ``/health`` (liveness), ``/ready`` (readiness) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from api.deps import NodeDep
from api.models import HealthOut, ReadyOut
from api.responses import JSON
from flux.prometheus import exposition

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=HealthOut)
async def health() -> JSON:
    """The process is up and serving HTTP."""
    return JSON({"status": "ok"})


@router.get("/ready", response_model=ReadyOut, responses={503: {"model": ReadyOut, "description": "Not ready yet"}})
async def ready(node: NodeDep) -> JSON:
    """Ready when the broker answers, the table's recovery is done and every served partition folded
    its log up to where it ended when the partition was assigned; 503 until then, saying why."""
    r = await node.reader.readiness()
    body = {
        "status": "ready" if r.ready else "not_ready",
        "broker": r.broker,
        "recovered": r.recovered,
        "partitions": r.partitions,
        "standbys": {str(p): behind for p, behind in sorted(r.standbys.items())},
        "catching_up": {str(p): behind for p, behind in sorted(r.catching_up.items())},
        "detail": r.detail,
    }
    return JSON(body, status_code=200 if r.ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(node: NodeDep, request: Request) -> Response:
    """Prometheus text format 0.0.4, or OpenMetrics when the scrape's ``Accept`` asks for
    ``application/openmetrics-text`` (see docs/operations.md#metrics)."""
    body, content_type = exposition(node.metrics, node.reader.count(), request.headers.get("accept"))
    return Response(body, media_type=content_type)
