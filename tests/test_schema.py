"""The record declarations: well formed, in step with the requests and the report parser, and the one
normalisation they drive."""

from __future__ import annotations

import copy

import pytest

from connector.catalog.datasets import DATASETS
from connector.catalog.schema import TYPES, compile_normaliser, json_schema, normaliser_for
from connector.catalog.shapes import Field
from connector.collect import reports


def _walk(fields: tuple[Field, ...], where: str):
    names = [f.name for f in fields]
    assert len(names) == len(set(names)), f"{where}: duplicate field names"
    for f in fields:
        yield f"{where}.{f.name}", f
        if f.type == "object":
            assert f.fields, f"{where}.{f.name}: an object needs fields"
            yield from _walk(f.fields, f"{where}.{f.name}")
        elif f.type == "array":
            assert f.items, f"{where}.{f.name}: an array needs items"
            if isinstance(f.items, tuple):
                yield from _walk(f.items, f"{where}.{f.name}[]")
            else:
                assert f.items in TYPES - {"object", "array"}, f"{where}.{f.name}: items {f.items!r}"


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_dataset_declares_well_formed_fields(name):
    ds = DATASETS[name]
    assert ds.fields, f"{name} declares no fields"
    for where, f in _walk(ds.fields, name):
        assert f.type in TYPES, f"{where}: unknown type {f.type!r}"
    schema = json_schema(ds)
    assert schema["title"] == name and set(schema["properties"]) == {f.name for f in ds.fields}


def test_selected_properties_are_the_declared_ones():
    for ds in DATASETS.values():
        if ds.select:
            declared = {f.name for f in ds.fields}
            assert set(ds.select) <= declared, f"{ds.name}: selected but not declared {set(ds.select) - declared}"
            assert declared - set(ds.select) <= {"id"}, f"{ds.name}: declared but never selected"


def test_report_columns_are_named_and_typed_as_the_parser_writes_them():
    """Each report field is a CSV header run through connector/collect/reports.py's own rules."""
    expected_type = {reports._products: {"array"}, reports._date: {"date"}, reports._text: {"string"},
                     reports._auto: {"integer", "boolean", "string"}}
    for ds in DATASETS.values():
        if ds.strategy != "report":
            continue
        for f in ds.fields:
            header = f.description.split('"')[1]
            assert reports.field_name(header) == f.name, f"{ds.name}: {header!r} -> {reports.field_name(header)}"
            assert f.type in expected_type[reports.converter(header)], f"{ds.name}.{f.name}: {f.type}"


def test_normaliser_nulls_empty_dates_and_nothing_else():
    fields = (
        Field("when", "datetime"), Field("day", "date"), Field("name", "string"), Field("count", "integer"),
        Field("activity", "object", fields=(Field("last", "datetime"), Field("requestId", "string"))),
        Field("plans", "array", items=(Field("assigned", "datetime"), Field("service", "string"))),
        Field("tags", "array", items="string"),
    )
    normalise = compile_normaliser(fields)
    assert normalise is not None
    record = {"when": "", "day": "", "name": "", "count": 0, "extra": "",
              "activity": {"last": "", "requestId": ""},
              "plans": [{"assigned": "", "service": ""}, {"assigned": "2024-01-01T00:00:00Z", "service": "x"}, None],
              "tags": ["", "a"]}
    kept = {"when": "0001-01-01T00:00:00Z", "day": None, "activity": None, "plans": None, "tags": []}
    batch = [record, copy.deepcopy(kept)]
    assert normalise(batch) == 4  # when, day, activity.last, plans[0].assigned
    assert normalise(batch) == 0
    assert batch[0] == {"when": None, "day": None, "name": "", "count": 0, "extra": "",
                        "activity": {"last": None, "requestId": ""},
                        "plans": [{"assigned": None, "service": ""}, {"assigned": "2024-01-01T00:00:00Z",
                                                                      "service": "x"}, None],
                        "tags": ["", "a"]}
    assert batch[1] == kept


def test_datasets_without_dates_cost_nothing():
    assert normaliser_for(DATASETS["group_members"]) is None
    assert normaliser_for(DATASETS["users"]) is not None
    assert compile_normaliser((Field("a", "string"), Field("o", "object", fields=(Field("b", "integer"),)))) is None


def test_writer_applies_the_normaliser_only_where_graph_sent_empty_dates_or_identifiers(tmp_path):
    import asyncio
    import gzip

    import orjson

    from connector.store.contract import JsonlGzWriter
    from connector.store.local import _LocalSink

    ds = DATASETS["user_sign_in_activity"]
    path = tmp_path / ds.file
    writer = JsonlGzWriter(_LocalSink(path), ds.file, normaliser_for(ds))
    graph = [
        {"id": "1", "userPrincipalName": "a@x", "signInActivity": {"lastSignInDateTime": "2024-05-01T08:00:00Z",
                                                                   "lastSuccessfulSignInDateTime": "",
                                                                   "lastSuccessfulSignInRequestId": ""}},
        {"id": "2", "userPrincipalName": "", "signInActivity": None},
    ]

    async def write() -> None:
        await writer.write(copy.deepcopy(graph))
        await writer.write([{"id": "3", "userPrincipalName": "", "signInActivity": None}])  # "" but no date
        await writer.close()

    asyncio.run(write())
    lines = [orjson.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    assert lines[0]["signInActivity"] == {"lastSignInDateTime": "2024-05-01T08:00:00Z",
                                          "lastSuccessfulSignInDateTime": None, "lastSuccessfulSignInRequestId": None}
    assert lines[1] == graph[1] and lines[2]["userPrincipalName"] == ""
