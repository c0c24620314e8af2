"""Snapshots read the way downstream users read them: DuckDB with its defaults, pandas, JSON Schema.

DuckDB's `read_json` infers each column's type from a sample of the first 20,480 records; a value
after the sample that does not fit (Graph's `""` for an unset date-time in a column it typed
TIMESTAMP, or for an unset request id in a column it typed UUID) fails the whole read. So the large
snapshot here (25,000 users) has more records than the sample in its biggest datasets, and every
dataset is read back in its natural order, reversed, shuffled, and shuffled with the records whose
dates or identifiers are unset moved behind the sample: the worst place for them.
"""

from __future__ import annotations

import gzip
import random
import re
from pathlib import Path
from typing import Any

import duckdb  # requirements-dev.txt (with pandas and jsonschema); scripts/test installs them
import jsonschema
import orjson
import pandas as pd
import pytest

from connector.catalog.datasets import DATASETS
from connector.catalog.schema import DATES, EMPTY_IS_NULL
from connector.catalog.shapes import Field
from connector.cli.docgen import ROOT
from simulator import Simulator, TenantSpec
from tests.conftest import apply_env
from tests.helpers import read_dataset, run

DUCKDB_SAMPLE = 20480  # read_json's default sample_size
# Datasets that exceed the sample in the large tenant (users and sign-ins: one record per user;
# memberships: more than one per user). The others come from a smaller tenant with every dataset.
LARGE = ("users", "user_sign_in_activity", "group_members")
LARGE_USERS = 25_000


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory, monkeypatch_module) -> dict[str, list[dict[str, Any]]]:
    """Records of every dataset as written by the connector (the large ones from a large tenant)."""
    out: dict[str, list[dict[str, Any]]] = {}
    # Every dataset, the opt-in ones too (named: '*' leaves them out), with Copilot seats for the Copilot report.
    for users, datasets, copilot in ((LARGE_USERS, ",".join(LARGE), 0.0), (1200, ",".join(DATASETS), 0.3)):
        with Simulator(TenantSpec(seed=21, users=users, copilot_share=copilot)) as sim:
            env = sim.env(secret_in="env")
            apply_env(monkeypatch_module, env)
            manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path_factory.mktemp("snap")), M365_DATASETS=datasets)
            assert manifest["status"] == "succeeded", manifest["warnings"]
            for name in manifest["datasets"]:
                out.setdefault(name, read_dataset(store, manifest, name))
            if users == LARGE_USERS:
                served = [u["signInActivity"] for u in sim.tenant.users() if u["signInActivity"]]
                out["_served_empty_dates"] = [s for s in served if s["lastSuccessfulSignInDateTime"] == ""]
                out["_served_empty_ids"] = [s for s in served if s["lastSuccessfulSignInRequestId"] == ""]
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


# -- what the declarations say about a record --------------------------------------------------------------------

def date_paths(fields: tuple[Field, ...], prefix: tuple[str, ...] = (), types: frozenset[str] = DATES
               ) -> list[tuple[tuple[str, ...], str, bool]]:
    """(path, type, inside a list) of every declared date (or other `types`); lists of objects are one level
    deep here."""
    out = []
    for f in fields:
        if f.type in types:
            out.append(((*prefix, f.name), f.type, False))
        elif f.type == "object":
            out.extend(date_paths(f.fields, (*prefix, f.name), types))
        elif f.type == "array" and isinstance(f.items, tuple):
            out.extend((path, t, True) for path, t, _ in date_paths(f.items, (*prefix, f.name), types))
    return out


def values_at(record: dict[str, Any], path: tuple[str, ...]) -> list[Any]:
    nodes: list[Any] = [record]
    for key in path:
        nxt: list[Any] = []
        for node in nodes:
            if isinstance(node, dict):
                value = node.get(key)
                nxt.extend(value if isinstance(value, list) and key != path[-1] else [value])
        nodes = nxt
    return nodes


def unset_dates(record: dict[str, Any], paths) -> int:
    return sum(1 for path, _, _ in paths for v in values_at(record, path) if v in (None, ""))


def worst_order(records: list[dict[str, Any]], paths, seed: int) -> list[dict[str, Any]]:
    """Shuffled, then records with unset dates or identifiers behind the ones without (stable): the sample
    sees values only, and the unset ones come after it."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    return sorted(shuffled, key=lambda r: unset_dates(r, paths) > 0)


ORDERS = ("natural", "reversed", "shuffled", "worst")


def in_order(records: list[dict[str, Any]], order: str, paths, seed: int) -> list[dict[str, Any]]:
    """The records as a consumer may meet them: as written, reversed, shuffled, or worst_order."""
    if order == "natural":
        return list(records)
    if order == "reversed":
        return records[::-1]
    if order == "shuffled":
        shuffled = list(records)
        random.Random(seed).shuffle(shuffled)
        return shuffled
    return worst_order(records, paths, seed)


def write_jsonl_gz(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_bytes(gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in records), 1))
    return path


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- DuckDB ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", list(DATASETS))
def test_duckdb_defaults_read_every_dataset_in_any_order(name, order, snapshots, tmp_path):
    records = snapshots[name]
    ds = DATASETS[name]
    paths = date_paths(ds.fields)
    unset_paths = date_paths(ds.fields, types=EMPTY_IS_NULL)
    if name in LARGE:
        assert len(records) > DUCKDB_SAMPLE, f"{name}: the large tenant must exceed DuckDB's sample"
    ordered = in_order(records, order, unset_paths, seed=len(records))
    if name in LARGE and unset_paths and order == "worst":
        assert unset_dates(ordered[-1], unset_paths) > 0 or all(unset_dates(r, unset_paths) == 0 for r in records)
    path = write_jsonl_gz(tmp_path / ds.file, ordered)
    con = duckdb.connect()
    for reader in ("read_json_auto", "read_json"):
        con.execute(f"CREATE OR REPLACE TABLE t AS SELECT * FROM {reader}('{path}')")  # the read under test
        source = "t"
        assert con.sql(f"SELECT count(*) FROM {source}").fetchall() == [(len(records),)], reader
        types = {row[0]: row[1] for row in con.sql(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        # No value is lost: every top-level column has as many non-null values as the file.
        for column in types:
            want = sum(1 for r in records if r.get(column) is not None)
            got = con.sql(f"SELECT count({_quote(column)}) FROM {source}").fetchall()[0][0]
            assert got == want, f"{name}.{column}: {got} non-null values read, {want} in the file ({reader})"
        # Dates are typed as dates whatever the order, and none is dropped.
        for date_path, kind, in_list in paths:
            present = sum(1 for r in records for v in values_at(r, date_path) if v is not None)
            if not present:
                continue
            want_type = "TIMESTAMP WITH TIME ZONE" if kind == "datetime" else "DATE"
            column_type = types[date_path[0]]
            if len(date_path) == 1:
                assert column_type == want_type, f"{name}.{date_path[0]} is {column_type}"
                continue
            assert re.search(rf"\b{re.escape(date_path[-1])} {want_type}\b", column_type), \
                f"{name}.{'.'.join(date_path)}: {column_type}"
            if in_list:
                expr = (f"sum(len(list_filter({_quote(date_path[0])}, lambda x: x.{_quote(date_path[1])} "
                        "IS NOT NULL)))")
            else:
                expr = f"count({'.'.join(map(_quote, date_path))})"
            got = con.sql(f"SELECT {expr} FROM {source}").fetchall()[0][0]
            assert got == present, f"{name}.{'.'.join(date_path)}: {got} read, {present} in the file"


def test_graph_empty_dates_would_break_duckdb_without_the_normalisation(snapshots, tmp_path):
    """The check above can fail: Graph's form of the same sign-ins, in the same order, does not read."""
    served = snapshots["_served_empty_dates"]
    assert served, "the simulator should serve some unset dates as \"\" (Graph's doc samples do)"
    records = snapshots["user_sign_in_activity"]
    assert all(r["signInActivity"] is None or r["signInActivity"]["lastSuccessfulSignInDateTime"] != ""
               for r in records), "the snapshot must hold null where Graph sent \"\""
    paths = date_paths(DATASETS["user_sign_in_activity"].fields)
    ordered = worst_order(records, paths, seed=1)
    tail = [dict(r) for r in ordered[DUCKDB_SAMPLE:] if r["signInActivity"]]
    assert tail, "some sign-ins must fall after the sample"
    raw = ordered[:DUCKDB_SAMPLE] + [{**r, "signInActivity": {**r["signInActivity"],
                                                              "lastSuccessfulSignInDateTime": ""}} for r in tail]
    path = write_jsonl_gz(tmp_path / "graph-form.jsonl.gz", raw)
    with pytest.raises(duckdb.Error, match="timestamp"):
        duckdb.connect().sql(f"SELECT * FROM read_json_auto('{path}')").fetchall()


def test_graph_empty_request_ids_would_break_duckdb_without_the_normalisation(snapshots, tmp_path):
    """Graph's samples give an unset sign-in's request id as "" too: DuckDB types the column UUID from the
    sample, and a later "" fails the read ("Could not convert string '' to UUID") unless written as null."""
    assert snapshots["_served_empty_ids"], "the simulator should serve some unset request ids as \"\""
    records = snapshots["user_sign_in_activity"]
    assert all(r["signInActivity"] is None or r["signInActivity"]["lastSuccessfulSignInRequestId"] != ""
               for r in records), "the snapshot must hold null where Graph sent \"\""
    with_id = [r for r in records if (r["signInActivity"] or {}).get("lastSuccessfulSignInRequestId")]
    assert len(with_id) > DUCKDB_SAMPLE
    late = {**with_id[-1], "signInActivity": {**with_id[-1]["signInActivity"], "lastSuccessfulSignInRequestId": ""}}
    path = write_jsonl_gz(tmp_path / "graph-form.jsonl.gz", with_id[:-1] + [late])
    with pytest.raises(duckdb.Error, match="UUID"):
        duckdb.connect().sql(f"SELECT * FROM read_json('{path}')").fetchall()


# -- the published JSON Schema -----------------------------------------------------------------------------------

_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?(Z|[+-]\d{2}:\d{2})$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def undeclared_keys(value: Any, fields: tuple[Field, ...], where: str) -> set[str]:
    """Keys of a record (and its nested objects) that the declaration does not name."""
    if not isinstance(value, dict):
        return set()
    by_name = {f.name: f for f in fields}
    out = {f"{where}{k}" for k in value if k not in by_name}
    for k, v in value.items():
        f = by_name.get(k)
        if f is None or v is None:
            continue
        if f.type == "object":
            out |= undeclared_keys(v, f.fields, f"{where}{k}.")
        elif f.type == "array" and isinstance(f.items, tuple):
            for item in v:
                out |= undeclared_keys(item, f.items, f"{where}{k}[].")
    return out


@pytest.mark.parametrize("name", list(DATASETS))
def test_records_match_the_published_schema(name, snapshots):
    schema = orjson.loads((ROOT / "docs" / "schema" / f"{name}.schema.json").read_bytes())
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("date-time")(lambda v: not isinstance(v, str) or bool(_ISO_DATETIME.match(v)))
    checker.checks("date")(lambda v: not isinstance(v, str) or bool(_ISO_DATE.match(v)))
    checker.checks("uuid")(lambda v: not isinstance(v, str) or bool(_UUID.match(v)))
    validator = jsonschema.Draft202012Validator(schema, format_checker=checker)
    records = snapshots[name]
    assert records, f"the simulated tenant should have {name} records"
    fields = DATASETS[name].fields
    undeclared = set().union(*(undeclared_keys(r, fields, "") for r in records))
    assert not undeclared, f"{name}: properties in the snapshot that its declaration lacks: {sorted(undeclared)}"
    sample = random.Random(7).sample(records, min(len(records), 1500))  # jsonschema is slow; the keys above are all
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for r in sample for e in validator.iter_errors(r)]
    assert not errors, f"{name}: {errors[:5]}"


# -- the documented recipes --------------------------------------------------------------------------------------

def _doc() -> str:
    return (ROOT / "docs" / "snapshot-format.md").read_text()


def pandas_recipe() -> dict[str, Any]:
    block = re.search(r"<!-- recipe:pandas -->\n```python\n(.*?)```\n<!-- end recipe -->", _doc(), re.S)
    assert block, "docs/snapshot-format.md lost its pandas recipe"
    code = "\n".join(line for line in block.group(1).splitlines() if not line.startswith("users = read_dataset("))
    namespace: dict[str, Any] = {}
    exec(compile(code, "snapshot-format.md (pandas recipe)", "exec"), namespace)  # the documented code, as is
    return namespace


@pytest.mark.parametrize("name", ["users", "user_sign_in_activity", "managed_devices", "report_mailbox_usage_detail",
                                  "role_assignments", "subscribed_skus", "report_teams_user_activity_user_detail"])
def test_pandas_recipe_gives_timestamps_nullable_integers_and_flat_columns(name, snapshots, tmp_path):
    read_dataset = pandas_recipe()["read_dataset"]
    records = snapshots[name]
    file = write_jsonl_gz(tmp_path / DATASETS[name].file, records)
    df = read_dataset(str(file), str(ROOT / "docs" / "schema" / f"{name}.schema.json"))
    assert len(df) == len(records)

    def leaves(fields: tuple[Field, ...], prefix: tuple[str, ...] = ()):
        for f in fields:
            if f.type == "object":
                yield from leaves(f.fields, (*prefix, f.name))
            else:
                yield (*prefix, f.name), f

    def flat(record: dict[str, Any], path: tuple[str, ...]) -> Any:
        value: Any = record
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    checked = set()
    for path, f in leaves(DATASETS[name].fields):
        column = ".".join(path)
        values = [flat(r, path) for r in records]
        present = sum(v is not None for v in values)
        if column not in df.columns:
            assert present == 0, f"{name}: {column} has values but no column"
            continue
        assert int(df[column].notna().sum()) == present, f"{name}.{column}: values lost"
        want = {"datetime": "datetime64[us, UTC]", "date": "datetime64[s]", "integer": "Int64",
                "boolean": "boolean"}.get(f.type)
        if want:
            assert str(df[column].dtype) == want, f"{name}.{column}: {df[column].dtype}"
            checked.add(f.type)
        if f.type == "datetime" and present:
            first = next(v for v in values if v is not None)
            got = df[column][values.index(first)]
            assert got == pd.Timestamp(first.replace("Z", "+00:00")).as_unit("us") or len(first) > 27, column
    assert checked, f"{name}: no typed column was checked"
    if name == "user_sign_in_activity":
        assert "signInActivity.lastSuccessfulSignInDateTime" in df.columns and "signInActivity" not in df.columns


def test_documented_duckdb_query_runs(snapshots, tmp_path):
    block = re.search(r"```sql\n(SELECT userPrincipalName, signInActivity.*?)```", _doc(), re.S)
    assert block, "docs/snapshot-format.md lost its DuckDB example"
    path = write_jsonl_gz(tmp_path / "user_sign_in_activity.jsonl.gz", snapshots["user_sign_in_activity"])
    sql = re.sub(r"'tenants/[^']*'", f"'{path}'", block.group(1))
    rows = duckdb.connect().sql(sql).fetchall()
    assert 0 < len(rows) < len(snapshots["user_sign_in_activity"])
