"""Licence insights end to end: a run against the simulated tenant, its insights.json, licence_findings and
manifest entries, compared with figures computed from the tenant's own data (tests/insights_expected.py)."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import jsonschema
import orjson
import pytest

from connector import spool
from connector.config import ConfigError
from connector.insights import names as insights_names
from connector.store.contract import read_json
from connector.store.local import LocalStore
from simulator import Simulator, TenantSpec
from simulator.reference import shipped_product_names
from simulator.tenant import DEFAULT_ROLES
from tests.conftest import apply_env
from tests.helpers import blob_env, run
from tests.insights_expected import expected

ROOT = Path(__file__).resolve().parent.parent
DATASETS = "organization,subscribed_skus,users,user_sign_in_activity,groups,subscriptions"
PRICES = {"SPE_E3": Decimal("36.00"), "ENTERPRISEPREMIUM": Decimal("57.00"), "EMS": Decimal("10.60"),
          "FLOW_FREE": Decimal("0")}
FIGURES = ("assigned", "assignedDisabled", "assignedInactive", "assignedNeverSignedIn", "assignedGuests",
           "directAndGroup", "groupErrors", "enabled", "consumed", "available", "unusedSeats", "wasteSeats")


@pytest.fixture(scope="module")
def sim():
    with Simulator(TenantSpec(seed=31, users=600)) as s:
        yield s


@pytest.fixture
def env(sim, monkeypatch):
    sim.spec.roles, sim.spec.premium, sim.spec.report_names_concealed = DEFAULT_ROLES, True, True
    sim.spec.product_names_csv, sim.spec.product_names_status = None, 200
    values = sim.env()
    apply_env(monkeypatch, values)
    return values


def price_sheet(path: Path, extra: str = "") -> str:
    lines = ["skuPartNumber,monthlyPrice,currency"] + [f"{k},{v},EUR" for k, v in PRICES.items()]
    path.write_text("\n".join(lines) + "\n" + extra)
    return str(path)


def files_of(store, manifest) -> tuple[dict, list[dict]]:
    prefix = f"tenants/{manifest['tenantId']}/runs/{manifest['runId']}"
    entry = manifest["insights"]
    for name, info in entry["files"].items():
        data = store.read_bytes(f"{prefix}/{name}")
        assert data is not None and len(data) == info["bytes"], name
        assert hashlib.sha256(data).hexdigest() == info["sha256"], name
    doc = orjson.loads(store.read_bytes(f"{prefix}/insights.json"))
    lines = [orjson.loads(x) for x in gzip.decompress(store.read_bytes(f"{prefix}/licence_findings.jsonl.gz"))
             .splitlines()]
    assert len(lines) == entry["files"]["licence_findings.jsonl.gz"]["records"]
    return doc, lines


def spill_after(monkeypatch: pytest.MonkeyPatch, memory_keys: int | None) -> list[int]:
    """Make the insights' per-user spools move to disk past `memory_keys` keys; the list grows at each spill."""
    spills: list[int] = []
    if memory_keys:
        monkeypatch.setattr(spool, "MEMORY_KEYS", memory_keys)
        real = spool.KeyValueSpool._spill

        def spill(self: spool.KeyValueSpool) -> None:
            spills.append(1)
            real(self)
        monkeypatch.setattr(spool.KeyValueSpool, "_spill", spill)
    return spills


@pytest.mark.parametrize("memory_keys", [None, 10], ids=["in-memory", "spilled-to-disk"])
def test_insights_equal_the_figures_computed_from_the_tenant(sim, env, tmp_path, monkeypatch, memory_keys):
    spills = spill_after(monkeypatch, memory_keys)  # the look-ups on disk must give the same figures
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path / "s"), M365_DATASETS=DATASETS,
                          M365_PRICE_SHEET=price_sheet(tmp_path / "prices.csv", "NOT_A_SKU,1.00,EUR\n"))
    assert manifest["status"] == "succeeded" and manifest["insights"]["status"] == "succeeded"
    assert set(manifest["insights"]["files"]) == {"insights.json", "licence_findings.jsonl.gz", "report.html",
                                                  "user_licences.jsonl.gz", "licence_findings.csv"}
    warning = [w for w in manifest["warnings"] if w["code"] == "price_sheet_unknown_sku"]
    assert len(warning) == 1 and "NOT_A_SKU" in warning[0]["message"]
    doc, lines = files_of(store, manifest)
    want = expected(sim, manifest["startedAt"], prices=PRICES)

    assert doc["version"] == 1 and doc["basis"]["activitySource"] == "signInActivity"
    assert doc["basis"]["inputs"]["signInActivity"] is True and doc["basis"]["inactiveDays"] == 90
    assert doc["basis"]["inputs"]["priceSheet"]["skus"] == 5
    by_id = {s["skuId"]: s for s in doc["skus"]}
    assert set(by_id) == set(want["skuRecords"])
    for sid, sku in by_id.items():
        assert {k: sku[k] for k in FIGURES} == {k: want["skus"][sid][k] for k in FIGURES}, sku["skuPartNumber"]
        if "monthlyWaste" in want["skus"][sid]:
            assert sku["monthlyWaste"] == want["skus"][sid]["monthlyWaste"], sku["skuPartNumber"]
        else:
            assert sku["monthlyWaste"] is None and sku["monthlyPrice"] is None
    # The demo tenant has what the findings are about.
    e3 = next(s for s in doc["skus"] if s["skuPartNumber"] == "SPE_E3")
    assert e3["productName"] == "Microsoft 365 E3"  # Microsoft's CSV, not the part number
    assert all(e3[k] > 0 for k in ("assignedDisabled", "assignedInactive", "assignedNeverSignedIn", "directAndGroup"))
    assert sum(s["assignedGuests"] for s in doc["skus"]) > 0 and sum(s["groupErrors"] for s in doc["skus"]) > 0
    assert any(s["capabilityStatus"] == "Suspended" and s["assigned"] for s in doc["skus"])

    # Findings: counts, samples and the per-user lines, against the tenant.
    got = {(f["code"], f["skuId"]): f for f in doc["findings"]}
    user_findings = {k: v for k, v in want["findings"].items()}
    assert set(got) == set(user_findings) | set(want["seatFindings"])
    for key, f in got.items():
        members = user_findings.get(key)
        if members is None:
            assert f["count"] == want["seatFindings"][key], key
            continue
        assert f["count"] == len(members) and set(f["sampleUserIds"]) <= members, key
        assert len(f["sampleUserIds"]) == min(20, len(members)) and f["message"] and f["remedy"]
    assert not any("excluded" in x for x in lines) and doc["excluded"] == []
    assert {(x["userId"], x["code"], x["skuId"]) for x in lines} == {
        (uid, code, sid) for (code, sid), members in user_findings.items() for uid in members}
    users = {u["id"]: u for u in want["users"]}
    for line in lines:
        u = users[line["userId"]]
        assert line["userPrincipalName"] == u["userPrincipalName"]
        assert line["evidence"]["accountEnabled"] == u["accountEnabled"]
        path = line["evidence"]["assignment"]
        states = [st for st in u["licenseAssignmentStates"] if st["skuId"] == line["skuId"]]
        assert path == ("direct+group" if len(states) == 2 else "group" if states[0]["assignedByGroup"] else "direct")
        groups = {g["id"]: g["displayName"] for g in sim.inventory.groups()}
        assert [g["displayName"] for g in line["evidence"]["groups"]] == [
            groups[st["assignedByGroup"]] for st in states if st["assignedByGroup"]]
    # Money: the waste findings are priced, and the totals add up per currency.
    assert doc["totals"]["monthlyWaste"] == {"EUR": round(sum(s["monthlyWaste"] or 0 for s in doc["skus"]), 2)}
    top = doc["findings"][0]
    assert top["monthlySaving"] == max(f.get("monthlySaving") or 0 for f in doc["findings"]) > 0
    check_recommendations(doc, lines, want)
    check_schema(doc)  # with overlaps, renewals and free SKUs in it
    assert doc["changes"] is None and "no earlier published run" in doc["basis"]["fallbacks"]["changes"]
    assert [p["runId"] for p in doc["trend"]] == [manifest["runId"]]
    # A run reads back what it published: the users' lines in user_licences match the users file.
    flat = gzip.decompress(store.read_bytes(f"tenants/{manifest['tenantId']}/runs/{manifest['runId']}/"
                                            "user_licences.jsonl.gz")).splitlines()
    assert {orjson.loads(x)["id"]: orjson.loads(x)["skuIds"] for x in flat} == {
        u["id"]: sorted(lic["skuId"] for lic in u["assignedLicenses"]) for u in want["users"]}
    assert bool(spills) == bool(memory_keys)


@pytest.mark.parametrize("memory_keys", [None, 10], ids=["in-memory", "spilled-to-disk"])
def test_changes_since_the_previous_run_and_the_trend(tmp_path, monkeypatch, memory_keys):
    """The same tenant three times: 300 users; 280 users after a round of licence changes; 310 users."""
    spills = spill_after(monkeypatch, memory_keys)
    out = str(tmp_path / "s")
    docs, tenants = [], []
    for users, changes in ((300, 0), (280, 1), (310, 1)):
        with Simulator(TenantSpec(seed=32, users=users, licence_changes=changes)) as sim:
            values = sim.env()
            apply_env(monkeypatch, values)
            manifest, store = run(values, SNAPSHOT_DIR=out, M365_DATASETS="organization,subscribed_skus,users")
            assert manifest["insights"]["status"] == "succeeded"
            docs.append(files_of(store, manifest)[0])
            tenants.append(({u["id"]: {lic["skuId"] for lic in u["assignedLicenses"]} for u in sim.tenant.users()},
                            {s["skuId"]: s for s in sim.tenant.subscribed_skus()}))
    for i in (1, 2):
        (before, skus_before), (after, skus_after) = tenants[i - 1], tenants[i]
        ch = docs[i]["changes"]
        assert ch["previousRunId"] == docs[i - 1]["basis"]["runId"]
        assert ch["usersAdded"] == len(set(after) - set(before)) and ch["usersRemoved"] == len(set(before) - set(after))
        assigned, removed = {}, {}
        for uid in set(before) | set(after):
            for sid in after.get(uid, set()) - before.get(uid, set()):
                assigned[sid] = assigned.get(sid, 0) + 1
            for sid in before.get(uid, set()) - after.get(uid, set()):
                removed[sid] = removed.get(sid, 0) + 1
        rows = {r["skuId"]: r for r in ch["skus"]}
        for sid in set(skus_after) | set(skus_before):
            seats = skus_after[sid]["prepaidUnits"]["enabled"] - skus_before[sid]["prepaidUnits"]["enabled"]
            row = rows.get(sid, {"licencesAssigned": 0, "licencesRemoved": 0, "seatsChange": 0})
            assert (row["licencesAssigned"], row["licencesRemoved"], row["seatsChange"]) == (
                assigned.get(sid, 0), removed.get(sid, 0), seats), sid
        assert ch["licencesAssigned"] == sum(assigned.values()) > 0 and ch["licencesRemoved"] == sum(removed.values())
        assert ch["seatsBought"] - ch["seatsDropped"] == sum(r["seatsChange"] for r in ch["skus"])
    assert ch["usersAdded"] == 30 and docs[1]["changes"]["usersRemoved"] == 20
    assert [p["runId"] for p in docs[2]["trend"]] == [d["basis"]["runId"] for d in docs]
    assert [p["assigned"] for p in docs[2]["trend"]] == [d["totals"]["assigned"] for d in docs]
    # The previous run's assignments (insights) and the previous users' keys (the changes file), in runs 2 and 3.
    assert len(spills) == (4 if memory_keys else 0)


def test_usage_reports_stand_in_for_sign_ins_only_when_names_are_visible(sim, env, tmp_path):
    sim.spec.premium = False  # no Entra ID P1/P2: no sign-in activity
    sim.spec.report_names_concealed = False
    datasets = "organization,subscribed_skus,users,user_sign_in_activity,report_office365_active_user_detail"
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path / "a"), M365_DATASETS=datasets, M365_INACTIVE_DAYS="30")
    assert manifest["datasets"]["user_sign_in_activity"]["status"] == "skipped"
    doc, _ = files_of(store, manifest)
    rows = sim.usage.rows("getOffice365ActiveUserDetail", "D30", concealed=False)
    want = expected(sim, manifest["startedAt"], days=30, source="usageReports", report_rows=rows)
    assert doc["basis"]["activitySource"] == "usageReports" and doc["basis"]["inputs"]["usageReports"] == "visible"
    assert "sign-in activity unavailable" in doc["basis"]["fallbacks"]["assignedInactive"]
    for sku in doc["skus"]:
        assert sku["assignedInactive"] == want["skus"][sku["skuId"]]["assignedInactive"], sku["skuPartNumber"]
        assert sku["assignedNeverSignedIn"] is None  # reports cannot tell "never" from "long ago"
    assert sum(s["assignedInactive"] for s in doc["skus"]) > 0

    sim.spec.report_names_concealed = True
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path / "b"), M365_DATASETS=datasets)
    doc, lines = files_of(store, manifest)
    assert doc["basis"]["activitySource"] is None and doc["basis"]["inputs"]["usageReports"] == "concealed"
    assert doc["basis"]["inputs"]["namesConcealed"] is True
    assert all(s["assignedInactive"] is None and s["assignedNeverSignedIn"] is None for s in doc["skus"])
    assert doc["totals"]["assignedInactive"] is None and "null" in doc["basis"]["fallbacks"]["assignedInactive"]
    assert {x["code"] for x in lines}.isdisjoint({"licence_inactive", "licence_never_used"})
    assert any(x["code"] == "licence_on_disabled_account" for x in lines)


def test_insights_command_recomputes_a_blob_snapshot_without_graph(sim, env, azurite, tmp_path):
    dest = blob_env(azurite)
    manifest, store = run(env, **dest, M365_DATASETS=DATASETS)
    prefix = f"tenants/{manifest['tenantId']}/runs/{manifest['runId']}"
    first = orjson.loads(store.read_bytes(f"{prefix}/insights.json"))
    sim.clear_requests()
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith(("M365_", "SNAPSHOT_"))}
    cli_env.update(dest, M365_PRODUCT_NAMES_URL="none",
                   M365_PRICE_SHEET=price_sheet(tmp_path / "p.csv"))  # priced now: money appears
    proc = subprocess.run([sys.executable, "-m", "connector", "insights", "--run", manifest["runId"]], cwd=ROOT,
                          env=cli_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sim.request_count(service=None) == 0  # no Graph, no token, no download
    assert "Top findings:" in proc.stdout and f"report: {store.url(prefix + '/report.html')}" in proc.stdout
    updated = read_json(store, f"{prefix}/manifest.json")
    doc, _ = files_of(store, updated)
    assert updated["datasets"] == manifest["datasets"] and updated["insights"]["status"] == "succeeded"
    assert doc["basis"]["productNames"]["source"] == "package"
    for a, b in zip(doc["skus"], first["skus"], strict=True):
        assert {k: a[k] for k in FIGURES} == {k: b[k] for k in FIGURES}
    assert first["totals"]["monthlyWaste"] is None and doc["totals"]["monthlyWaste"]["EUR"] > 0

    bad = subprocess.run([sys.executable, "-m", "connector", "insights", "--run", "20990101T000000Z-000000"],
                         cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "never published" in bad.stderr and "Traceback" not in bad.stderr


def test_price_sheet_problems(sim, env, azurite, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("skuPartNumber,monthlyPrice,currency\nSPE_E3,36.00,EUR\nEMS,ten,EUR\nENTERPRISEPREMIUM,5,€\n")
    sim.clear_requests()
    with pytest.raises(ConfigError) as err:
        run(env, SNAPSHOT_DIR=str(tmp_path / "s"), M365_DATASETS=DATASETS, M365_PRICE_SHEET=str(bad))
    text = str(err.value)
    assert "M365_PRICE_SHEET" in text and "line 3" in text and "line 4" in text and "ISO 4217" in text
    assert sim.request_count(service=None) == 0  # refused before any token or Graph request
    proc = subprocess.run([sys.executable, "-m", "connector", "run", "--out", str(tmp_path / "c")], cwd=ROOT,
                          env={**os.environ, "M365_PRICE_SHEET": str(bad)}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "M365_PRICE_SHEET" in proc.stderr and "line 3" in proc.stderr
    # From a blob in the snapshot account (read with the store's credential).
    dest = blob_env(azurite)
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(dest["SNAPSHOT_CONNECTION_STRING"])
    service.create_container("prices")
    service.get_blob_client("prices", "sheet.csv").upload_blob(Path(price_sheet(tmp_path / "p.csv")).read_bytes())
    manifest, _ = run(env, **dest, M365_DATASETS="organization,subscribed_skus,users",
                      M365_PRICE_SHEET=f"{service.url.rstrip('/')}/prices/sheet.csv")
    assert manifest["insights"]["status"] == "succeeded"
    with pytest.raises(ConfigError, match="no such blob"):
        run(env, **dest, M365_DATASETS="organization", M365_PRICE_SHEET=f"{service.url.rstrip('/')}/prices/x.csv")


def test_product_names_are_refreshed_cached_and_fall_back(sim, env, tmp_path):
    url = env["M365_PRODUCT_NAMES_URL"]
    store = LocalStore(tmp_path)
    renamed = shipped_product_names().replace(b"Microsoft 365 E3,SPE_E3", b"Microsoft 365 E3 (renamed),SPE_E3")
    sim.spec.product_names_csv = renamed
    names = insights_names.load(store, url, now=1_800_000_000)
    assert names.basis["source"] == "download" and names.name("05e9a617-0261-4cee-bb44-138d3ef5d965") == \
        "Microsoft 365 E3 (renamed)"
    assert store.read_bytes(insights_names.CACHE_CSV) == renamed
    sim.spec.product_names_status = 503  # the published location is down: the cached copy serves
    names = insights_names.load(store, url, now=1_800_000_000 + 8 * 86400)
    assert names.basis["source"] == "cache" and "renamed" in names.name("05e9a617-0261-4cee-bb44-138d3ef5d965")
    assert "503" in names.basis["lastRefreshFailure"]["reason"]
    count = sim.request_count(service="downloadcenter")
    insights_names.load(store, url, now=1_800_000_000 + 8 * 86400 + 3600)  # no new attempt within a day
    assert sim.request_count(service="downloadcenter") == count
    fresh = insights_names.load(LocalStore(tmp_path / "new"), url)  # nothing cached: the shipped copy
    assert fresh.basis["source"] == "package" and fresh.name("05E9A617-0261-4CEE-BB44-138D3EF5D965") == \
        "Microsoft 365 E3"
    sim.spec.product_names_status, sim.spec.product_names_csv = 200, b"<html>captive portal</html>"
    assert insights_names.load(LocalStore(tmp_path / "x"), url).basis["source"] == "package"
    source = json.loads((ROOT / "connector" / "insights" / "data" / "product-names.source.json").read_text())
    assert hashlib.sha256(shipped_product_names()).hexdigest() == source["sha256"]
    assert len(insights_names.parse(shipped_product_names())) == source["skus"]


def test_demo_prints_the_top_findings_and_the_report(tmp_path):
    out = tmp_path / "demo"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("M365_", "SNAPSHOT_"))}
    proc = subprocess.run([sys.executable, "-m", "connector", "demo", "--users", "250", "--out", str(out)],
                          cwd=ROOT, env=clean, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Top findings:" in proc.stdout and "[high]" in proc.stdout
    report = proc.stdout.split("report: ", 1)[1].split()[0]
    assert Path(report).is_file() and report.endswith("report.html")


def test_domain_filter_counts_the_filtered_users_and_blocks_comparison(sim, env, tmp_path):
    out = str(tmp_path / "s")
    manifest, store = run(env, SNAPSHOT_DIR=out, M365_DATASETS="organization,subscribed_skus,users",
                          M365_DOMAINS="contoso.com")
    doc, _ = files_of(store, manifest)
    kept = [u for u in sim.tenant.users() if u["userPrincipalName"].lower().endswith("@contoso.com")]
    assert 0 < len(kept) < sim.tenant.user_count and doc["totals"]["users"] == len(kept)
    assert doc["basis"]["domainFilter"]["domains"] == ["contoso.com"]
    for sku in doc["skus"]:
        assert sku["assigned"] == sum(any(lic["skuId"] == sku["skuId"] for lic in u["assignedLicenses"]) for u in kept)
        assert sku["consumed"] == next(s["consumedUnits"] for s in sim.tenant.subscribed_skus()
                                       if s["skuId"] == sku["skuId"])  # seats stay organisation-wide
    manifest, store = run(env, SNAPSHOT_DIR=out, M365_DATASETS="organization,subscribed_skus,users")
    doc, _ = files_of(store, manifest)
    assert doc["changes"] is None and "another domain filter" in doc["basis"]["fallbacks"]["changes"]


def test_a_failure_in_the_insights_costs_only_the_insights(sim, env, tmp_path, monkeypatch):
    import connector.insights.derive

    def broken(doc):
        raise RuntimeError("report renderer broke")

    monkeypatch.setattr(connector.insights.derive, "render", broken)
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="organization,subscribed_skus,users")
    assert manifest["status"] == "succeeded"
    assert manifest["insights"]["status"] == "failed" and "report renderer broke" in manifest["insights"]["error"]
    warning = [w for w in manifest["warnings"] if w["code"] == "insights_failed"]
    assert len(warning) == 1 and "python -m connector insights" in warning[0]["message"]
    assert read_json(store, f"tenants/{manifest['tenantId']}/latest.json")["runId"] == manifest["runId"]
    prefix = f"tenants/{manifest['tenantId']}/runs/{manifest['runId']}"
    assert read_json(store, f"{prefix}/insights.json") is None
    assert [n for n in store.list(prefix) if "licen" in n] == []  # no half set of derived files


def test_the_previous_run_is_the_one_published_last_when_runs_share_a_second(tmp_path):
    """Run ids and manifest times have a resolution of one second; two runs may start and finish in the same
    one (quick CLI runs). The one latest.json names was published last, whatever its random id suffix."""
    from connector.insights.derive import find_runs
    from connector.store.contract import write_json

    store, tenant = LocalStore(str(tmp_path)), "00000000-0000-0000-0000-000000000001"
    second = "20261201T235844Z"

    def publish(run_id: str, finished: str) -> None:
        write_json(store, f"tenants/{tenant}/runs/{run_id}/manifest.json",
                   {"tenantId": tenant, "runId": run_id, "status": "succeeded",
                    "startedAt": "2026-12-01T23:58:44Z", "finishedAt": finished})
        write_json(store, f"tenants/{tenant}/latest.json", {"runId": run_id})

    publish(f"{second}-ffffff", "2026-12-01T23:58:44Z")  # the earlier run, with the larger suffix
    publish(f"{second}-000000", "2026-12-01T23:58:44Z")  # published after it
    current = {"tenantId": tenant, "runId": "20261201T235845Z-123456", "startedAt": "2026-12-01T23:58:45Z"}
    assert [r for r, _ in find_runs(store, current, 5)] == [f"{second}-000000", f"{second}-ffffff"]
    write_json(store, f"tenants/{tenant}/latest.json", {"runId": f"{second}-ffffff"})
    assert [r for r, _ in find_runs(store, current, 5)] == [f"{second}-ffffff", f"{second}-000000"]


def check_recommendations(doc: dict, lines: list[dict], want: dict) -> None:
    """Free SKUs, overlaps and renewals of the priced run, against the tenant's own figures."""
    skus = {s["skuPartNumber"]: s for s in doc["skus"]}
    # Free SKUs: the bundled list (Fabric Free, Windows Store) and a price of 0 (FLOW_FREE); not money.
    assert [skus[p]["freeReason"] for p in ("FLOW_FREE", "POWER_BI_STANDARD", "WINDOWS_STORE", "SPE_E3")] == [
        "priceSheet", "list", "list", None]
    assert all(s["free"] == want["skus"][s["skuId"]]["free"] for s in doc["skus"])
    assert doc["totals"]["enabledPaid"] == sum(s["enabled"] for s in doc["skus"] if s["billed"]) > 0
    free = [s for s in doc["skus"] if s["free"]]
    assert doc["totals"]["free"] == {"skus": 3, "enabled": sum(s["enabled"] for s in free),
                                     "assigned": sum(s["assigned"] for s in free)}
    assert skus["POWER_BI_STANDARD"]["assigned"] > 0 and skus["POWER_BI_STANDARD"]["wasteSeats"] == 0
    on_free = [f for f in doc["findings"] if skus[f["skuPartNumber"]]["free"]]
    assert on_free and {f["severity"] for f in on_free} == {"info"}
    assert all(f["severity"] != "info" for f in doc["findings"] if not skus[f["skuPartNumber"]]["free"])
    # Overlaps: Microsoft 365 E3 holds every EMS plan, so EMS beside it is redundant (and costs its price).
    ems = next(f for f in doc["findings"] if f["code"] == "overlapping_licence")
    assert ems["skuPartNumber"] == "EMS" and ems["count"] == len(want["findings"][("overlapping_licence",
                                                                                      ems["skuId"])]) > 0
    assert ems["monthlySaving"] == round(ems["count"] * 10.60, 2) and ems["yearlySaving"] == round(
        ems["count"] * 10.60 * 12, 2)
    overlap_lines = [x for x in lines if x["code"] == "overlapping_licence"]
    assert overlap_lines and all(x["evidence"]["coveredBy"] == ["SPE_E3"] for x in overlap_lines)
    # Renewals: the unused seats of subscriptions renewing within 90 days, with the date to act before.
    renewing = [f for f in doc["findings"] if f["code"] == "renewal_unused_seats"]
    assert renewing, "the seeded tenant renews a subscription with spare seats within 90 days"
    for f in renewing:
        sku = skus[f["skuPartNumber"]]
        assert f["count"] <= sku["unusedSeats"] and f["renewsOn"][:10] in f["remedy"] and f["window"] in (30, 60, 90)
        assert f["monthlySaving"] == round(f["count"] * sku["monthlyPrice"], 2)
    saving = doc["totals"]["monthlySavingByCode"]
    assert saving["overlapping_licence"] == {"EUR": ems["monthlySaving"]}


def test_trials_with_users_that_end_soon(sim):
    """The simulator's trials end months away; moved to 10 days, the rule names the trial with its holders."""
    from connector.insights.advice import renewals
    from connector.insights.analysis import epoch

    subs = sim.inventory.subscriptions()
    start = epoch(subs[0]["createdDateTime"]) + 500 * 86400
    trial = next(s for s in subs if s["isTrial"] and s["status"] == "Warning")
    soon = [dict(s, nextLifecycleDateTime=time_iso(start + 10 * 86400)) if s is trial else s for s in subs]
    skus = {s["skuId"]: {"assigned": 7, "unusedSeats": 0, "billed": False} for s in subs}
    _renew, trials = renewals(soon, skus, start, epoch)
    assert set(trials) == {trial["skuId"]} and trials[trial["skuId"]]["days"] == 10
    skus[trial["skuId"]]["assigned"] = 0  # a trial nobody holds is not a finding
    assert renewals(soon, skus, start, epoch)[1] == {}


def time_iso(ts: int) -> str:
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def test_exclusions_are_reported_not_dropped(sim, env, tmp_path):
    users = [u for u in sim.tenant.users() if u["accountEnabled"] is False and u["assignedLicenses"]]
    upn = users[0]["userPrincipalName"]
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path / "s"), M365_DATASETS=DATASETS,
                          M365_PRICE_SHEET=price_sheet(tmp_path / "prices.csv"),
                          M365_INSIGHTS_EXCLUDE=f"sku:EMS,user:{upn.upper()}")
    doc, lines = files_of(store, manifest)
    skus = {s["skuPartNumber"]: s["skuId"] for s in doc["skus"]}
    want = expected(sim, manifest["startedAt"], prices=PRICES, exclude=({skus["EMS"]}, {users[0]["id"]}))
    got = {(f["code"], f["skuId"]): f["count"] for f in doc["findings"]}
    assert got == {**{k: len(v) for k, v in want["findings"].items()}, **want["seatFindings"]}
    assert {(e["code"], e["skuId"]): e["count"] for e in doc["excluded"]} == dict(want["excluded"])
    assert any(sid == skus["EMS"] for _c, sid in want["excluded"]) and any(
        sid != skus["EMS"] for _c, sid in want["excluded"])
    flagged = {(x["userId"], x["code"], x["skuId"]) for x in lines if x.get("excluded")}
    assert {x["excluded"] for x in lines if x.get("excluded")} == {"sku:EMS", "user"}
    assert len([k for k in flagged if k[2] != skus["EMS"]]) == sum(
        n for (c, sid), n in want["excluded"].items() if sid != skus["EMS"])
    assert doc["basis"]["exclusions"]["skus"] == ["ems"] and doc["basis"]["exclusions"]["users"] == [upn.lower()]
    with pytest.raises(ConfigError, match="M365_INSIGHTS_EXCLUDE"):
        run(env, SNAPSHOT_DIR=str(tmp_path / "x"), M365_DATASETS=DATASETS, M365_INSIGHTS_EXCLUDE="licence:E3")


def check_schema(doc: dict) -> None:
    """docs/schema/insights.schema.json (as `python -m connector docs` wrote it) accepts a real run's insights.json
    and refuses one with an unknown finding code or a finding without its count."""
    schema = json.loads((Path(__file__).resolve().parent.parent / "docs" / "schema" / "insights.schema.json")
                        .read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(doc)
    from connector.insights.analysis import FINDINGS
    assert set(schema["properties"]["findings"]["items"]["properties"]["code"]["enum"]) == set(FINDINGS)
    bad = copy.deepcopy(doc)
    bad["findings"][0]["code"] = "no_such_code"
    del bad["findings"][1]["count"]
    assert len(list(validator.iter_errors(bad))) == 2
