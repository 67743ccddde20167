"""The environment variable each field of a pydantic-settings class is read from."""

from __future__ import annotations

from pydantic import AliasChoices
from pydantic_settings import BaseSettings


def env_name(settings: type[BaseSettings], field: str) -> str:
    """The variable ``field`` of ``settings`` is read from: its alias (the first of several), else ``PREFIX_NAME``."""
    alias = settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        alias = next((choice for choice in alias.choices if isinstance(choice, str)), None)
    if isinstance(alias, str):
        return alias
    return f"{settings.model_config.get('env_prefix', '')}{field}".upper()


def env_names(settings: type[BaseSettings]) -> dict[str, str]:
    """Field name -> its variable, for every field of ``settings`` (see :func:`env_name`)."""
    return {field: env_name(settings, field) for field in settings.model_fields}
