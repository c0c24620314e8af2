"""Graph pages taken apart without building their records: each record stays the JSON text Graph sent.

A `users` record is about 2 KB of JSON, most of it assignedPlans; turning it into Python objects
with orjson and back into JSON for the snapshot costs about 38 us per user, while msgspec can cut a
page into its records' raw JSON and read the one or two properties the connector looks at (id, a
user principal name) in about 7 us (docs/performance.md). Strategies that write records as Graph
returns them (the `pages` strategy) ask for raw pages; everything that reshapes records still gets
dicts.

A :class:`RawRecord` is a dict of those key properties (so deduplication by id and the domain filter
work on it unchanged) that also carries the record's JSON; the snapshot writer writes that JSON as it
is. Graph sends compact JSON; a page with whitespace after a colon is parsed the usual way (the
writer's check for Graph's "" dates looks for `":""`), and so is a record that is not an object.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import msgspec
import orjson

__all__ = ["RawRecord", "full", "raw_page"]


class RawRecord(dict):
    """The record's key properties as a dict; `raw` is the record's JSON exactly as Graph sent it."""

    __slots__ = ("raw",)

    def __init__(self, keys: Any, raw: bytes):
        super().__init__(keys)
        self.raw = raw


def full(record: dict[str, Any]) -> dict[str, Any]:
    """The record with every property, parsed (a RawRecord's JSON is parsed here, on demand)."""
    return orjson.loads(record.raw) if type(record) is RawRecord else record


class _Page(msgspec.Struct):
    value: list[msgspec.Raw] | None = None
    next_link: str | None = msgspec.field(name="@odata.nextLink", default=None)
    count: int | None = msgspec.field(name="@odata.count", default=None)


_PAGE = msgspec.json.Decoder(_Page)
# A quote, a colon, whitespace: JSON that is not compact. A server writes a whole body one way, so the
# start of the page tells (inside a string a quote is escaped: at worst a `\": ` in a value costs the
# page the usual parse).
_LOOSE = re.compile(rb'":[ \t\r\n]')
_LOOSE_SCAN = 4096


@cache
def _keys_decoder(names: tuple[str, ...]) -> msgspec.json.Decoder:
    """Decodes a page's `value` as the named properties of each record; msgspec skips everything else
    without building it."""
    fields = [(f"k{i}", Any, None) for i in range(len(names))]
    keys = msgspec.defstruct("Keys", fields, rename={f"k{i}": n for i, n in enumerate(names)})
    page = msgspec.defstruct("KeysPage", [("value", list[keys], [])])
    return msgspec.json.Decoder(page)


def raw_page(content: bytes, keys: tuple[str, ...]) -> tuple[list[dict[str, Any]] | None, Any, Any]:
    """(records, @odata.nextLink, @odata.count) of a page; records is None when the page has no `value`
    (a single object) or is not compact JSON: the caller parses it. Raises ValueError for a body that
    is not a JSON object of that shape."""
    if _LOOSE.search(content, 0, _LOOSE_SCAN):
        return None, None, None
    try:
        page = _PAGE.decode(content)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"the page is not a Graph collection page ({len(content)} bytes: {exc})") from None
    if page.value is None:
        return None, page.next_link, page.count
    astuple = msgspec.structs.astuple
    try:  # a second pass reads the key properties of every record at once
        found = _keys_decoder(keys).decode(content).value
    except msgspec.ValidationError:  # a record that is not an object: kept as whatever JSON it is
        return [orjson.loads(bytes(item)) for item in page.value], page.next_link, page.count
    records: list[dict[str, Any]] = []
    append = records.append
    for item, k in zip(page.value, found, strict=True):
        raw = bytes(item)
        if b"\n" in raw or b"\r" in raw:  # one record, one line (JSON Lines): parsed and written anew
            append(orjson.loads(raw))
        else:
            append(RawRecord(zip(keys, astuple(k), strict=True), raw))  # a property the record lacks reads as None
    return records, page.next_link, page.count
