"""The derived files' bytes: the same snapshot gives the same files in any process (string hash seed) and with
the per-user look-ups in memory or on disk; every findings line is exactly orjson's serialisation of its record
in the documented key order, and licence_findings.csv is exactly what the csv module writes from those lines.
(The figures themselves are checked against the simulator's truth in tests/test_insights*.py.)"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from connector.cli.main import main
from connector.insights.analysis import FINDINGS
from connector.insights.derive import DERIVED_FILES
from connector.insights.export import BOM, COLUMNS
from connector.insights.lines import csv_fields
from simulator import Simulator, TenantSpec
from tests.conftest import apply_env
from tests.helpers import run
from tests.test_insights import price_sheet, spill_after

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ("organization,subscribed_skus,users,user_sign_in_activity,subscriptions,groups,report_m365_app_user_detail,"
            "report_mailbox_usage_detail,report_onedrive_usage_account_detail,copilot_usage_user_detail")
LINE_KEYS = ["userId", "userPrincipalName", "displayName", "skuId", "skuPartNumber", "code", "evidence"]
EVIDENCE_KEYS = ["accountEnabled", "userType", "createdDateTime", "lastSuccessfulSignIn", "activitySource",
                 "assignment", "groups"]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """Two runs of a tenant with every kind of finding (visible report names, Copilot seats, prices, exclusions),
    the second one round of licence changes later (so it also compares with the first)."""
    out = tmp_path_factory.mktemp("bytes")
    mp = pytest.MonkeyPatch()
    try:
        for changes in (0, 1):
            with Simulator(TenantSpec(seed=35, users=900, copilot_share=0.3, report_names_concealed=False,
                                      licence_changes=changes)) as sim:
                values = sim.env()
                apply_env(mp, values)
                disabled = next(u for u in sim.tenant.users() if u["accountEnabled"] is False and u["assignedLicenses"])
                extra = {"M365_PRICE_SHEET": price_sheet(out / "prices.csv", "SPE_F1,8.00,EUR\n"),
                         "M365_INSIGHTS_EXCLUDE": f"sku:EMS,user:{disabled['userPrincipalName']}"}
                manifest, _ = run(values, SNAPSHOT_DIR=str(out / "s"), M365_DATASETS=DATASETS, **extra)
                assert manifest["insights"]["status"] == "succeeded"
    finally:
        mp.undo()
    return out / "s", manifest, extra


def hashes(folder: Path, manifest: dict) -> dict[str, str]:
    prefix = folder / "tenants" / manifest["tenantId"] / "runs" / manifest["runId"]
    return {name: hashlib.sha256((prefix / name).read_bytes()).hexdigest() for name in DERIVED_FILES}


def recompute_in_process(folder: Path, manifest: dict, extra: dict, monkeypatch, memory_keys: int | None) -> dict:
    """`python -m connector insights` in this process, its per-user look-ups moved to disk past `memory_keys`."""
    spills = spill_after(monkeypatch, memory_keys)
    for key, value in {**extra, "M365_PRODUCT_NAMES_URL": "none"}.items():
        monkeypatch.setenv(key, value)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["insights", "--out", str(folder), "--run", manifest["runId"], "--json"]) == 0
    assert orjson.loads(out.getvalue())["status"] == "succeeded" and bool(spills) == bool(memory_keys)
    return hashes(folder, manifest)


def recompute_in_subprocess(folder: Path, manifest: dict, extra: dict, seed: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("M365_", "SNAPSHOT_"))}
    env.update(extra, PYTHONHASHSEED=seed, M365_PRODUCT_NAMES_URL="none", PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "connector", "insights", "--out", str(folder), "--run", manifest["runId"],
                    "--json"], cwd=ROOT, env=env, check=True, capture_output=True)
    return hashes(folder, manifest)


def test_the_same_snapshot_gives_the_same_bytes(snapshot, monkeypatch):
    folder, manifest, extra = snapshot
    first = recompute_in_subprocess(folder, manifest, extra, "1")
    assert recompute_in_subprocess(folder, manifest, extra, "2") == first  # set order differs between the two
    assert recompute_in_process(folder, manifest, extra, monkeypatch, None) == first
    assert recompute_in_process(folder, manifest, extra, monkeypatch, 50) == first  # look-ups on disk


def test_lines_are_orjson_of_their_records_and_the_csv_the_csv_module_of_the_lines(snapshot):
    folder, manifest, _ = snapshot
    prefix = folder / "tenants" / manifest["tenantId"] / "runs" / manifest["runId"]
    raw = gzip.decompress((prefix / "licence_findings.jsonl.gz").read_bytes()).splitlines()
    lines = [orjson.loads(x) for x in raw]
    codes = {x["code"] for x in lines}
    assert {"downgrade_candidate", "copilot_unused", "overlapping_licence", "licence_on_guest",
            "group_assignment_error", "direct_and_group_assignment", "licence_never_used"} <= codes
    assert {x.get("excluded") for x in lines} >= {None, "sku:EMS", "user"}
    for data, line in zip(raw, lines, strict=True):
        assert orjson.dumps(line) == data
        assert list(line)[:7] == LINE_KEYS and list(line)[7:] in ([], ["excluded"])
        assert list(line["evidence"])[:7] == EVIDENCE_KEYS

    # The CSV as the csv module writes it from the lines (export.py's columns), byte for byte.
    skus = {s["skuId"]: s for s in orjson.loads((prefix / "insights.json").read_bytes())["skus"]}
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for x in lines:
        ev, sku = x["evidence"], skus[x["skuId"]]
        sev = "info" if sku["free"] else FINDINGS[x["code"]][0]
        writer.writerow((x["displayName"] or "", x["userPrincipalName"] or "", x["userId"] or "",
                         "True" if ev["accountEnabled"] is False else "False",
                         sku["productName"] or x["skuPartNumber"], x["code"], sev, x["skuPartNumber"], x["skuId"],
                         ev.get("downgradeTo") or "", x.get("excluded") or ""))
    assert (prefix / "licence_findings.csv").read_bytes() == BOM + text.getvalue().encode()


@pytest.mark.parametrize("value", ["plain", "", "a,b", 'say "hi"', "two\nlines", "cr\r", "Ǆ 伟 Смирнов", " lead",
                                   "'quote'", "#EXT#@x", "tab\there", 5, 1.5])
def test_csv_fields_quote_as_the_csv_module_does(value):
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerow(("x", value, "y"))
    assert csv_fields(("x", value, "y")) + "\r\n" == text.getvalue()
