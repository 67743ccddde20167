"""Source topics (flux.model.sources): the FLUX_SOURCE_TOPICS spec, and how a record of each format becomes envelopes
or dead letters. Pure: no broker. The router on a real broker: tests/e2e/test_source_topics.py."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from flux.config import Settings
from flux.model.events import EventLimits, validate_event
from flux.model.ids import source_event_id
from flux.model.reducer import exists, fold
from flux.model.sources import InvalidSourceTopics, SourceTopic, convert_record, parse_source_topics

T0 = 1_700_000_000_000
UPSERT = SourceTopic("sensors", "upsert", "sensors", "kafka:sensors")
CONNECT = SourceTopic("cdc", "connect-json", "cdc", "kafka:cdc")
FLUX = SourceTopic("native", "flux", "native", "kafka:native")

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
properties = st.dictionaries(st.text(min_size=1, max_size=16), json_values, max_size=8)
entity_ids = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1, max_size=40)
offsets = st.integers(0, 2**40)


def convert(source: SourceTopic, key: bytes | None, value: bytes | None, headers: Any = (), **kw: Any) -> Any:
    place = {"partition": 0, "offset": 7, "timestamp_ms": T0, **kw}
    return convert_record(source, key=key, value=value, headers=headers, **place)


def wrap(payload: Any, schema: Any = None) -> bytes:
    return orjson.dumps({"schema": schema or {"type": "struct", "optional": False}, "payload": payload})


# -- the spec -------------------------------------------------------------------------------------


def test_the_spec_names_topics_formats_and_optional_stream_and_source():
    assert parse_source_topics(" a:upsert , b.c:connect-json:telemetry , d:flux:s:kafka:d,") == [
        SourceTopic("a", "upsert", "a", "kafka:a"),
        SourceTopic("b.c", "connect-json", "telemetry", "kafka:b.c"),
        SourceTopic("d", "flux", "s", "kafka:d"),
    ]
    assert parse_source_topics("") == []


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("a", "the format must be one of flux, upsert, connect-json, got ''"),
        ("a:avro", "got 'avro'"),
        ("a b:upsert", "is not a Kafka topic name"),
        (":upsert", "is not a Kafka topic name"),
        ("a:upsert,a:flux", "listed twice"),
    ],
)
def test_a_spec_that_cannot_be_read_is_refused_naming_the_entry(spec, says):
    with pytest.raises(InvalidSourceTopics, match=says.replace("(", r"\(")):
        parse_source_topics(spec)


def test_settings_refuse_a_bad_spec_and_flux_own_topics_as_sources():
    assert Settings(source_topics="x:upsert").sources() == [SourceTopic("x", "upsert", "x", "kafka:x")]
    for spec, says in [
        ("x:yaml", "FLUX_SOURCE_TOPICS: 'x:yaml'"),
        ("flux.events:flux", "'flux.events' is one of Flux's own topics"),
        ("flux.events.dlq:upsert", "one of Flux's own topics"),
        ("flux-entities-changelog:upsert", "one of Flux's own topics"),
    ]:
        with pytest.raises(ValidationError, match=says):
            Settings(source_topics=spec)


# -- upsert ---------------------------------------------------------------------------------------


@given(entity=entity_ids, props=properties, offset=offsets, ts=st.integers(0, 2**45))
def test_an_upsert_record_is_one_event_of_its_properties_at_the_record_time(entity, props, offset, ts):
    out = convert(UPSERT, entity.encode(), orjson.dumps(props), offset=offset, timestamp_ms=ts)
    assert out.rejected == []
    [event] = out.events
    assert event["payload"] == {"entity_id": entity, "properties": props}
    assert (event["stream"], event["source"], event["timestamp"]) == ("sensors", "kafka:sensors", ts)
    assert event["eventId"] == source_event_id(ts, "sensors", 0, offset)
    assert validate_event(event, now_ms=0) == event  # the envelope is one the events topic accepts as is
    again = convert(UPSERT, entity.encode(), orjson.dumps(props), offset=offset, timestamp_ms=ts)
    assert again.events == out.events  # a record read twice is the same event: applied once


@given(entity=entity_ids, offset=offsets)
def test_an_upsert_tombstone_deletes_the_entity(entity, offset):
    [event] = convert(UPSERT, entity.encode(), None, offset=offset).events
    assert event["op"] == "delete" and event["payload"] == {"entity_id": entity}
    created = convert(UPSERT, entity.encode(), b'{"a": 1}', offset=offset, timestamp_ms=T0 - 1).events
    assert not exists(fold([*created, event]))


@given(value=json_values.filter(lambda v: not isinstance(v, dict)))
def test_an_upsert_value_that_is_not_an_object_is_a_dead_letter_with_the_reason(value):
    out = convert(UPSERT, b"e", orjson.dumps(value))
    assert out.events == []
    [rejected] = out.rejected
    assert rejected.reason.startswith("record value must be a JSON object of properties, got ")
    assert rejected.raw == {"key": "e", "value": orjson.dumps(value).decode()}


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        (None, b'{"a": 1}', "the record has no key (the entity id)"),
        (b"", b'{"a": 1}', "the record has no key (the entity id)"),
        (b"\xff\xfe", b'{"a": 1}', "the record key (the entity id) is not UTF-8"),
        (b"e", b"{nope", "record value is not JSON: "),
        (b"e\0x", b'{"a": 1}', "payload.entity_id must not contain the NUL character"),
        (b"e", orjson.dumps({f"p{i}": i for i in range(5)}), "payload.properties has 5 properties; the limit is 4"),
    ],
)
def test_upsert_records_that_cannot_be_events_say_why(key, value, says):
    out = convert_record(
        UPSERT,
        key=key,
        value=value,
        headers=(),
        partition=0,
        offset=1,
        timestamp_ms=T0,
        limits=EventLimits(properties=4),
    )
    assert out.events == [] and [r.reason[: len(says)] for r in out.rejected] == [says]


def test_a_record_without_a_timestamp_is_refused():
    assert convert(UPSERT, b"e", b"{}", timestamp_ms=-1).rejected[0].reason == (
        "the record has no timestamp (the event's time)"
    )


def test_headers_name_the_stream_and_the_source_and_are_validated():
    [event] = convert(UPSERT, b"e", b"{}", [("stream", b"telemetry"), ("other", b"x"), ("source", b"gw")]).events
    assert (event["stream"], event["source"]) == ("telemetry", "gw")
    assert convert(UPSERT, b"e", b"{}", [("source", b"\xff")]).rejected[0].reason == "header 'source' is not UTF-8"
    assert convert(UPSERT, b"e", b"{}", [("stream", b"")]).rejected[0].reason == "stream must not be empty"


@given(offset=st.integers(0, 2**40 - 2), ts=st.integers(0, 2**45))
def test_a_later_record_of_a_partition_wins_a_tie_on_the_timestamp(offset, ts):
    first = convert(UPSERT, b"e", b'{"v": 1}', offset=offset, timestamp_ms=ts).events
    second = convert(UPSERT, b"e", b'{"v": 2}', offset=offset + 1, timestamp_ms=ts).events
    assert fold([*second, *first])["p"] == {"v": 2}
    assert uuid.UUID(first[0]["eventId"]).version == 7


# -- connect-json ---------------------------------------------------------------------------------


@given(
    entity=entity_ids,
    props=properties,
    key_form=st.sampled_from(["wrapper", "struct", "json-string", "plain"]),
)
def test_a_connect_json_record_is_unwrapped_whatever_form_its_key_has(entity, props, key_form):
    key = {
        "wrapper": wrap(entity, {"type": "string", "optional": False}),
        "struct": wrap({"id": entity}),
        "json-string": orjson.dumps(entity),
        "plain": entity.encode(),
    }[key_form]
    out = convert(CONNECT, key, wrap(props))
    if key_form == "plain" and _is_json(entity):
        return  # a plain key that reads as JSON is read as JSON (see the next test)
    assert out.rejected == []
    [event] = out.events
    assert event["payload"] == {"entity_id": entity, "properties": props}
    assert (event["stream"], event["source"], event["timestamp"]) == ("cdc", "kafka:cdc", T0)


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


@pytest.mark.parametrize(
    ("key", "entity"),
    [
        (wrap(42, {"type": "int64"}), "42"),
        (wrap({"id": 7}), "7"),
        (b"42", "42"),
        (b"[1, 2]", "[1, 2]"),  # JSON, but no wrapper nor string: the text itself
        (orjson.dumps({"id": "x"}), '{"id":"x"}'),
    ],
)
def test_connect_keys_of_other_shapes(key, entity):
    [event] = convert(CONNECT, key, wrap({"a": 1})).events
    assert event["payload"]["entity_id"] == entity


@pytest.mark.parametrize("payload", [True, 1.5, None, ["a"], {"a": 1, "b": 2}])
def test_a_connect_key_wrapping_something_else_is_refused(payload):
    out = convert(CONNECT, wrap(payload), wrap({"a": 1}))
    assert out.events == []
    assert out.rejected[0].reason.startswith("the record key's payload must be a string, an integer or a struct")


@pytest.mark.parametrize("value", [None, b"null", wrap(None)])
def test_connect_tombstones_delete(value):
    [event] = convert(CONNECT, wrap("e"), value).events
    assert event["op"] == "delete" and event["payload"] == {"entity_id": "e"}


@given(value=json_values)
def test_a_connect_value_without_the_schema_and_payload_wrapper_is_refused(value):
    if value is None or (isinstance(value, dict) and set(value) == {"schema", "payload"}):
        return
    out = convert(CONNECT, b"e", orjson.dumps(value))
    assert out.events == []
    assert out.rejected[0].reason.startswith('record value must be {"schema": ..., "payload": ...}')


@pytest.mark.parametrize("payload", [1, "text", [1], True])
def test_a_connect_payload_that_is_not_a_struct_is_refused(payload):
    out = convert(CONNECT, b"e", wrap(payload))
    assert out.rejected[0].reason.startswith("the record's payload must be an object (a struct) of properties")


# -- flux -----------------------------------------------------------------------------------------


def test_flux_records_keep_their_own_fields_and_take_the_topic_defaults_for_missing_ones():
    record = [
        {"payload": {"entity_id": "a", "properties": {"x": 1}}},
        {
            "stream": "own",
            "source": "me",
            "timestamp": 5,
            "eventId": "e1",
            "payload": {"entity_id": "b", "properties": {}},
        },
        {"stream": "s", "payload": {"entity_id": "c"}},
        "not an object",
    ]
    out = convert(FLUX, None, orjson.dumps(record), [("source", b"hdr")], offset=3)
    assert [(e["stream"], e["source"], e["timestamp"], e["eventId"]) for e in out.events] == [
        ("native", "hdr", T0, source_event_id(T0, "native", 0, 3, 0)),
        ("own", "me", 5, "e1"),
    ]
    assert [(r.index, r.reason) for r in out.rejected] == [
        (2, "payload.properties is required"),
        (3, "event must be a JSON object, got string"),
    ]


@pytest.mark.parametrize(
    ("value", "says"),
    [(None, "empty record value"), (b"", "empty record value"), (b"42", "must be a JSON object or an array")],
)
def test_flux_records_that_are_not_envelopes_are_refused(value, says):
    assert says in convert(FLUX, None, value).rejected[0].reason
