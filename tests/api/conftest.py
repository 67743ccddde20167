"""Fixtures of the API tier: in-memory nodes (tests/api/memory.py) and in-process HTTP clients.

``client`` talks to a node with auth off; ``secured`` to one with auth on and public reads;
``private`` to one with auth on and FLUX_PUBLIC_READS=false. Each test gets fresh nodes; the
``*_node`` fixtures give the node behind each client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.api.helpers import SECURED
from tests.api.memory import MemoryNode, node_settings


@pytest.fixture
def node() -> MemoryNode:
    """A node with auth off."""
    return MemoryNode()


@pytest.fixture
def secured_node() -> MemoryNode:
    """A node with auth on (an admin token, 300 events a minute per namespace) and public reads."""
    return MemoryNode(node_settings(**SECURED))


@pytest.fixture
def private_node() -> MemoryNode:
    """A node with auth on and private reads."""
    return MemoryNode(node_settings(**SECURED, public_reads=False))


@pytest.fixture
async def client(node: MemoryNode) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``node``."""
    async with node.client() as http:
        yield http


@pytest.fixture
async def secured(secured_node: MemoryNode) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``secured_node``."""
    async with secured_node.client() as http:
        yield http


@pytest.fixture
async def private(private_node: MemoryNode) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``private_node``."""
    async with private_node.client() as http:
        yield http
