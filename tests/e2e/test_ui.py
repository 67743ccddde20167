"""The dashboard (``/ui``) in a real headless browser against a real node on a real broker.

The browser is the system's ``chromium`` (Debian's package; ``make test`` installs it when missing),
driven by Playwright without its own browser download. Each test names its entities after a unique
id, so they share one node. Screenshots land in the test's tmp dir.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NodeFactory
from tests.e2e.test_auth import ADMIN, ADMIN_TOKEN, SECURED_ENV
from tests.flux_process import FluxProcess

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]

EXECUTABLE = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
pytestmark = pytest.mark.skipif(EXECUTABLE is None, reason=f"no chromium ({CHROMIUM}; `make browser` installs it)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium for the module."""
    with playwright_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=EXECUTABLE, args=ARGS)
        yield launched
        launched.close()


class Console:
    """What the page said on its console, and the uncaught errors of its scripts."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage) with its console recorded in ``page.console``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.console = Console(tab)
    tab.set_default_timeout(15_000)
    yield tab
    context.close()


def open_dashboard(page: Any, node: FluxProcess) -> None:
    """Load the page and wait until its live feed follows ``*``."""
    page.goto(f"{node.url}/ui")
    expect(page.locator("#ws-status")).to_have_attribute("data-state", "open")
    expect(page.locator("#feed-panel")).to_have_attribute("data-following", "*")


def publish_batch(node: FluxProcess, events: list[tuple[str, dict[str, Any]]], **headers: str) -> None:
    body = [
        {"stream": "ui", "source": "pytest", "payload": {"entity_id": entity_id, "properties": properties}}
        for entity_id, properties in events
    ]
    response = node.client.post("/api/events/batch?wait=true", json=body, headers=headers)
    assert response.status_code == 200 and response.json()["failed"] == 0, response.text


def test_the_page_loads_clean_and_shows_a_publish_within_a_second(
    flux: FluxProcess, page: Any, uid: str, tmp_path: Path
) -> None:
    open_dashboard(page, flux)
    feed = page.locator("#feed tbody tr")
    assert flux.publish(f"ui-{uid}/warm", {"n": 0}).status_code == 200  # the first write of a node is slower
    expect(feed.filter(has_text=f"ui-{uid}/warm")).to_have_count(1)
    for n in range(1, 4):
        started = time.monotonic()
        assert flux.publish(f"ui-{uid}/fast", {"n": n}).status_code == 200
        row = feed.filter(has_text=f"ui-{uid}/fast").first
        expect(row).to_contain_text(str(n), timeout=1_000)
        assert time.monotonic() - started < 1.0
    expect(page.locator("#cluster tbody tr.self")).to_contain_text("0, 1, 2, 3")
    expect(page.locator("#live-metrics")).to_contain_text("entities", timeout=5_000)  # a metrics_update came
    expect(page.locator('[data-metric="applied_rate"]')).not_to_have_text("-", timeout=5_000)
    expect(page.locator('[data-metric="websockets"]')).not_to_have_text("-")
    expect(page.locator("#lag tbody tr")).to_have_count(4, timeout=10_000)
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert page.console.errors == []


def test_search_by_prefix_and_namespace_pages_through_entities(flux: FluxProcess, page: Any, uid: str) -> None:
    namespace = f"ui{uid}"
    publish_batch(flux, [(f"{namespace}/e{n:02d}", {"n": n}) for n in range(12)])
    open_dashboard(page, flux)
    rows = page.locator("#entities tbody tr")
    page.fill("#search", f"{namespace}/e0")
    page.select_option("#page-size", "10")
    page.click("#search-form button[type=submit]")
    expect(rows).to_have_count(10)
    expect(rows.first).to_contain_text(f"{namespace}/e00")
    expect(page.locator("#page-info")).to_have_text("1 to 10 (last page)")
    page.select_option("#search-mode", "namespace")
    page.fill("#search", namespace)
    page.click("#search-form button[type=submit]")
    expect(page.locator("#page-info")).to_have_text("1 to 10")
    expect(page.locator("#prev")).to_be_disabled()
    page.click("#next")  # follows the Link header
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text(f"{namespace}/e10")
    expect(rows.nth(1)).to_contain_text(f"{namespace}/e11")
    expect(page.locator("#page-info")).to_have_text("11 to 12 (last page)")
    expect(page.locator("#next")).to_be_disabled()
    page.click("#prev")
    expect(rows).to_have_count(10)
    expect(rows.last).to_contain_text(f"{namespace}/e09")
    assert page.console.errors == []


def test_an_entity_updates_live_with_its_history_and_chart_and_never_runs_html_from_data(
    flux: FluxProcess, page: Any, uid: str, tmp_path: Path
) -> None:
    pump = f"ui-{uid}/pump"
    html = '<img src=x onerror="window.pwned=1"><b id="injected">x</b>'
    publish_batch(flux, [(pump, {"temperature": 20, "label": html})])
    open_dashboard(page, flux)
    page.fill("#search", pump)
    page.click("#search-form button[type=submit]")
    page.locator("#entities tbody tr", has_text=pump).click()
    props = page.locator("#entity-props tbody")
    expect(page.locator("#entity-id")).to_have_text(pump)
    expect(props.locator('tr[data-property="temperature"] td').nth(1)).to_have_text("20")
    expect(props.locator('tr[data-property="label"] td').nth(1)).to_have_text(html)
    expect(page.locator("#history tbody tr")).to_have_count(1)
    for value in (21, 19.5, 23):
        assert flux.publish(pump, {"temperature": value}).status_code == 200
        expect(props.locator('tr[data-property="temperature"] td').nth(1)).to_have_text(str(value), timeout=2_000)
    chart = page.locator('#charts figure[data-property="temperature"]')
    expect(chart.locator(".range")).to_contain_text("4 points")
    points = chart.locator("polyline").get_attribute("points")
    assert points is not None and len(points.split()) == 4
    expect(page.locator("#history tbody tr")).to_have_count(4, timeout=5_000)
    expect(page.locator("#history tbody tr").first).to_contain_text("23")
    assert flux.client.delete(f"/api/state/entities/{pump}").status_code == 200
    expect(page.locator("#entity-status")).to_contain_text("deleted")
    expect(props.locator("tr")).to_have_count(0)
    assert page.locator("#injected").count() == 0 and page.evaluate("window.pwned") is None
    page.screenshot(path=str(tmp_path / "entity.png"), full_page=True)
    assert page.console.errors == []


def test_with_private_reads_the_token_of_the_tab_opens_the_api_and_the_feed(
    new_flux: NodeFactory, page: Any, uid: str
) -> None:
    node = new_flux(**SECURED_ENV, FLUX_PUBLIC_READS="false")
    page.goto(f"{node.url}/ui")
    expect(page.locator("#entities-error")).to_contain_text("401")
    expect(page.locator("#ws-status")).to_have_attribute("data-state", "closed")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#feed-panel")).to_have_attribute("data-following", "*")
    expect(page.locator("#entities-error")).to_have_text("")
    assert page.evaluate("sessionStorage.getItem('flux.token')") == ADMIN_TOKEN
    assert page.evaluate("localStorage.length") == 0
    publish_batch(node, [(f"ui-{uid}/secret", {"x": 1})], **ADMIN)
    expect(page.locator("#feed tbody tr", has_text=f"ui-{uid}/secret")).to_have_count(1)
    expect(page.locator("#cluster tbody tr.self")).to_contain_text("0, 1, 2, 3")
    page.click("#token-clear")
    assert page.evaluate("sessionStorage.getItem('flux.token')") is None
    expect(page.locator("#entities-error")).to_contain_text("401")


def test_a_cluster_shows_every_node_and_its_partitions(new_flux: NodeFactory, page: Any) -> None:
    first = new_flux(partitions=4)
    second = new_flux(join=first)
    page.goto(f"{second.url}/ui")
    rows = page.locator("#cluster tbody tr")
    expect(rows).to_have_count(2, timeout=60_000)
    expect(page.locator("#unassigned")).to_have_text("4 partitions, all assigned", timeout=60_000)
    expect(page.locator("#cluster tbody tr.self")).to_have_attribute("data-node", second.url)
    served = sorted(int(p) for text in rows.locator("td:nth-child(2)").all_text_contents() for p in text.split(", "))
    assert served == [0, 1, 2, 3]
