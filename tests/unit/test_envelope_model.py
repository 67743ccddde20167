"""The envelope's pydantic model (flux.model.envelope) accepts exactly what flux.model.events.validate_event accepts.

Envelopes are generated with hypothesis, valid and invalid in many ways: fields missing, null, of the
wrong JSON type, empty, at and one past every length limit, every ``op``, timestamps as integers,
integral and fractional floats, booleans and strings, extra fields. Each is sent as JSON (what the API
receives) and, where available, checked against the model's JSON Schema too (what the OpenAPI
document promises, and what the API fuzz pass generates from).

Deliberately narrower: the model carries the default per-event limits (``DEFAULT_LIMITS``);
``validate_event`` takes the configured ones, which ``api.openapi`` writes into the served document.
So the comparison is made at the default limits.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from flux.model.envelope import EventIn
from flux.model.events import DEFAULT_LIMITS, MAX_EVENT_ID_LENGTH, MAX_TIMESTAMP_MS, InvalidEvent, validate_event

NOW_MS = 1_739_290_200_000
MISSING = object()  # the field is left out

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8
)
wrong_types = st.sampled_from([None, True, False, 0, 1.5, [], ["a"], {}, {"a": 1}])


def sized_text(length: int) -> str:
    return "x" * length


def required_text() -> st.SearchStrategy[Any]:
    """``stream``/``source``: missing, null, empty, wrong types, some text, or text at and one past the limit."""
    limit = DEFAULT_LIMITS.stream_source_length
    at_and_past = st.sampled_from([sized_text(limit), sized_text(limit + 1), "é" * limit, "é" * (limit + 1)])
    return st.one_of(st.just(MISSING), st.just(""), wrong_types, text, st.just("sensors"), at_and_past)


timestamps = st.one_of(
    st.just(MISSING),
    st.none(),
    st.sampled_from([0, 1, NOW_MS, MAX_TIMESTAMP_MS, MAX_TIMESTAMP_MS + 1, -1, 2**63 - 1, -(2**63)]),
    st.integers(-(10**15), 10**15),
    st.sampled_from([0.0, -0.0, float(NOW_MS), NOW_MS + 0.5, 1e300, -1.0, float(MAX_TIMESTAMP_MS + 1)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([True, False, "1739290200000", "2025-02-11T16:10:00Z", "", [], {}]),
)
event_ids = st.one_of(
    st.just(MISSING),
    st.none(),
    st.just(""),
    st.sampled_from([sized_text(MAX_EVENT_ID_LENGTH), sized_text(MAX_EVENT_ID_LENGTH + 1), "é" * MAX_EVENT_ID_LENGTH]),
    text,
    wrong_types,
)
ops = st.one_of(
    st.just(MISSING), st.none(), st.just("delete"), st.sampled_from(["DELETE", "", "upsert", " delete"]), wrong_types
)
entity_ids = st.one_of(
    st.just(MISSING),
    st.just(""),
    wrong_types,
    text,
    st.sampled_from(
        [
            "acme/sensor-01",
            sized_text(DEFAULT_LIMITS.entity_id_length),
            sized_text(DEFAULT_LIMITS.entity_id_length + 1),
            "ü" * DEFAULT_LIMITS.entity_id_length,
            "a\x00b",
            "\x00",
            "line\n",
        ]
    ),
)


@st.composite
def property_maps(draw: st.DrawFn) -> Any:
    """``payload.properties``: missing, null, wrong types, or objects at and past the count and name limits."""
    kind = draw(st.sampled_from(["missing", "null", "wrong", "small", "count", "name"]))
    if kind == "missing":
        return MISSING
    if kind == "null":
        return None
    if kind == "wrong":
        return draw(st.sampled_from([True, 0, 1.5, "x", [], [1], ""]))
    if kind == "small":
        return draw(st.dictionaries(text, json_values, max_size=4))
    if kind == "count":
        count = draw(st.sampled_from([0, 1, DEFAULT_LIMITS.properties - 1, DEFAULT_LIMITS.properties]))
        count += draw(st.sampled_from([0, 1]))
        return {f"p{i}": i for i in range(count)}
    length = draw(st.sampled_from([0, DEFAULT_LIMITS.property_key_length, DEFAULT_LIMITS.property_key_length + 1]))
    return {sized_text(length): draw(json_values), "ok": 1}


@st.composite
def payloads(draw: st.DrawFn) -> Any:
    """``payload``: missing, null, not an object, or an object of an entity id, properties and maybe extra keys."""
    kind = draw(st.sampled_from(["object", "object", "object", "object", "missing", "wrong"]))
    if kind == "missing":
        return MISSING
    if kind == "wrong":
        return draw(wrong_types.filter(lambda value: not isinstance(value, dict)))
    payload = {"entity_id": draw(entity_ids), "properties": draw(property_maps())}
    payload.update(draw(st.dictionaries(st.sampled_from(["extra", "type"]), json_values, max_size=1)))
    return {name: value for name, value in payload.items() if value is not MISSING}


def valid_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=max_size
    )


@st.composite
def valid_envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """An envelope ``validate_event`` accepts: an update or a deletion, optional fields present or not."""
    delete = draw(st.booleans())
    entity_id = draw(
        valid_text(20)
        | st.sampled_from([sized_text(DEFAULT_LIMITS.entity_id_length), "ü" * DEFAULT_LIMITS.entity_id_length])
    )
    payload: dict[str, Any] = {"entity_id": entity_id}
    if delete:
        payload.update(draw(st.sampled_from([{}, {"properties": None}])))
    else:
        payload["properties"] = draw(
            st.dictionaries(text, json_values, max_size=4)
            | st.just({f"p{i}": i for i in range(DEFAULT_LIMITS.properties)})
            | st.just({sized_text(DEFAULT_LIMITS.property_key_length): 1})
        )
    longest = st.just(sized_text(DEFAULT_LIMITS.stream_source_length))
    envelope: dict[str, Any] = {
        "stream": draw(valid_text(12) | longest),
        "source": draw(valid_text(12) | longest),
        "op": "delete" if delete else draw(st.sampled_from([MISSING, None])),
        "timestamp": draw(
            st.sampled_from([MISSING, None, 0, MAX_TIMESTAMP_MS, float(NOW_MS), -0.0])
            | st.integers(0, MAX_TIMESTAMP_MS)
        ),
        "eventId": draw(
            st.sampled_from([MISSING, None, sized_text(MAX_EVENT_ID_LENGTH)]) | valid_text(MAX_EVENT_ID_LENGTH)
        ),
        "key": draw(st.just(MISSING) | json_values),
        "schema": draw(st.just(MISSING) | json_values),
        "payload": payload,
    }
    return {name: value for name, value in envelope.items() if value is not MISSING}


FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "stream": required_text(),
    "source": required_text(),
    "op": ops,
    "timestamp": timestamps,
    "eventId": event_ids,
    "key": json_values,
    "schema": json_values,
    "payload": payloads(),
    "extra": json_values,
}
PAYLOAD_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "entity_id": entity_ids,
    "properties": property_maps(),
    "extra": json_values,
}


@st.composite
def envelopes(draw: st.DrawFn) -> Any:
    """A valid envelope with up to three fields (of the envelope or its payload) changed, left out or added;
    now and then not an object at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)
    envelope = draw(valid_envelopes())
    for _ in range(draw(st.integers(0, 3))):
        if isinstance(envelope.get("payload"), dict) and draw(st.booleans()):
            target = envelope["payload"] = dict(envelope["payload"])
            fields = PAYLOAD_FIELDS
        else:
            target, fields = envelope, FIELDS
        name = draw(st.sampled_from(sorted(fields)))
        value = draw(fields[name])
        if value is MISSING:
            target.pop(name, None)
        else:
            target[name] = value
    return envelope


def accepted_by_the_rule(envelope: Any) -> bool:
    try:
        validate_event(envelope, now_ms=NOW_MS, limits=DEFAULT_LIMITS)
    except InvalidEvent:
        return False
    return True


def accepted_by_the_model(envelope: Any) -> bool:
    try:
        EventIn.model_validate_json(orjson.dumps(envelope))
    except ValidationError:
        return False
    return True


def schema_validator() -> Any:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")  # installed with schemathesis (the dev extra)
    return jsonschema_rs.Draft202012Validator(EventIn.model_json_schema(by_alias=True))


VALID = {"stream": "sensors", "source": "gw-1", "payload": {"entity_id": "acme/s-1", "properties": {"t": 22.5}}}


def with_payload(**fields: Any) -> dict[str, Any]:
    return {**VALID, "payload": {"entity_id": "acme/s-1", **fields}}


BOUNDARIES: dict[str, Any] = {
    "valid": VALID,
    "not an object": [VALID],
    "stream missing": {k: v for k, v in VALID.items() if k != "stream"},
    "stream null": {**VALID, "stream": None},
    "stream empty": {**VALID, "stream": ""},
    "stream a number": {**VALID, "stream": 1},
    "source empty": {**VALID, "source": ""},
    "stream at its limit": {**VALID, "stream": sized_text(DEFAULT_LIMITS.stream_source_length)},
    "stream past its limit": {**VALID, "stream": sized_text(DEFAULT_LIMITS.stream_source_length + 1)},
    "source at its limit": {**VALID, "source": "ü" * DEFAULT_LIMITS.stream_source_length},
    "source past its limit": {**VALID, "source": sized_text(DEFAULT_LIMITS.stream_source_length + 1)},
    "source of 100,000 characters": {**VALID, "source": sized_text(100_000)},
    "eventId at its limit": {**VALID, "eventId": sized_text(MAX_EVENT_ID_LENGTH)},
    "eventId past its limit": {**VALID, "eventId": sized_text(MAX_EVENT_ID_LENGTH + 1)},
    "eventId empty": {**VALID, "eventId": ""},
    "eventId a number": {**VALID, "eventId": 7},
    "timestamp 0": {**VALID, "timestamp": 0},
    "timestamp -1": {**VALID, "timestamp": -1},
    "timestamp at its limit": {**VALID, "timestamp": MAX_TIMESTAMP_MS},
    "timestamp past its limit": {**VALID, "timestamp": MAX_TIMESTAMP_MS + 1},
    "timestamp integral float": {**VALID, "timestamp": float(NOW_MS)},
    "timestamp fractional": {**VALID, "timestamp": NOW_MS + 0.5},
    "timestamp boolean": {**VALID, "timestamp": True},
    "timestamp string": {**VALID, "timestamp": str(NOW_MS)},
    "op null": {**VALID, "op": None},
    "op another word": {**VALID, "op": "upsert"},
    "op upper case": {**VALID, "op": "DELETE"},
    "delete without properties": {**with_payload(), "op": "delete"},
    "delete with null properties": {**with_payload(properties=None), "op": "delete"},
    "delete with properties": {**with_payload(properties={}), "op": "delete"},
    "update without properties": with_payload(),
    "update with null properties": with_payload(properties=None),
    "properties not an object": with_payload(properties=[]),
    "properties at the count limit": with_payload(properties={f"p{i}": i for i in range(DEFAULT_LIMITS.properties)}),
    "properties past the count limit": with_payload(
        properties={f"p{i}": i for i in range(DEFAULT_LIMITS.properties + 1)}
    ),
    "property name at its limit": with_payload(properties={sized_text(DEFAULT_LIMITS.property_key_length): 1}),
    "property name past its limit": with_payload(properties={sized_text(DEFAULT_LIMITS.property_key_length + 1): 1}),
    "entity id at its limit": {
        **VALID,
        "payload": {"entity_id": sized_text(DEFAULT_LIMITS.entity_id_length), "properties": {}},
    },
    "entity id past its limit": {
        **VALID,
        "payload": {"entity_id": sized_text(DEFAULT_LIMITS.entity_id_length + 1), "properties": {}},
    },
    "entity id with NUL": {**VALID, "payload": {"entity_id": "a\x00b", "properties": {}}},
    "entity id empty": {**VALID, "payload": {"entity_id": "", "properties": {}}},
    "payload missing": {k: v for k, v in VALID.items() if k != "payload"},
    "payload not an object": {**VALID, "payload": "acme/s-1"},
}


@pytest.mark.parametrize("envelope", list(BOUNDARIES.values()), ids=list(BOUNDARIES))
def test_at_and_past_every_limit_both_agree(envelope: Any) -> None:
    rule = accepted_by_the_rule(envelope)
    assert accepted_by_the_model(envelope) == rule
    assert schema_validator().is_valid(orjson.loads(orjson.dumps(envelope))) == rule


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(envelopes())
@example(VALID)
@example({**VALID, "op": "delete", "payload": {"entity_id": "acme/s-1"}})
@example({**VALID, "op": "delete", "payload": {"entity_id": "acme/s-1", "properties": None}})
@example({**VALID, "op": "delete", "payload": {"entity_id": "acme/s-1", "properties": {}}})
@example({**VALID, "op": None, "timestamp": float(NOW_MS), "eventId": None, "key": None, "schema": None})
@example({**VALID, "payload": {"entity_id": "acme/s-1", "properties": None}})
def test_the_model_accepts_exactly_what_validate_event_accepts(envelope: Any) -> None:
    rule = accepted_by_the_rule(envelope)
    assert accepted_by_the_model(envelope) == rule, f"validate_event {'accepts' if rule else 'refuses'} {envelope!r}"
    python = orjson.loads(orjson.dumps(envelope))
    try:
        EventIn.model_validate(python)
    except ValidationError:
        assert not rule, f"the model refuses the Python form of {envelope!r}"
    else:
        assert rule, f"the model accepts the Python form of {envelope!r}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(envelopes())
@example({**VALID, "op": "delete", "payload": {"entity_id": "acme/s-1", "properties": {}}})
def test_the_json_schema_accepts_exactly_what_validate_event_accepts(envelope: Any) -> None:
    validator = schema_validator()
    assert validator.is_valid(orjson.loads(orjson.dumps(envelope))) == accepted_by_the_rule(envelope), envelope


def test_both_kinds_are_documented_by_op() -> None:
    schema = EventIn.model_json_schema(by_alias=True)
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in schema["oneOf"]] == ["UpsertEvent", "DeleteEvent"]
    upsert, delete = schema["$defs"]["UpsertEvent"], schema["$defs"]["DeleteEvent"]
    assert "op" in upsert["properties"] and "op" in delete["required"]
    payload = schema["$defs"]["EventPayload"]["properties"]
    assert payload["entity_id"]["maxLength"] == DEFAULT_LIMITS.entity_id_length
    for kind in (upsert, delete):
        assert kind["properties"]["stream"]["maxLength"] == kind["properties"]["source"]["maxLength"] == 256
    assert payload["properties"]["maxProperties"] == DEFAULT_LIMITS.properties
