"""Raw pages (connector/rawjson.py): records kept as the JSON Graph sent, written unchanged, still
deduplicated, filtered and normalised; anything unusual parsed the usual way."""

from __future__ import annotations

import asyncio
import gzip

import orjson
import pytest

from connector.catalog.datasets import DATASETS
from connector.catalog.schema import normaliser_for
from connector.collect.paging import SeenIds
from connector.rawjson import RawRecord, full, raw_page
from connector.store.contract import JsonlGzWriter

KEYS = ("id", "userPrincipalName")
USERS = [
    {"id": "a1", "userPrincipalName": "adele@contoso.com", "displayName": "Adèle \"A\" Vance",
     "assignedPlans": [{"service": "exchange", "capabilityStatus": "Enabled"}]},
    {"id": "b2", "displayName": "no UPN selected", "signInActivity": None},
    {"id": "c3", "userPrincipalName": "\u00e9mile@contoso.com", "tags": ["x", {"y": 1.5}]},
]


def page(records, **extra) -> bytes:
    return orjson.dumps({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users", "value": records,
                         **extra})


def test_records_keep_graphs_json_and_expose_their_keys():
    content = page(USERS, **{"@odata.nextLink": "https://graph.microsoft.com/v1.0/users?$skiptoken=x",
                             "@odata.count": 3})
    records, next_link, count = raw_page(content, KEYS)
    assert next_link.endswith("$skiptoken=x") and count == 3
    assert all(type(r) is RawRecord for r in records)
    assert [r.raw for r in records] == [orjson.dumps(u) for u in USERS]  # byte for byte what was sent
    assert [dict(r) for r in records] == [
        {"id": "a1", "userPrincipalName": "adele@contoso.com"},
        {"id": "b2", "userPrincipalName": None},  # a property the record lacks reads as None
        {"id": "c3", "userPrincipalName": "\u00e9mile@contoso.com"},
    ]
    assert [full(r) for r in records] == USERS


@pytest.mark.parametrize("content", [
    b'{"value": [{"id": "a1"}]}',  # not compact: whitespace after a colon
    b'{"@odata.context":"x","value":[{"id":"a1"}]}'.replace(b'"x",', b'"x",\n    ').replace(b'":"x', b'": "x'),
    b'{"id":"only-one-object"}',  # no `value`: a single object, parsed by the caller
])
def test_pages_that_are_not_compact_collections_go_to_the_usual_parse(content):
    records, _, _ = raw_page(content, KEYS)
    assert records is None


def test_a_record_that_is_not_an_object_or_spans_lines_is_parsed():
    records, _, _ = raw_page(page([{"id": "a"}, "text", 5]), KEYS)
    assert records == [{"id": "a"}, "text", 5] and not any(type(r) is RawRecord for r in records)
    # A record with a line break between its tokens (but none after a colon) is parsed, not written raw.
    content = b'{"value":[{"id":"a",\n"userPrincipalName":"u@x"}]}'
    records, _, _ = raw_page(content, KEYS)
    assert records == [{"id": "a", "userPrincipalName": "u@x"}] and type(records[0]) is not RawRecord


@pytest.mark.parametrize("content", [
    b'{"value":[{"id":"a"},{"id":"b"', b"[]", b'{"value":{"id":"a"}}', b'{"value":[],"@odata.nextLink":5}',
    b"<html>Service Unavailable</html>", b"",
])
def test_broken_pages_raise_value_error_to_be_retried(content):
    with pytest.raises(ValueError):
        raw_page(content, KEYS)


def test_seen_ids_and_the_domain_filter_work_on_raw_records():
    records, _, _ = raw_page(page(USERS + [USERS[0]]), KEYS)
    seen = SeenIds()
    try:
        kept = seen.new(records)
    finally:
        seen.close()
    assert [r["id"] for r in kept] == ["a1", "b2", "c3"] and seen.dropped == 1
    assert [r for r in kept if (r.get("userPrincipalName") or "").endswith("@contoso.com")] == [kept[0], kept[2]]


class _Sink:
    def __init__(self):
        self.data = b""

    def put(self, block: bytes) -> None:
        self.data += block

    def finish(self) -> None:
        pass

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        pass


def test_writer_writes_raw_records_unchanged_and_normalises_only_those_with_empty_dates():
    sign_ins = [
        {"id": "s1", "userPrincipalName": "a@x", "signInActivity": {"lastSignInDateTime": "2026-11-30T08:00:00Z",
                                                                  "lastSuccessfulSignInDateTime": ""}},
        {"id": "s2", "userPrincipalName": "b@x", "signInActivity": {"lastSignInDateTime": "2026-11-29T08:00:00Z",
                                                                  "lastSuccessfulSignInDateTime": None}},
    ]
    content = page(sign_ins).replace(b'"s2"', b'"\\u0073\\u0032"')  # Graph may escape what orjson would not
    records, _, _ = raw_page(content, KEYS)
    sink = _Sink()
    writer = JsonlGzWriter(sink, "x.jsonl.gz", normaliser_for(DATASETS["user_sign_in_activity"]))
    async def write() -> None:
        await writer.write(records)
        await writer.finish()

    asyncio.run(write())
    lines = gzip.decompress(sink.data).splitlines()
    assert orjson.loads(lines[0])["signInActivity"]["lastSuccessfulSignInDateTime"] is None  # "" became null
    assert lines[1] == records[1].raw and b"\\u0073\\u0032" in lines[1]  # untouched: Graph's own bytes
    assert orjson.loads(lines[1])["id"] == "s2" and writer.records == 2


def test_the_last_block_is_written_whatever_the_tail_adds(monkeypatch):
    """finish() once lost a whole block when the last compressed bytes took the pending ones past BLOCK_SIZE: the
    file ended mid-record (a 300,000-user run in bench/delta.py), its sha256 that of the bytes written. Small
    blocks and pieces, and every number of records up to a few blocks' worth, reach that boundary many times."""
    import hashlib
    import os

    from connector.store import contract

    monkeypatch.setattr(contract, "BLOCK_SIZE", 3000)
    monkeypatch.setattr(contract, "COMPRESS_PIECE", 1000)
    for n in range(1, 80):
        sink = _Sink()
        writer = JsonlGzWriter(sink, "x.jsonl.gz")
        # incompressible lines, so the compressed size tracks the raw size
        lines = [orjson.dumps({"id": str(i), "noise": os.urandom(60).hex()}) for i in range(n)]

        async def write(lines=lines, writer=writer) -> None:
            for i in range(0, len(lines), 7):
                await writer.write([orjson.loads(line) for line in lines[i:i + 7]])
            await writer.finish()

        asyncio.run(write())
        assert gzip.decompress(sink.data).splitlines() == lines, n
        assert writer.info.sha256 == hashlib.sha256(sink.data).hexdigest() and writer.info.bytes == len(sink.data)
