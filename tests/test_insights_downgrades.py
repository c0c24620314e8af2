"""Downgrade candidates (issue 25 point 3): holders of an E3 suite whose usage in the reports' period fits
Microsoft 365 F3, against the users computed from the simulator's own report rows (tests/insights_expected.py);
with concealed report names, one warning and no candidates."""

from __future__ import annotations

import csv
import io

import pytest

from simulator import Simulator, TenantSpec
from tests.conftest import apply_env
from tests.helpers import run
from tests.insights_expected import expected_downgrades
from tests.test_insights import check_schema, files_of, price_sheet

DATASETS = ("organization,subscribed_skus,users,user_sign_in_activity,subscriptions,report_m365_app_user_detail,"
            "report_mailbox_usage_detail,report_onedrive_usage_account_detail")


@pytest.fixture(scope="module")
def sim():
    with Simulator(TenantSpec(seed=33, users=700, report_names_concealed=False)) as s:
        yield s


def test_downgrade_candidates_with_visible_names_and_prices(sim, tmp_path, monkeypatch):
    sim.spec.report_names_concealed = False
    apply_env(monkeypatch, env := sim.env())
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path / "s"), M365_DATASETS=DATASETS,
                          M365_PRICE_SHEET=price_sheet(tmp_path / "p.csv", "SPE_F1,8.00,EUR\n"))
    assert manifest["insights"]["status"] == "succeeded"
    assert not [w for w in manifest["warnings"] if w["code"] in ("price_sheet_unknown_sku",
                                                                 "downgrade_reports_concealed")]
    doc, lines = files_of(store, manifest)
    want = expected_downgrades(sim, manifest["startedAt"])
    assert len(want) >= 5, "the simulator shapes some E3 users like frontline workers"
    e3 = next(s for s in doc["skus"] if s["skuPartNumber"] == "SPE_E3")
    finding = next(f for f in doc["findings"] if f["code"] == "downgrade_candidate")
    assert finding["skuId"] == e3["skuId"] and finding["count"] == len(want) and finding["severity"] == "low"
    assert finding["downgradeTo"] == {"skuPartNumber": "SPE_F1", "skuId": "66b55226-6b4f-492c-910c-a3b7a3c9d993",
                                      "productName": "Microsoft 365 F3", "monthlyPrice": 8.0, "currency": "EUR"}
    assert finding["monthlySaving"] == round(len(want) * (36.00 - 8.00), 2)
    assert finding["yearlySaving"] == round(len(want) * 28.00 * 12, 2) and "Microsoft 365 F3" in finding["message"]
    assert doc["totals"]["monthlySavingByCode"]["downgrade_candidate"] == {"EUR": finding["monthlySaving"]}
    got = {(x["userId"], x["skuId"]): x["evidence"] for x in lines if x["code"] == "downgrade_candidate"}
    assert set(got) == set(want)
    for key, evidence in got.items():
        assert {k: evidence[k] for k in want[key]} == want[key], key
        assert evidence["desktopApps"] is False and evidence["limitBytes"] == 2 * 1024**3
    assert "fits F3" in doc["basis"]["fallbacks"]["downgrades"]
    check_csv(store, manifest, doc, lines)
    check_schema(doc)
    assert "downgrade_candidate" in {f["code"] for f in doc["findings"]}

    # Without prices: the same candidates, no money.
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path / "n"), M365_DATASETS=DATASETS)
    doc, _ = files_of(store, manifest)
    finding = next(f for f in doc["findings"] if f["code"] == "downgrade_candidate")
    assert finding["count"] == len(want) and "monthlySaving" not in finding


def test_concealed_names_give_one_warning_not_one_per_user(sim, tmp_path, monkeypatch):
    manifest, store = run_concealed(sim, monkeypatch, tmp_path / "c", DATASETS)
    warned = [w for w in manifest["warnings"] if w["code"] == "downgrade_reports_concealed"]
    assert len(warned) == 1 and "Display concealed user, group, and site names" in warned[0]["message"]
    assert manifest["insights"]["warnings"] == warned
    doc, lines = files_of(store, manifest)
    assert not [f for f in doc["findings"] if f["code"] == "downgrade_candidate"]
    assert not [x for x in lines if x["code"] == "downgrade_candidate"]
    assert doc["basis"]["fallbacks"]["downgrades"].startswith("not applied: user names are concealed")


def test_the_rule_needs_the_three_reports(sim, tmp_path, monkeypatch):
    apply_env(monkeypatch, env := sim.env())
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path / "m"),
                          M365_DATASETS="organization,subscribed_skus,users,report_m365_app_user_detail")
    doc, _ = files_of(store, manifest)
    assert "report_mailbox_usage_detail" in doc["basis"]["fallbacks"]["downgrades"]
    assert not [w for w in manifest["warnings"] if w["code"] == "downgrade_reports_concealed"]


def check_csv(store, manifest: dict, doc: dict, lines: list[dict]) -> None:
    """licence_findings.csv: one row per line of licence_findings.jsonl.gz, in the admin center's export shape,
    listed and hashed in the manifest (files_of checked the hash) and copied to latest/."""
    prefix = f"tenants/{manifest['tenantId']}/runs/{manifest['runId']}"
    data = store.read_bytes(f"{prefix}/licence_findings.csv")
    assert data.startswith(b"\xef\xbb\xbf") and manifest["insights"]["files"]["licence_findings.csv"]["records"] == \
        len(lines)
    rows = list(csv.DictReader(io.StringIO(data[3:].decode("utf-8"), newline="")))
    assert list(rows[0])[:5] == ["Display name", "User principal name", "Object Id", "Block credential", "Licenses"]
    names = {s["skuId"]: s["productName"] or s["skuPartNumber"] for s in doc["skus"]}
    severity = {(f["code"], f["skuId"]): f["severity"] for f in doc["findings"]}
    assert len(rows) == len(lines)
    for row, line in zip(rows, lines, strict=True):
        assert (row["Object Id"], row["User principal name"], row["Finding"], row["SKU id"]) == (
            line["userId"], line["userPrincipalName"], line["code"], line["skuId"])
        assert row["Block credential"] == str(line["evidence"]["accountEnabled"] is False)
        assert row["Licenses"] == names[line["skuId"]] and row["Severity"] == severity[(line["code"], line["skuId"])]
        assert row["Recommended licence"] == (line["evidence"].get("downgradeTo") or "")
    assert any(r["Recommended licence"] == "SPE_F1" for r in rows)
    latest = store.read_bytes(f"tenants/{manifest['tenantId']}/latest/licence_findings.csv")
    assert latest == data



def run_concealed(sim, monkeypatch, out, datasets: str):
    """A run while the simulated tenant conceals report names (Microsoft's default); visible again after."""
    sim.spec.report_names_concealed = True
    try:
        apply_env(monkeypatch, env := sim.env())
        return run(env, SNAPSHOT_DIR=str(out), M365_DATASETS=datasets)
    finally:
        sim.spec.report_names_concealed = False
