"""Shared fixtures: one real Kafka broker per session (tests.kafka_fixtures), Flux processes on it.

Tests live in tiers, one folder each, and carry the folder's marker (``-m unit`` ...):

- ``unit/``: pure code, no broker, no process;
- ``api/``: the FastAPI app built in process on in-memory ports (tests/api/memory.py; httpx's ASGITransport,
  Starlette's TestClient for the WebSocket);
- ``integration/``: Flux's Kafka plumbing against a real broker (started once per session);
- ``e2e/``: real ``flux serve`` processes on a real broker;
- ``faults/``: clusters of real processes under crashes, freezes and broker loss.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.flux_process import FluxProcess, free_port
from tests.tls_certs import TlsFiles, make_tls_files

pytest_plugins = ["tests.kafka_fixtures"]

TIERS = ("unit", "api", "integration", "e2e", "faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, the name of the folder it is in."""
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(tier)


NodeFactory = Callable[..., FluxProcess]


def _node(bootstrap: str, base: Path, partitions: int, env: dict[str, str], app_id: str | None = None) -> FluxProcess:
    name = f"t{uuid.uuid4().hex[:10]}"
    return FluxProcess(bootstrap, base / name, free_port(), app_id or name, partitions, env)


@pytest.fixture
def new_flux(kafka_bootstrap: str, tmp_path: Path) -> Iterator[NodeFactory]:
    """A factory of started Flux nodes with fresh topics and data dirs; all stopped after the test.

    ``join=node`` starts another node of ``node``'s app (same topics and consumer group, its own
    port and data dir), as a second machine of one deployment would be.
    """
    started: list[FluxProcess] = []

    def make(partitions: int = 4, join: FluxProcess | None = None, **env: str) -> FluxProcess:
        if join is not None:
            partitions = join.partitions
        node = _node(kafka_bootstrap, tmp_path, partitions, env, join.app_id if join is not None else None)
        started.append(node)
        node.start()
        return node

    yield make
    for node in started:
        node.stop()


@pytest.fixture(scope="module")
def flux(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FluxProcess]:
    """One running Flux node shared by a test module (tests use their own entity ids)."""
    node = _node(kafka_bootstrap, tmp_path_factory.mktemp("flux"), 4, {})
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A test CA with a broker certificate (127.0.0.1, localhost) and a client certificate."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def uid() -> str:
    """A short unique string for entity ids of one test."""
    return uuid.uuid4().hex[:8]
