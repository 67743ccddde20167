"""Rules about several settings live in the settings' validators; `flux serve` refuses to start on them in one line."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from api.cli.main import cmd_serve
from flux.config import MIN_ADMIN_TOKEN_LENGTH, Settings

STRONG = "x" * MIN_ADMIN_TOKEN_LENGTH


def test_auth_needs_an_admin_token_of_at_least_32_characters() -> None:
    for weak in (None, "", "x" * (MIN_ADMIN_TOKEN_LENGTH - 1)):
        with pytest.raises(ValidationError, match="FLUX_AUTH_ENABLED=true needs FLUX_ADMIN_TOKEN of at least 32"):
            Settings(auth_enabled=True, admin_token=weak)
    assert Settings(auth_enabled=True, admin_token=STRONG).admin_token == STRONG
    assert Settings(auth_enabled=False, admin_token="short").admin_token == "short", "without auth it is not used"


def test_a_node_refuses_to_start_with_auth_and_a_weak_admin_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLUX_AUTH_ENABLED", "true")
    monkeypatch.setenv("FLUX_ADMIN_TOKEN", "short")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert cmd_serve(argparse.Namespace(port=None, host=None)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "FLUX_ADMIN_TOKEN of at least 32 characters" in err
    assert "python -c 'import secrets; print(secrets.token_urlsafe(32))'" in err
    assert err.rstrip().endswith("refusing to start")


def test_a_field_error_still_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLUX_PARTITIONS", "0")
    assert cmd_serve(argparse.Namespace(port=None, host=None)) == 2
    assert "flux: invalid configuration: FLUX_PARTITIONS: Input should be greater than or equal to 1" in (
        capsys.readouterr().err
    )
