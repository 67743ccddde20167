"""The OpenAPI document as this node is configured: request schemas, maxima and security.

FastAPI generates the document from the routes; the request bodies are parsed by hand, so their
schemas are added here, and so is what comes from the environment: the configured maxima, and
bearer-token security where ``FLUX_AUTH_ENABLED`` and ``FLUX_PUBLIC_READS`` ask for it.
"""

from __future__ import annotations

from typing import Any

from api.models import BEARER, request_schemas
from flux.config import Settings
from flux.model.events import MAX_TIMESTAMP_MS

TIME_PARAMETERS = ("since", "until", "at")  # Unix ms or RFC 3339 (api.params.QueryTime)

SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "A namespace token, or FLUX_ADMIN_TOKEN for any namespace and for namespace administration",
}


def describe_configuration(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """``schema`` completed for this configuration (changed in place and returned)."""
    schema.setdefault("components", {}).setdefault("schemas", {}).update(request_schemas())
    _configured_maxima(schema, settings)
    _security(schema, settings)
    return schema


def _security(schema: dict[str, Any], settings: Settings) -> None:
    """Bearer security as configured: writes and admin operations declare it (``api.deps``); with
    auth off nothing does, and with private reads the reads do too."""
    operations = [
        (path, method, operation)
        for path, methods in schema.get("paths", {}).items()
        for method, operation in methods.items()
    ]
    if not settings.auth_enabled:
        for _, _, operation in operations:
            operation.pop("security", None)
        schema["components"].pop("securitySchemes", None)
        return
    schema["components"]["securitySchemes"] = {BEARER: SECURITY_SCHEME}
    if not settings.public_reads:
        for path, method, operation in operations:
            if method == "get" and path.startswith("/api/"):
                operation["security"] = [{BEARER: []}]


def _configured_maxima(schema: dict[str, Any], settings: Settings) -> None:
    """Write the configured maxima (they come from the environment) into ``schema``."""
    maxima = {
        "limit": settings.list_max_limit,
        "offset": settings.list_max_offset,
        "wait_timeout_ms": settings.wait_max_timeout_ms,
        **dict.fromkeys(TIME_PARAMETERS, MAX_TIMESTAMP_MS),
    }
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("name") in maxima:
                    parameter_schema = parameter.get("schema", {})
                    for option in parameter_schema.get("anyOf", [parameter_schema]):
                        if option.get("type") == "integer" and "maximum" not in option:
                            option["maximum"] = maxima[parameter["name"]]
                            option.setdefault("minimum", 0)
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("EventPayload", "DeletePayload"):
        if name in schemas:
            schemas[name]["properties"]["entity_id"]["maxLength"] = settings.max_entity_id_length
    for name in ("UpsertEvent", "DeleteEvent"):
        if name in schemas:
            for field in ("stream", "source"):
                schemas[name]["properties"][field]["maxLength"] = settings.max_stream_source_length
    payload = schemas.get("EventPayload")
    if payload is not None:
        properties = payload["properties"]["properties"]
        properties["maxProperties"] = settings.max_properties_per_event
        properties["propertyNames"] = {"maxLength": settings.max_property_key_length}
    if "BatchIn" in schemas:
        schemas["BatchIn"]["properties"]["events"]["maxItems"] = settings.max_batch_events
    batch = schema.get("paths", {}).get("/api/events/batch", {}).get("post", {})
    for option in (
        batch.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}).get("oneOf", [])
    ):
        if option.get("type") == "array":
            option["maxItems"] = settings.max_batch_events
