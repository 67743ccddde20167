"""A schemathesis pass over the OpenAPI document against running Flux nodes on a real broker.

Every operation gets generated valid and invalid requests (coverage and fuzzing phases); every
check runs: no 5xx other than a documented 504, every answer matches its documented schema,
status code, content type and headers, schema-valid requests are accepted, invalid ones refused,
secured operations refuse requests without credentials. Run as the admin, as a namespace's
holder and as nobody, with auth on, and once with auth off. ``make fuzz`` runs the same pass
against any running Flux with more examples.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import NodeFactory
from tests.e2e.test_auth import ADMIN, SECURED_ENV, register
from tests.flux_process import FluxProcess

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = 30


def fuzz(node: FluxProcess, header: str, tmp_path: Path, seed: int) -> subprocess.CompletedProcess[str]:
    """Run schemathesis against ``node`` with ``header`` on every request."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{node.url}/openapi.json",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--request-timeout",
        "20",
        "--no-color",
        "-H",
        header,
    ]
    return subprocess.run(
        command,
        cwd=tmp_path,
        env={"HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / "hypothesis"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_clean(node: FluxProcess, done: subprocess.CompletedProcess[str]) -> None:
    """schemathesis found nothing, and the node is up, ready and logged no unexpected error."""
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert re.search(r"(\d+) generated, \1 passed", done.stdout), done.stdout[-3000:]  # every case passed
    assert node.client.get("/ready").status_code == 200
    assert "unexpected error" not in node.log_tail(100_000)


def test_fuzzing_a_secured_node_finds_no_server_error_and_no_schema_violation(
    new_flux: NodeFactory, tmp_path: Path
) -> None:
    node = new_flux(2, **SECURED_ENV, FLUX_DELETE_BATCH_LIMIT="50")
    _, token = register(node)
    callers = {"admin": ADMIN["Authorization"], "namespace": f"Bearer {token}"}
    for seed, credentials in enumerate(callers.values()):
        assert_clean(node, fuzz(node, f"Authorization: {credentials}", tmp_path, seed))
    assert_clean(node, fuzz(node, "X-Anonymous: 1", tmp_path, 7))


def test_fuzzing_a_node_with_private_reads_finds_no_server_error_and_no_schema_violation(
    new_flux: NodeFactory, tmp_path: Path
) -> None:
    node = new_flux(2, **SECURED_ENV, FLUX_PUBLIC_READS="false", FLUX_DELETE_BATCH_LIMIT="50")
    _, token = register(node)
    assert_clean(node, fuzz(node, f"Authorization: Bearer {token}", tmp_path, 21))
    assert_clean(node, fuzz(node, "X-Anonymous: 1", tmp_path, 22))


def test_fuzzing_an_open_node_finds_no_server_error_and_no_schema_violation(
    new_flux: NodeFactory, tmp_path: Path
) -> None:
    node = new_flux(2, FLUX_DELETE_BATCH_LIMIT="50")
    assert_clean(node, fuzz(node, "X-Anonymous: 1", tmp_path, 11))
