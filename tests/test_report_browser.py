"""report.html in a real browser: Debian's Chromium, headless, network blocked, driven by playwright-core
(both installed by scripts/bootstrap --browser, as scripts/test does). The numbers the page shows must be
those of insights.json, the charts must be drawn to scale, and the page must request nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from simulator import Simulator, TenantSpec
from tests.conftest import apply_env
from tests.helpers import run

ROOT = Path(__file__).resolve().parent.parent
PLAYWRIGHT = ROOT / ".tools" / "node_modules" / "playwright-core"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PRICES = {"SPE_E3": Decimal("36.00"), "ENTERPRISEPREMIUM": Decimal("57.00"), "EMS": Decimal("10.60")}


def _number(text: str | None) -> int | None:
    return None if text in (None, "n/a") else int(text.replace(",", ""))


def _money(text: str) -> dict[str, float] | None:
    if text in ("n/a", ""):
        return None
    out = {}
    for part in text.split(" + "):
        amount, currency = part.rsplit(" ", 1)
        out[currency] = float(amount.replace(",", ""))
    return out


def read_page(report: Path) -> dict:
    if not (shutil.which("node") and PLAYWRIGHT.is_dir() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail("the browser test needs node, playwright-core in .tools and Debian's chromium: run "
                    "scripts/test (or scripts/bootstrap --browser), which installs them")
    with tempfile.TemporaryDirectory(prefix="m365-chromium-") as profile:  # a fresh user-data-dir every time
        proc = subprocess.run(["node", str(ROOT / "tests" / "browser" / "read_report.mjs"), str(report), profile,
                               str(PLAYWRIGHT)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """Two runs of one tenant (a trend of two points, changes), priced."""
    out = tmp_path_factory.mktemp("snap")
    sheet = out / "prices.csv"
    sheet.write_text("skuPartNumber,monthlyPrice,currency\n" + "".join(f"{k},{v},EUR\n" for k, v in PRICES.items()))
    mp = pytest.MonkeyPatch()
    try:
        for changes in (0, 1):
            with Simulator(TenantSpec(seed=51, users=400, licence_changes=changes)) as sim:
                env = sim.env()
                apply_env(mp, env)
                manifest, store = run(env, SNAPSHOT_DIR=str(out / "s"), M365_PRICE_SHEET=str(sheet),
                                      M365_DATASETS="organization,subscribed_skus,users,user_sign_in_activity,groups,"
                                                    "subscriptions")
    finally:
        mp.undo()
    prefix = out / "s" / "tenants" / manifest["tenantId"] / "runs" / manifest["runId"]
    return prefix / "report.html", orjson.loads((prefix / "insights.json").read_bytes())


def test_report_shows_the_numbers_of_insights_json_and_loads_nothing(snapshot):
    report, doc = snapshot
    page = read_page(report)
    # Nothing but the file itself was requested, and the page ran without errors.
    assert page["requests"] == [page["target"]], page["requests"]
    assert page["errors"] == []
    assert page["runId"] == doc["basis"]["runId"] and int(page["inactiveDays"]) == doc["basis"]["inactiveDays"]

    t = doc["totals"]
    for key in ("enabledPaid", "assigned", "unusedSeats", "wasteSeats", "findings"):
        assert _number(page["totals"][key]) == t[key], key
    assert _money(page["totals"]["monthlyWaste"]) == t["monthlyWaste"] and t["monthlyWaste"]["EUR"] > 0
    for key in ("usersAdded", "usersRemoved", "licencesAssigned", "licencesRemoved", "seatsBought", "seatsDropped"):
        assert _number(page["changes"][key]) == doc["changes"][key], key

    skus = {s["skuId"]: s for s in doc["skus"]}
    assert {c["sku"] for c in page["skuCells"]} == set(skus)
    for cell in page["skuCells"]:
        assert _number(cell["text"]) == skus[cell["sku"]][cell["field"]], cell

    assert [(f["code"], f["sku"]) for f in page["findings"]] == [(f["code"], f["skuId"]) for f in doc["findings"]]
    for shown, f in zip(page["findings"], doc["findings"], strict=True):
        assert _number(shown["count"]) == f["count"]
        assert _money(shown["monthlySaving"]) == ({f["currency"]: f["monthlySaving"]} if "monthlySaving" in f else None)
    # Recommendations: every finding with money, by saving (month and year), and again by product.
    priced = sorted((f for f in doc["findings"] if f.get("monthlySaving")), key=lambda f: -f["monthlySaving"])
    assert [(r["code"], r["sku"]) for r in page["recommendations"]] == [(f["code"], f["skuId"]) for f in priced]
    assert {f["code"] for f in priced} >= {"overlapping_licence", "licence_inactive"}
    for shown, f in zip(page["recommendations"], priced, strict=True):
        assert _money(shown["monthlySaving"]) == {f["currency"]: f["monthlySaving"]}
        assert _money(shown["yearlySaving"]) == {f["currency"]: f["yearlySaving"]} and f["yearlySaving"] == round(
            f["monthlySaving"] * 12, 2)
    assert sorted((r["code"], r["sku"]) for r in page["bySku"]) == sorted((f["code"], f["skuId"]) for f in priced)
    free = doc["totals"]["free"]
    assert _number(page["totals"]["freeEnabled"]) == free["enabled"] > 0 and t["enabledPaid"] < t["enabled"]

    # Seats chart: each SKU's bar segments are its users by activity and its unused seats, drawn to one scale.
    seats = [b for b in page["bars"] if b["chart"] == "seats"]
    for b in seats:
        s = skus[b["sku"]]
        by = s["assignedByActivity"]
        want = {"active": by["active"] + by["new"], "inactive": by["inactive"] + by["neverSignedIn"],
                "disabled": by["disabled"], "unknown": by["unknown"], "unused": s["unusedSeats"]}[b["series"]]
        assert b["value"] == want, b
    drawn = [b for b in seats if b["value"]]
    scale = drawn[0]["width"] / drawn[0]["value"]
    assert scale > 0 and all(abs(b["width"] - b["value"] * scale) < 1.0 for b in drawn)
    assert {b["sku"] for b in seats} == {s["skuId"] for s in doc["skus"] if s["assigned"] + s["unusedSeats"]}

    # Waste chart: bars and labels carry each SKU's wasted seats and money.
    waste = {b["sku"]: b for b in page["bars"] if b["chart"] == "waste"}
    assert set(waste) == {sid for sid, s in skus.items() if s["wasteSeats"]}
    for sid, b in waste.items():
        assert b["value"] == skus[sid]["wasteSeats"] and b["width"] > 0
    for label in page["wasteLabels"]:
        value = label["text"].replace(",", "")
        assert float(value) == skus[label["sku"]][label["field"]], label
    assert any(label["field"] == "monthlyWaste" for label in page["wasteLabels"])

    # Trend: one point per run for each series, from the runs' insights.json, higher values drawn higher.
    assert len(doc["trend"]) == 2
    for series in ("assigned", "wasteSeats"):
        points = [p for p in page["trend"] if p["series"] == series]
        assert [(p["run"], p["value"]) for p in points] == [(x["runId"], x[series]) for x in doc["trend"]]
    marks = sorted(page["trend"], key=lambda p: p["value"])
    assert marks[0]["y"] >= marks[-1]["y"]
    assert all(box["width"] > 300 and box["height"] > 50 for box in page["charts"].values())
