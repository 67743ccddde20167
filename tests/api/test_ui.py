"""The dashboard's files at ``/ui`` (api/ui) and the read-only ``GET /api/cluster`` it shows."""

from __future__ import annotations

import re

import httpx

from tests.api.helpers import ADMIN
from tests.api.memory import BASE_URL, MemoryNode


async def test_ui_redirects_to_the_page_which_loads_its_assets_with_their_types(client: httpx.AsyncClient) -> None:
    redirect = await client.get("/ui")
    assert redirect.status_code == 308 and redirect.headers["location"] == "ui/"
    page = await client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Flux dashboard</title>" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "default-src 'none'" in csp
    assets = re.findall(r'(?:src|href)="([\w.]+\.(?:js|css))"', page.text)
    assert sorted(assets) == ["app.js", "style.css"]
    types = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
    for name in ["app.js", "api.js", "live.js", "chart.js", "style.css"]:
        asset = await client.get(f"/ui/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["content-type"] == types[name.rsplit(".", 1)[1]], name
        assert asset.headers["x-content-type-options"] == "nosniff"
    imported = re.findall(r'from "\./([\w.]+)"', (await client.get("/ui/app.js")).text)
    assert set(imported) == {"api.js", "chart.js", "live.js"}


async def test_ui_serves_only_its_own_files(client: httpx.AsyncClient) -> None:
    for path in ["/ui/nope.js", "/ui/..%2F__init__.py", "/ui/__init__.py", "/ui/static/app.js"]:
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"error": "Not Found"}


async def test_the_page_never_writes_html_from_data(client: httpx.AsyncClient) -> None:
    for name in ["app.js", "api.js", "live.js", "chart.js"]:
        source = (await client.get(f"/ui/{name}")).text
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", source), name


async def test_ui_is_not_in_the_openapi_document_and_cluster_is(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if path.startswith("/ui")]
    assert paths["/api/cluster"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ClusterOut"
    }


async def test_cluster_lists_the_nodes_and_their_partitions(node: MemoryNode, client: httpx.AsyncClient) -> None:
    response = await client.get("/api/cluster")
    assert response.status_code == 200
    assert response.json() == {
        "node": BASE_URL,
        "partitions": 4,
        "nodes": [{"url": BASE_URL, "partitions": [0, 1, 2, 3], "self": True}],
        "unassigned": [],
    }
    node.table.served = {1, 3}  # the others moved away mid-rebalance
    moved = (await client.get("/api/cluster")).json()
    assert moved["nodes"] == [{"url": BASE_URL, "partitions": [1, 3], "self": True}]
    assert moved["unassigned"] == [0, 2]


async def test_cluster_needs_a_token_when_reads_are_private(private: httpx.AsyncClient) -> None:
    assert (await private.get("/api/cluster")).status_code == 401
    assert (await private.get("/api/cluster", headers=ADMIN)).status_code == 200
    assert (await private.get("/ui/")).status_code == 200  # the page itself holds no data
