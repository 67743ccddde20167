"""``GET /api/cluster``: the nodes of the consumer group and the partitions each serves, read-only."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import NodeDep, Reader
from api.models import AUTH_ERRORS, ClusterOut
from api.responses import JSON

router = APIRouter(tags=["operations"])


@router.get("/api/cluster", response_model=ClusterOut, responses={401: AUTH_ERRORS[401]})
async def cluster(node: NodeDep, caller: Reader) -> JSON:
    """The group's current assignment as this node knows it (what any node forwards and gathers by);
    partitions nobody serves during a rebalance are ``unassigned``."""
    me = node.settings.node_url()
    owners = node.reader.owners()
    served = {p for partitions in owners.values() for p in partitions}
    nodes = [
        {"url": url, "partitions": sorted(partitions), "self": url == me} for url, partitions in sorted(owners.items())
    ]
    unassigned = [p for p in range(node.settings.partitions) if p not in served]
    return JSON({"node": me, "partitions": node.settings.partitions, "nodes": nodes, "unassigned": unassigned})
