"""Copilot seats (issue 25 point 5): the opt-in beta dataset copilot_usage_user_detail (a warning in every run
that collects it, never in the default '*'), and Microsoft 365 Copilot licences without Copilot activity, against
the users computed from the simulator's own tenant (tests/insights_expected.py)."""

from __future__ import annotations

import pytest

from connector.catalog.datasets import DATASETS, DEFAULT_DATASETS
from simulator import Simulator, TenantSpec
from simulator.copilot import rows
from tests.conftest import apply_env
from tests.helpers import read_dataset, run, settings_for
from tests.insights_expected import expected_copilot_unused
from tests.test_insights import check_schema, files_of, price_sheet
from tests.test_insights_downgrades import run_concealed

DATASETS_RUN = "organization,subscribed_skus,users,user_sign_in_activity,subscriptions,copilot_usage_user_detail"


@pytest.fixture(scope="module")
def sim():
    with Simulator(TenantSpec(seed=34, users=600, copilot_share=0.4, report_names_concealed=False)) as s:
        yield s


def test_the_copilot_dataset_is_opt_in(sim, monkeypatch):
    apply_env(monkeypatch, env := sim.env())
    assert DATASETS["copilot_usage_user_detail"].opt_in and DATASETS["copilot_usage_user_detail"].api == "beta"
    assert "copilot_usage_user_detail" not in DEFAULT_DATASETS and len(DEFAULT_DATASETS) == len(DATASETS) - 1
    assert "copilot_usage_user_detail" not in settings_for(env, M365_DATASETS="*").selected_datasets
    assert "copilot_usage_user_detail" in settings_for(env, M365_DATASETS=DATASETS_RUN).selected_datasets


def test_unused_copilot_seats_with_their_money(sim, tmp_path, monkeypatch):
    sim.spec.report_names_concealed = False
    apply_env(monkeypatch, env := sim.env())
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path / "s"), M365_DATASETS=DATASETS_RUN,
                          M365_PRICE_SHEET=price_sheet(tmp_path / "p.csv", "Microsoft_365_Copilot,30.00,EUR\n"))
    entry = manifest["datasets"]["copilot_usage_user_detail"]
    assert entry["status"] == "succeeded" and entry["concealed"] is False
    beta = [w for w in manifest["warnings"] if w["code"] == "beta_endpoint"]
    assert len(beta) == 1 and beta[0]["dataset"] == "copilot_usage_user_detail" and "/beta" in beta[0]["message"]
    got = read_dataset(store, manifest, "copilot_usage_user_detail")
    want_rows = rows(sim.tenant, "D30", False)
    assert len(got) == len(want_rows) > 200  # more than one page
    assert {r["userPrincipalName"] for r in got} == {r["userPrincipalName"] for r in want_rows}
    assert all(r["excelCopilotLastActivityDate"] is None for r, w in zip(got, want_rows, strict=True)
               if w["excelCopilotLastActivityDate"] == "")  # Graph's "" for no activity is written as null

    doc, lines = files_of(store, manifest)
    want = expected_copilot_unused(sim, manifest["startedAt"])
    finding = next(f for f in doc["findings"] if f["code"] == "copilot_unused")
    assert finding["skuPartNumber"] == "Microsoft_365_Copilot" and finding["count"] == len(want) > 0
    assert finding["monthlySaving"] == round(len(want) * 30.0, 2) and finding["yearlySaving"] == round(
        len(want) * 360.0, 2)
    assert {x["userId"] for x in lines if x["code"] == "copilot_unused"} == want
    assert all(x["evidence"]["inCopilotReport"] is True for x in lines if x["code"] == "copilot_unused")
    assert "lastActivityDate" in doc["basis"]["fallbacks"]["copilotSeats"]
    check_schema(doc)


def test_concealed_copilot_report_gives_one_warning(sim, tmp_path, monkeypatch):
    manifest, store = run_concealed(sim, monkeypatch, tmp_path / "c", DATASETS_RUN)
    assert len([w for w in manifest["warnings"] if w["code"] == "copilot_report_concealed"]) == 1
    doc, lines = files_of(store, manifest)
    assert not [f for f in doc["findings"] if f["code"] == "copilot_unused"]
    assert doc["basis"]["fallbacks"]["copilotSeats"].startswith("not applied: user names are concealed")
