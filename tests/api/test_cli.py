"""The ``flux`` command's client commands (api/cli/client_commands.py) through typer's CliRunner against
in-memory nodes: publishing from arguments and NDJSON, reads, lists, history, export and import (a
round trip, and a re-import that publishes nothing again), and the one-line errors.

The commands reach the node through Starlette's TestClient (an ``httpx.Client`` on the app) handed
over in the typer context (:class:`api.cli.remote.Remote`). ``flux tail`` and the same commands as
real processes on a real node are in tests/e2e/test_cli.py.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import orjson
import pytest
from typer.testing import CliRunner, Result

from api.cli.client_commands import change_json, change_line
from api.cli.main import app, main
from api.cli.remote import Remote
from api.cli.transfer import epoch_ms, import_event_id
from flux.client import Entity, EntityDeleted, Snapshot, StateUpdate
from tests.api.helpers import ADMIN_TOKEN, SECURED
from tests.api.memory import BASE_URL, MemoryNode, node_settings

with warnings.catch_warnings():  # Starlette would rather have httpx2, which Flux does not depend on
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from starlette.testclient import TestClient

T0 = 1_771_804_800_000  # 2026-02-23T00:00:00Z


class Cli:
    """Runs ``flux ...`` against one in-memory node."""

    def __init__(self, node: MemoryNode) -> None:
        self.node = node
        self.http = TestClient(node.app, base_url=BASE_URL)
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(app, list(args), obj=Remote(http=self.http), input=input)

    def lines(self, *args: str, input: str | None = None) -> list[dict]:
        result = self(*args, input=input)
        assert result.exit_code == 0, result.output + result.stderr
        return [orjson.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def cli() -> Iterator[Cli]:
    runner = Cli(MemoryNode())
    with runner.http:
        yield runner


def test_publish_from_arguments_parses_json_values_and_keeps_the_rest_as_text(cli: Cli) -> None:
    done = cli("publish", "acme/s-1", "temp=22.5", "unit=celsius", "on=true", "tags=[1,2]", 'code="7"', "--wait")
    assert done.exit_code == 0, done.stderr
    event_id = done.stdout.strip()
    [entity] = cli.lines("get", "acme/s-1")
    assert entity["properties"] == {"temp": 22.5, "unit": "celsius", "on": True, "tags": [1, 2], "code": "7"}
    [stored] = cli.lines("history", "acme/s-1")
    assert stored["eventId"] == event_id and stored["stream"] == "cli" and stored["source"] == "flux-cli"


def test_publish_reads_ndjson_events_from_stdin_and_reports_the_refused_ones(cli: Cli) -> None:
    events = [
        {"payload": {"entity_id": "n/1", "properties": {"v": 1}}},
        {"stream": "own", "payload": {"entity_id": "n/2", "properties": {"v": 2}}},
        {"payload": {"entity_id": "n/3"}},  # no properties
    ]
    done = cli("publish", "--source", "gw", input="\n".join(orjson.dumps(e).decode() for e in events) + "\n")
    assert done.exit_code == 3
    assert "published 2, failed 1" in done.stderr and "event 3:" in done.stderr
    assert [e["id"] for e in cli.lines("ls", "--prefix", "n/")] == ["n/1", "n/2"]
    assert {e["stream"] for e in cli.lines("history", "n/2")} == {"own"}


def test_publish_refuses_an_argument_without_equals_sign(cli: Cli) -> None:
    done = cli("publish", "x", "temp")
    assert done.exit_code == 2 and done.stderr == "flux: 'temp' is not key=value\n"


def test_get_at_a_time_and_a_missing_entity(cli: Cli) -> None:
    cli("publish", "t/1", "v=1", "--timestamp", str(T0), "--wait")
    cli("publish", "t/1", "v=2", "--timestamp", str(T0 + 60_000), "--wait")
    assert cli.lines("get", "t/1", "--at", str(T0 + 1000))[0]["properties"] == {"v": 1}
    assert cli.lines("get", "t/1", "--at", "2026-02-23T00:05:00Z")[0]["properties"] == {"v": 2}
    missing = cli("get", "t/2")
    assert missing.exit_code == 1 and missing.stderr == "flux: no entity 't/2'\n"


def test_ls_pages_through_the_list_and_says_when_more_follow(cli: Cli) -> None:
    lines = "\n".join(
        orjson.dumps({"payload": {"entity_id": f"l/{i:03d}", "properties": {"i": i}}}).decode() for i in range(250)
    )
    assert cli("publish", "--wait", input=lines).exit_code == 0
    shown = cli("ls", "--prefix", "l/", "--limit", "120")
    assert [orjson.loads(line)["id"] for line in shown.stdout.splitlines()] == [f"l/{i:03d}" for i in range(120)]
    assert "more than 120" in shown.stderr
    assert len(cli.lines("ls", "--prefix", "l/", "--limit", "0")) == 250


def test_history_since_until_and_limit(cli: Cli) -> None:
    for i in range(5):
        cli("publish", "h/1", f"v={i}", "--timestamp", str(T0 + i * 1000), "--wait")
    window = cli.lines("history", "h/1", "--since", str(T0 + 1000), "--until", str(T0 + 3000))
    assert [e["payload"]["properties"]["v"] for e in window] == [1, 2, 3]
    assert len(cli.lines("history", "h/1", "--since", "0", "--limit", "2")) == 2
    newest = cli.lines("history", "h/1", "--since", "0", "--desc", "--limit", "1")
    assert newest[0]["payload"]["properties"] == {"v": 4}


def test_export_then_import_rebuilds_the_state_and_a_reimport_publishes_nothing(cli: Cli) -> None:
    events = "\n".join(
        orjson.dumps(
            {"timestamp": T0 + i, "payload": {"entity_id": f"e/{i:04d}", "properties": {"i": i, "s": "x" * (i % 7)}}}
        ).decode()
        for i in range(1200)
    )
    cli("publish", "--wait", input=events)
    exported = cli("export", "--prefix", "e/", "--page-size", "500")
    assert exported.exit_code == 0 and "exported 1,200 entities" in exported.stderr
    source_state = [orjson.loads(line) for line in exported.stdout.splitlines()]
    assert len(source_state) == 1200

    target = Cli(MemoryNode())
    with target.http:
        first = target("import", "-", "--batch-size", "500", "--wait", input=exported.stdout)
        assert first.exit_code == 0, first.stderr
        assert "imported 1,200 entities, rejected 0" in first.stderr
        assert target.lines("ls", "--prefix", "e/", "--limit", "0") == source_state  # lastUpdated included
        published = len(target.node.publisher.published)

        again = target("import", "-", "--batch-size", "500", "--wait", input=exported.stdout)
        assert again.exit_code == 0, again.stderr
        assert len(target.node.publisher.published) == published  # answered from the idempotency keys
        assert target.lines("ls", "--prefix", "e/", "--limit", "0") == source_state
        assert len(target.lines("history", "e/0007", "--since", "0")) == 1

        other_batches = target("import", "-", "--batch-size", "300", input=exported.stdout)  # new keys, same eventIds
        assert other_batches.exit_code == 0
        assert len(target.lines("history", "e/0007", "--since", "0")) == 1  # applied once all the same


def test_import_reports_lines_that_are_not_entities(cli: Cli) -> None:
    text = '{"id": "i/1", "properties": {"a": 1}, "lastUpdated": "2026-02-23T00:00:00.000Z"}\nnot json\n{"id": 3}\n'
    done = cli("import", "-", input=text)
    assert done.exit_code == 3
    assert "imported 1 entities, rejected 2" in done.stderr and "not JSON" in done.stderr
    assert cli.lines("get", "i/1")[0]["lastUpdated"] == "2026-02-23T00:00:00.000Z"


def test_import_event_ids_depend_on_content_not_on_key_order() -> None:
    one = import_event_id("a", {"x": 1, "y": 2}, "2026-02-23T00:00:00.000Z")
    assert one == import_event_id("a", {"y": 2, "x": 1}, "2026-02-23T00:00:00.000Z")
    assert one != import_event_id("a", {"x": 1, "y": 3}, "2026-02-23T00:00:00.000Z")
    assert epoch_ms("2026-02-23T00:00:00.123Z") == T0 + 123


def test_an_error_answer_is_one_line_with_the_servers_message() -> None:
    secured = Cli(MemoryNode(node_settings(**SECURED)))
    with secured.http:
        refused = secured("publish", "x/1", "v=1")
        assert refused.exit_code == 1
        assert refused.stderr.startswith("flux: 401 Unauthorized: ") and refused.stderr.count("\n") == 1
        assert secured("publish", "x/1", "v=1", "--token", ADMIN_TOKEN).exit_code == 0


def test_no_node_is_one_line_naming_the_url() -> None:
    done = CliRunner().invoke(app, ["get", "x", "--url", "http://127.0.0.1:1"])
    assert done.exit_code == 1
    assert done.stderr == "flux: cannot reach Flux at http://127.0.0.1:1: connection refused\n"


def test_url_and_token_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    done = CliRunner().invoke(app, ["ls"], env={"FLUX_URL": "http://127.0.0.1:1", "FLUX_TOKEN": "t"})
    assert done.exit_code == 1 and "http://127.0.0.1:1" in done.stderr


def test_version_help_and_exit_codes_of_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("flux ")
    assert main(["replay", "--url", "http://127.0.0.1:1"]) == 2  # no start given: a usage error
    assert main(["nosuchcommand"]) == 2
    for command in ("serve", "kafka", "cluster", "backfill", "replay", "publish", "tail", "export", "import"):
        assert main([command, "--help"]) == 0
    assert "--from-beginning" in capsys.readouterr().out


def test_shell_completion_completes_command_names() -> None:
    env = {"_FLUX_COMPLETE": "complete_bash", "COMP_WORDS": "flux ex", "COMP_CWORD": "1"}
    done = CliRunner().invoke(app, [], env=env, prog_name="flux")
    assert done.exit_code == 0 and done.stdout.split() == ["export"]


def test_on_a_terminal_lists_are_tables_and_json_is_pretty(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("api.cli.client_commands.on_terminal", lambda stream=None: True)
    cli("publish", "p/1", "v=1", "--wait")
    listed = cli("ls")
    assert listed.stdout.split()[:3] == ["id", "properties", "last"] and 'p/1  {"v":1}' in listed.stdout
    assert cli("history", "p/1").stdout.split()[:4] == ["time", "stream", "source", "event"]
    assert '"v": 1' in cli("get", "p/1").stdout  # indented JSON
    assert cli("ls", "--json").stdout.startswith('{"id":"p/1"')  # --json wins


def test_changes_as_json_lines_and_pretty_lines() -> None:
    update = StateUpdate("a/1", "temp", 22.5, "2026-02-23T00:00:00.000Z")
    assert change_json(update) == {
        "type": "state_update",
        "entity_id": "a/1",
        "property": "temp",
        "value": 22.5,
        "timestamp": "2026-02-23T00:00:00.000Z",
    }
    snapshot = Snapshot(Entity("a/1", {"temp": 1}, "2026-02-23T00:00:00.000Z"), resync=False)
    assert change_json(snapshot)["entity"] == {
        "id": "a/1",
        "properties": {"temp": 1},
        "lastUpdated": snapshot.entity.last_updated,
    }
    assert change_json(EntityDeleted("a/1", "t"))["type"] == "entity_deleted"
    assert "temp = [green]22.5" in change_line(update) and "snapshot" in change_line(snapshot)
