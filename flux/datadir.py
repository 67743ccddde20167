"""The node's data directory belongs to one Kafka cluster and one app id.

RocksDB stores record how far they read their changelog. Against a different cluster (a wiped
local broker, a new environment) those offsets are meaningless and Faust refuses to start
(``ConsistencyError``). The directory therefore carries a marker naming the cluster and app id it
was built from; on a mismatch the old directory is moved aside and the state is rebuilt from the
new cluster's changelog.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = "flux-cluster.txt"


def claim_data_dir(data_dir: Path, cluster_id: str, app_id: str) -> Path | None:
    """Make ``data_dir`` belong to ``cluster_id``/``app_id``; returns where a stale dir was moved, if any."""
    identity = f"{cluster_id}/{app_id}"
    marker = data_dir / MARKER
    moved: Path | None = None
    if data_dir.exists() and any(data_dir.iterdir()):
        recorded = marker.read_text().strip() if marker.exists() else None
        if recorded != identity:
            moved = data_dir.with_name(f"{data_dir.name}.stale-{int(time.time())}")
            data_dir.rename(moved)
            log.warning(
                "data dir %s was built from %s, not %s: moved it to %s; state is rebuilt from the changelog",
                data_dir,
                recorded or "an unknown cluster",
                identity,
                moved,
            )
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(identity + "\n")
    return moved
