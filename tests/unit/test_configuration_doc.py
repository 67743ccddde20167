"""docs/configuration.md is what flux.config_doc renders from the settings' fields, and every field is described."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from flux.config import Settings
from flux.config_doc import DOC_PATH, render
from flux.localkafka.settings import LocalKafkaSettings

ROOT = Path(__file__).resolve().parents[2]


def test_docs_configuration_md_is_up_to_date() -> None:
    committed = (ROOT / DOC_PATH).read_text(encoding="utf-8")
    assert committed == render(), (
        "docs/configuration.md differs from the settings' descriptions: "
        "run `python -m flux.config_doc > docs/configuration.md` (or `make docs`)"
    )


@pytest.mark.parametrize("settings", [Settings, LocalKafkaSettings])
def test_every_setting_is_described(settings: type[BaseSettings]) -> None:
    assert [name for name, field in settings.model_fields.items() if not field.description] == []


def test_each_variable_is_named_as_it_is_read() -> None:
    document = render()
    for variable in ("KAFKA_BOOTSTRAP_SERVERS", "FLUX_ADMIN_TOKEN", "FLUX_KAFKA_HOME", "FLUX_KAFKA_PORT", "JAVA_HOME"):
        assert f"| `{variable}` |" in document
    assert "| `FLUX_KAFKA_BOOTSTRAP_SERVERS` |" not in document, "documented under its usual name"
    assert "| `FLUX_PARTITIONS` | `8` |" in document and "at least 1, at most 1024" in document
