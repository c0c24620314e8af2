"""Record schemas from the dataset declarations: the published JSON Schema and the one normalisation.

Graph writes an unset date-time as `null` in most places but as `""` in some (its own doc samples
show `"lastSuccessfulSignInDateTime": ""` with `"lastSuccessfulSignInRequestId": ""`). A reader that
infers column types from a sample (DuckDB's `read_json` types such columns TIMESTAMP or UUID, pandas,
Spark) then fails or falls back to text depending on where such a value lands in the file. So the
snapshot writes `""` in a declared date-time, date or identifier (uuid) property as `null`: the only
change the format makes to Graph's values (docs/snapshot-format.md).

The normaliser is compiled once per dataset from its declaration into closures that visit only
the paths that can hold such a value, so a dataset without them costs nothing and `users` costs a few
dictionary look-ups per record (bench: `python -m connector.catalog.schema`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connector.catalog.datasets import DATASETS, Dataset
from connector.catalog.shapes import Field

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
DATES = frozenset({"datetime", "date"})
EMPTY_IS_NULL = DATES | {"uuid"}  # scalar types whose "" Graph means as unset: written as null
_SCALARS: dict[str, dict[str, Any]] = {
    "string": {"type": ["string", "null"]},
    "boolean": {"type": ["boolean", "null"]},
    "integer": {"type": ["integer", "null"]},
    "number": {"type": ["number", "null"]},
    "datetime": {"type": ["string", "null"], "format": "date-time"},
    "date": {"type": ["string", "null"], "format": "date"},
    "uuid": {"type": ["string", "null"], "format": "uuid"},
}
TYPES = frozenset(_SCALARS) | {"object", "array"}

Record = dict[str, Any]
Normaliser = Callable[[list[Record]], int]  # fixes records in place, returns how many values it changed


# -- JSON Schema ------------------------------------------------------------------------------------------------

def _type_schema(type_name: str) -> dict[str, Any]:
    if type_name not in _SCALARS:
        raise ValueError(f"unknown field type {type_name!r}; one of {sorted(TYPES)}")
    return dict(_SCALARS[type_name])


def _object_schema(fields: tuple[Field, ...]) -> dict[str, Any]:
    # New Graph properties and report columns may appear within a schema version: never closed.
    return {"type": ["object", "null"], "properties": {f.name: field_schema(f) for f in fields}}


def field_schema(f: Field) -> dict[str, Any]:
    if f.type == "object":
        out = _object_schema(f.fields)
    elif f.type == "array":
        items = f.items or "string"
        out = {"type": ["array", "null"],
               "items": _type_schema(items) if isinstance(items, str) else _object_schema(items)}
    else:
        out = _type_schema(f.type)
    if f.description:
        out = {"description": f.description, **out}
    return out


def json_schema(ds: Dataset) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one line of `<dataset>.jsonl.gz`."""
    schema = _object_schema(ds.fields)
    schema["type"] = "object"
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"{ds.name}.schema.json",
        "title": ds.name,
        "description": f"{ds.description} One line of {ds.file}: {ds.record}. Properties may be null; "
                       "properties not listed here may appear (Graph adds them). Date-times are ISO 8601 "
                       "in UTC; Graph's \"\" for an unset date or identifier is written as null.",
        **schema,
    }


# -- the normalisation -----------------------------------------------------------------------------------------

def _visitor(fields: tuple[Field, ...]) -> Callable[[Record], int] | None:
    """A function fixing one object in place and counting its changes, or None when nothing under it can
    be a date or an identifier."""
    dates = tuple(f.name for f in fields if f.type in EMPTY_IS_NULL)
    nested: list[tuple[str, bool, Callable[[Record], int]]] = []
    for f in fields:
        if f.type == "object":
            inner = _visitor(f.fields)
            if inner:
                nested.append((f.name, False, inner))
        elif f.type == "array" and isinstance(f.items, tuple):
            inner = _visitor(f.items)
            if inner:
                nested.append((f.name, True, inner))
    if not dates and not nested:
        return None

    def visit(obj: Record) -> int:
        changed = 0
        for name in dates:
            if obj.get(name) == "":
                obj[name] = None
                changed += 1
        for name, many, inner in nested:
            value = obj.get(name)
            if not value:
                continue
            if many:
                for item in value:
                    if isinstance(item, dict):
                        changed += inner(item)
            elif isinstance(value, dict):
                changed += inner(value)
        return changed
    return visit


def compile_normaliser(fields: tuple[Field, ...]) -> Normaliser | None:
    """In-place normaliser of a list of records, or None when the declaration has no date or identifier."""
    visit = _visitor(fields)
    if visit is None:
        return None

    def normalise(records: list[Record]) -> int:
        return sum(map(visit, records))
    return normalise


_compiled: dict[str, Normaliser | None] = {}


def normaliser_for(ds: Dataset) -> Normaliser | None:
    if ds.name not in _compiled:
        _compiled[ds.name] = compile_normaliser(ds.fields)
    return _compiled[ds.name]


def _bench(batches: int = 200) -> None:
    """Cost per `users` record (2 licences, 12 plans) in the writer: the scan of each serialised batch
    for an empty string (every batch), and the normaliser (only batches where the scan finds one)."""
    import time

    import orjson

    plans = [{"assignedDateTime": "2024-01-01T00:00:00Z", "capabilityStatus": "Enabled", "service": "exchange",
              "servicePlanId": "efb87545-963c-4e0d-99df-69c6916d9eb0"} for _ in range(12)]
    states = [{"assignedByGroup": None, "disabledPlans": [], "error": "None",
               "lastUpdatedDateTime": "2024-01-01T00:00:00Z", "skuId": "c7df2760-2c81-4ef7-b578-5b5392b571df",
               "state": "Active"} for _ in range(2)]
    base = {f.name: None for f in DATASETS["users"].fields}
    base.update(createdDateTime="2021-03-04T10:11:12Z", assignedPlans=plans, licenseAssignmentStates=states,
                assignedLicenses=[{"disabledPlans": [], "skuId": "c7df2760-2c81-4ef7-b578-5b5392b571df"}] * 2)
    normalise = normaliser_for(DATASETS["users"])
    assert normalise is not None
    batch = [dict(base) for _ in range(999)]
    data = b"\n".join(map(orjson.dumps, batch))
    t0 = time.process_time()
    for _ in range(batches):
        b'":""' in data  # noqa: B015 - the scan the writer makes
    scan = (time.process_time() - t0) / batches / len(batch)
    t0 = time.process_time()
    for _ in range(batches):
        b"\n".join(map(orjson.dumps, batch))
    dumps = (time.process_time() - t0) / batches / len(batch)
    t0 = time.process_time()
    for _ in range(batches):
        normalise(batch)
    visit = (time.process_time() - t0) / batches / len(batch)
    print(f"CPU per users record: scan {scan * 1e6:.2f} µs (every batch), normaliser {visit * 1e6:.2f} µs (only "
          f"batches holding an empty string; serialised again when it changed one), serialising {dumps * 1e6:.2f} µs")


if __name__ == "__main__":
    _bench()

