"""The change feed's record format and the WebSocket messages made from it."""

from __future__ import annotations

import orjson
import pytest

from api.live.hub import FORMAT_ENTITY, FORMAT_PROPERTY, change_messages
from flux.model.changes import (
    CHUNK_ENTITIES,
    ChangeRecord,
    EntityChange,
    InvalidChangeRecord,
    decode_record,
    encode_ops,
    encode_records,
)
from flux.model.reducer import EntityDeleted, PropertyChanged


def _record(entities: int) -> ChangeRecord:
    changes = [
        EntityChange(f"e{i}", 7, encode_ops([PropertyChanged("t", i, 1000)]), {"id": f"e{i}"}) for i in range(entities)
    ]
    return ChangeRecord(partition=2, applied=7, events=40, entities=9, sources=["s"], changes=changes)


def test_a_record_survives_encoding_and_decoding():
    record = _record(3)
    [value] = encode_records(record)
    assert decode_record(value) == record


def test_a_record_with_many_entities_is_split_and_every_chunk_keeps_the_offsets_and_totals():
    record = _record(CHUNK_ENTITIES * 2 + 1)
    chunks = [decode_record(v) for v in encode_records(record)]
    assert len(chunks) == 3
    assert {(c.partition, c.applied, c.events, c.entities) for c in chunks} == {(2, 7, 40, 9)}
    assert [c.id for chunk in chunks for c in chunk.changes] == [c.id for c in record.changes]


def test_a_record_with_no_changes_still_carries_the_applied_offset():
    [value] = encode_records(ChangeRecord(0, 12, 3, 1))
    assert decode_record(value).applied == 12


@pytest.mark.parametrize("value", [b"nope", b"[]", b'{"partition": 1}'])
def test_anything_else_is_refused(value):
    with pytest.raises(InvalidChangeRecord):
        decode_record(value)


def test_property_format_sends_one_message_per_change_in_order_with_rfc3339_times():
    ops = encode_ops([PropertyChanged("t", 1, 0), EntityDeleted(5), PropertyChanged("u", None, 6)])
    messages = [orjson.loads(m) for m in change_messages(EntityChange("x", 1, ops, {"id": "x"}), FORMAT_PROPERTY)]
    assert messages == [
        {
            "type": "state_update",
            "entity_id": "x",
            "property": "t",
            "value": 1,
            "timestamp": "1970-01-01T00:00:00.000Z",
        },
        {"type": "entity_deleted", "entity_id": "x", "timestamp": "1970-01-01T00:00:00.005Z"},
        {
            "type": "state_update",
            "entity_id": "x",
            "property": "u",
            "value": None,
            "timestamp": "1970-01-01T00:00:00.006Z",
        },
    ]


def test_entity_format_sends_the_whole_entity_once_per_change_after_any_deletion():
    entity = {"id": "x", "properties": {"u": 2}, "lastUpdated": "1970-01-01T00:00:00.006Z"}
    ops = encode_ops([PropertyChanged("t", 1, 0), EntityDeleted(5), PropertyChanged("u", 2, 6)])
    messages = [orjson.loads(m) for m in change_messages(EntityChange("x", 1, ops, entity), FORMAT_ENTITY)]
    assert messages == [
        {"type": "entity_deleted", "entity_id": "x", "timestamp": "1970-01-01T00:00:00.005Z"},
        {"type": "update", "entity": entity},
    ]
