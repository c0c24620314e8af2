"""Licence insights: what is paid for, unused, wasted and changed, derived from one run's snapshot files.

One code path for the engine (after every data file is committed, before the manifest) and for
`python -m connector insights` over an old snapshot: read the committed files back from the store, stream
the users once, write `licence_findings.jsonl.gz`, `insights.json` and `report.html` beside them, and
return the manifest's `insights` entry (files with bytes and sha256). Graph is never called.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

import orjson

from connector import __version__
from connector.insights.advice import (
    COPILOT_REPORT,
    DOWNGRADE_REPORTS,
    DOWNGRADES,
    Exclusions,
    Overlaps,
    copilot_activity,
    downgrade_fits,
    free_skus,
    renewals,
)
from connector.insights.analysis import (
    DISABLED,
    FINDINGS,
    INACTIVE,
    NEVER_SIGNED_IN,
    SEVERITY_ORDER,
    Activity,
    Changes,
    Finding,
    SkuTally,
    Tally,
    count_users,
    epoch,
    previous_assignments,
    report_activity,
    sign_in_activity,
)
from connector.insights.export import FindingsCsv
from connector.insights.names import ProductNames
from connector.insights.names import load as load_names
from connector.insights.prices import PriceSheet
from connector.insights.read import GzLines, put, records
from connector.insights.report import render
from connector.insights.text import basis, describe
from connector.store.contract import Store, read_json

log = logging.getLogger("m365_connector")

INSIGHTS_VERSION = 1
INSIGHTS_FILE, FINDINGS_FILE, REPORT_FILE = "insights.json", "licence_findings.jsonl.gz", "report.html"
USER_LICENCES_FILE = "user_licences.jsonl.gz"  # id and SKU ids per user: the next run's changes compare with it
CSV_FILE = "licence_findings.csv"  # the findings in the admin center's CSV shape (export.py)
DERIVED_FILES = (INSIGHTS_FILE, FINDINGS_FILE, REPORT_FILE, USER_LICENCES_FILE, CSV_FILE)
TREND_RUNS = 12  # runs on the report's trend chart, this one included
PUBLISHED = ("succeeded", "partial")
ACTIVITY_REPORT = "report_office365_active_user_detail"
BILLED = ("Enabled", "Warning")  # capabilityStatus of SKUs whose seats are paid for


def run_prefix(tenant_id: str, run_id: str) -> str:
    return f"tenants/{tenant_id}/runs/{run_id}"


def _usable(entry: dict[str, Any] | None) -> bool:
    return bool(entry and entry.get("status") == "succeeded" and entry.get("file"))


def _money(value: Any) -> float:
    return float(round(value, 2))


# -- inputs ---------------------------------------------------------------------------------------------

def _activity(store: Store, prefix: str, datasets: dict[str, Any]) -> tuple[Activity, dict[str, Any]]:
    """Sign-in activity when collected; else the usage report when its names are visible; else nothing."""
    sia, report = datasets.get("user_sign_in_activity"), datasets.get(ACTIVITY_REPORT)
    why_not = ("not selected" if sia is None else
               f"{sia.get('status')}: " + "; ".join(w.get("message", "") for w in sia.get("warnings") or [])[:300])
    if _usable(sia):
        return sign_in_activity(store, f"{prefix}/{sia['file']}", sia.get("records")), {"signInActivity": True}
    facts: dict[str, Any] = {"signInActivity": False, "signInActivityUnavailable": why_not.rstrip(": ")}
    if _usable(report) and report.get("concealed") is False:
        act = report_activity(store, f"{prefix}/{report['file']}", report.get("records"))
        return act, {**facts, "usageReports": "visible"}
    facts["usageReports"] = ("concealed" if _usable(report) and report.get("concealed") else
                             "empty" if _usable(report) else "absent")
    return Activity(None), facts


CONCEALED_FIX = ("turn off \"Display concealed user, group, and site names in all reports\" (Microsoft 365 admin "
                 "center, Settings, Org settings, Services, Reports) and collect again")


Downgrade = tuple[dict[str, dict[str, Any]] | None, str, list[dict[str, str]]]  # fits, basis note, warnings
# subscriptions by SKU, subscription records, exclusions, downgrade inputs, Copilot inputs
Copilot = tuple[dict[str, str | None] | None, str, list[dict[str, str]]]  # activity by user, basis note, warnings
Advice = tuple[dict[str, dict[str, Any]], list[dict[str, Any]], Exclusions, Downgrade, Copilot]


def _downgrade_inputs(store: Store, prefix: str, datasets: dict[str, Any]) -> Downgrade:
    """The users whose usage fits a cheaper plan (advice.downgrade_fits), what the rule rests on, and the
    run's one warning when the reports conceal names (they cannot be joined to users then)."""
    entries = [datasets.get(n) for n in DOWNGRADE_REPORTS]
    missing = [n for n, e in zip(DOWNGRADE_REPORTS, entries, strict=True) if not _usable(e)]
    if missing:
        return None, f"not applied: the run lacks the usage report(s) {', '.join(missing)} (M365_DATASETS)", []
    concealed = [n for n, e in zip(DOWNGRADE_REPORTS, entries, strict=True) if e.get("concealed") is not False]
    if concealed:
        note = (f"not applied: user names are concealed in {', '.join(concealed)}, so usage cannot be joined to "
                f"users; {CONCEALED_FIX}")
        return None, note, [{"code": "downgrade_reports_concealed",
                             "message": "Downgrade candidates (licences a cheaper plan would do for) were not "
                                        "computed: the usage reports conceal user names. To get them, "
                                        f"{CONCEALED_FIX}."}]
    fits = downgrade_fits(*(records(store, f"{prefix}/{e['file']}") for e in entries))
    return fits, ("holders of Microsoft 365 E3 or Office 365 E3 whose usage in the reports' period fits F3: no "
                  "desktop Office, mailbox (no archive) and OneDrive at most 2 GB (docs/insights.md)"), []


def _copilot_inputs(store: Store, prefix: str, datasets: dict[str, Any]) -> Copilot:
    """Copilot activity per user from the opt-in Copilot usage report, what the rule rests on, and the run's one
    warning when the report conceals names."""
    entry = datasets.get(COPILOT_REPORT)
    if not _usable(entry):
        return None, (f"not applied: the run did not collect {COPILOT_REPORT} (opt-in, Graph beta: add it to "
                      "M365_DATASETS)"), []
    if entry.get("concealed") is not False:
        note = f"not applied: user names are concealed in {COPILOT_REPORT}; {CONCEALED_FIX}"
        return None, note, [{"code": "copilot_report_concealed",
                             "message": "Unused Copilot seats were not computed: the Copilot usage report conceals "
                                        f"user names. To get them, {CONCEALED_FIX}."}]
    return copilot_activity(records(store, f"{prefix}/{entry['file']}")), (
        f"Microsoft 365 Copilot holders without a lastActivityDate in {COPILOT_REPORT} (period "
        f"{entry.get('period') or 'of the run'}), joined on userPrincipalName"), []


def find_runs(store: Store, current: dict[str, Any], limit: int) -> list[tuple[str, dict[str, Any]]]:
    """Published runs of the tenant that finished before the `current` run started, newest first:
    (run id, manifest). Run ids sort by their start second only, so the manifests' times decide; runs that
    finished within the same second are ordered by latest.json, which names the one published last (the
    current run moves it only after its insights)."""
    tenant_id, started = current["tenantId"], current["startedAt"]
    pointer = read_json(store, f"tenants/{tenant_id}/latest.json")
    latest = pointer.get("runId") if isinstance(pointer, dict) else None
    second = current["runId"][:16]
    names = store.list(f"tenants/{tenant_id}/runs/")
    run_ids = sorted({n.split("/")[3] for n in names if n.endswith("/manifest.json") and n.count("/") == 4},
                     reverse=True)
    found = []
    for run_id in run_ids:
        if run_id == current["runId"] or run_id[:16] > second:
            continue
        manifest = read_json(store, f"{run_prefix(tenant_id, run_id)}/manifest.json")
        if manifest and manifest.get("status") in PUBLISHED and (manifest.get("finishedAt") or "") <= started:
            found.append((run_id, manifest))
            if len(found) > limit and found[-1][0][:16] < found[limit - 1][0][:16]:
                break  # enough, and no later run can share a start second with the ones kept
    found.sort(key=lambda r: (r[1].get("finishedAt") or "", r[0] == latest, r[0]), reverse=True)
    return found[:limit]


def _changes(store: Store, manifest: dict[str, Any], previous: tuple[str, dict[str, Any]] | None
             ) -> tuple[Changes | None, dict[str, Any] | None, str | None]:
    """The previous run's assignments when comparable, its SKUs, and why not otherwise."""
    if previous is None:
        return None, None, "no earlier published run of this tenant in the store"
    run_id, prev = previous
    users, skus = prev["datasets"].get("users"), prev["datasets"].get("subscribed_skus")
    if not (_usable(users) and _usable(skus)):
        return None, None, f"the previous run {run_id} has no complete users and subscribed_skus files"
    if (prev.get("domainFilter") or {}).get("domains") != (manifest.get("domainFilter") or {}).get("domains"):
        return None, None, f"the previous run {run_id} used another domain filter (M365_DOMAINS)"
    prefix = run_prefix(prev["tenantId"], run_id)
    flat = USER_LICENCES_FILE in ((prev.get("insights") or {}).get("files") or {})
    before = previous_assignments(store, f"{prefix}/{USER_LICENCES_FILE if flat else users['file']}", flat,
                                  users.get("records"))  # user_licences has a line per user of the users file
    return Changes(before), {"runId": run_id, "startedAt": prev.get("startedAt"),
                             "skus": list(records(store, f"{prefix}/{skus['file']}"))}, None


# -- the document -------------------------------------------------------------------------------------

FREE_SKUS, FREE_BASIS = free_skus()


def free_reason(part_number: str, prices: PriceSheet | None) -> str | None:
    """Why a SKU costs nothing: `list` (the bundled list of free SKUs), `priceSheet` (priced 0), or None."""
    price = prices.price(part_number) if prices else None
    if price is not None and price[0] == 0:
        return "priceSheet"
    if part_number.upper() in FREE_SKUS and price is None:
        return "list"
    return None


def is_billed(t: SkuTally, subs: dict[str, dict[str, Any]], prices: PriceSheet | None) -> bool:
    """Paid for: in service (Enabled or Warning), not only trials (free and "viral" SKUs are trials), not a
    free SKU (bundled list, unless the price sheet prices it above 0) and not priced 0 in the price sheet."""
    rec = t.record or {}
    return (rec.get("capabilityStatus") in BILLED and (subs.get(t.sku_id) or {}).get("isTrial") is not True
            and free_reason(t.part_number, prices) is None)


def _sku_entry(t: SkuTally, names: ProductNames, prices: PriceSheet | None, activity: str | None,
               subs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rec = t.record or {}
    units = rec.get("prepaidUnits") or {}
    enabled = units.get("enabled") if rec else None
    consumed = rec.get("consumedUnits") if rec else None
    available = enabled - consumed if enabled is not None and consumed is not None else None
    sub = subs.get(t.sku_id) or {}
    price = prices.price(t.part_number) if prices else None
    billed = is_billed(t, subs, prices)
    unused = max(available, 0) if available is not None and billed and rec.get("capabilityStatus") == "Enabled" \
        else 0
    waste_users = t.classes[DISABLED] + t.classes[NEVER_SIGNED_IN] + t.classes[INACTIVE]
    entry: dict[str, Any] = {
        "skuId": t.sku_id, "skuPartNumber": t.part_number, "productName": names.name(t.sku_id),
        "capabilityStatus": rec.get("capabilityStatus"), "appliesTo": rec.get("appliesTo"),
        "enabled": enabled, "suspended": units.get("suspended") if rec else None,
        "warning": units.get("warning") if rec else None, "lockedOut": units.get("lockedOut") if rec else None,
        "consumed": consumed, "available": available,
        "assigned": t.assigned, "assignedDisabled": t.disabled,
        "assignedInactive": t.inactive if activity else None,
        "assignedNeverSignedIn": t.never if activity == "signInActivity" else None,
        "assignedGuests": t.guests, "directAndGroup": t.direct_and_group, "groupErrors": t.group_errors,
        "unusedSeats": unused,
        "wasteSeats": unused + waste_users if billed else 0,
        "assignedByActivity": dict(t.classes),
        "isTrial": sub.get("isTrial"), "nextLifecycleDateTime": sub.get("nextLifecycleDateTime"),
        "billed": billed, "free": t.free, "freeReason": free_reason(t.part_number, prices),
    }
    if price:
        amount, currency = price
        entry.update(monthlyPrice=_money(amount), currency=currency,
                     monthlyCost=_money(amount * (enabled or 0)), monthlyWaste=_money(amount * entry["wasteSeats"]))
    elif prices:
        entry.update(monthlyPrice=None, currency=None, monthlyCost=None, monthlyWaste=None)
    return entry


# codes whose count x price is a saving, like waste
SAVES = ("overlapping_licence", "renewal_unused_seats", "copilot_unused")


def _downgrade_detail(sku: dict[str, Any], prices: PriceSheet | None, names: ProductNames) -> dict[str, Any]:
    """The cheaper plan a downgrade_candidate finding names, with its price when the sheet has one."""
    part, sku_id = DOWNGRADES[sku["skuPartNumber"].upper()]
    price = prices.price(part) if prices else None
    return {"downgradeTo": {"skuPartNumber": part, "skuId": sku_id, "productName": names.name(sku_id),
                            "monthlyPrice": _money(price[0]) if price else None,
                            "currency": price[1] if price else None}}


def _finding(f: Finding, sku: dict[str, Any], inactive_days: int, detail: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    severity, unit, wastes = FINDINGS[f.code]
    message, remedy = describe(f.code, f.count, sku, inactive_days, detail or {})
    out = {"code": f.code, "severity": "info" if sku.get("free") else severity, "skuId": sku["skuId"],
           "skuPartNumber": sku["skuPartNumber"], "productName": sku["productName"], "count": f.count, "unit": unit,
           "message": message, "remedy": remedy, "sampleUserIds": f.samples}
    if detail:
        out.update(detail)
    priced = sku.get("monthlyPrice") is not None and sku["billed"]
    if wastes and priced:
        out.update(monthlyWaste=_money(sku["monthlyPrice"] * f.count), currency=sku["currency"])
    if (wastes or f.code in SAVES) and priced:
        monthly = _money(sku["monthlyPrice"] * f.count)
        out.update(monthlySaving=monthly, yearlySaving=_money(monthly * 12), currency=sku["currency"])
    target = out.get("downgradeTo")
    if target and priced and target["monthlyPrice"] is not None and target["currency"] == sku["currency"]:
        monthly = _money(max(sku["monthlyPrice"] - target["monthlyPrice"], 0) * f.count)
        out.update(monthlySaving=monthly, yearlySaving=_money(monthly * 12), currency=sku["currency"])
    return out


def _advice(tally: Tally, skus: list[dict[str, Any]], subscriptions: list[dict[str, Any]], started: int
            ) -> dict[tuple[str, str], dict[str, Any]]:
    """Renewal and trial findings (after the users are counted: they need unused seats and holders); returns
    the detail each finding carries."""
    by_id = {s["skuId"]: s for s in skus}
    renew, trials = renewals(subscriptions, by_id, started, epoch)
    details: dict[tuple[str, str], dict[str, Any]] = {}
    for code, found, count in (("renewal_unused_seats", renew, "seats"), ("trial_ending", trials, None)):
        for sid, info in found.items():
            tally.seat_finding(code, tally.skus[sid], info[count] if count else by_id[sid]["assigned"])
            details[(code, sid)] = info
    return details


def _by_currency(skus: list[dict[str, Any]], key: str) -> dict[str, float] | None:
    sums: dict[str, float] = {}
    for s in skus:
        if s.get(key) is not None:
            sums[s["currency"]] = _money(sums.get(s["currency"], 0) + s[key])
    return sums or None


def _totals(tally: Tally, skus: list[dict[str, Any]], findings: list[dict[str, Any]], activity: str | None
            ) -> dict[str, Any]:
    def total(key: str, among: list[dict[str, Any]] = skus) -> int | None:
        values = [s[key] for s in among if s.get(key) is not None]
        return sum(values) if values else None

    free = [s for s in skus if s["free"]]
    saving: dict[str, dict[str, float]] = {}  # by code: codes may name the same seat (no grand total)
    for f in findings:
        if f.get("monthlySaving") is not None:
            by = saving.setdefault(f["code"], {})
            by[f["currency"]] = _money(by.get(f["currency"], 0) + f["monthlySaving"])

    return {
        "users": tally.users, "licensedUsers": tally.licensed, "guests": tally.guests,
        "licensedGuests": tally.licensed_guests, "licensedUsersByActivity": dict(tally.user_classes),
        "skus": len(skus), "enabled": total("enabled"), "consumed": total("consumed"),
        "assigned": total("assigned"), "assignedDisabled": total("assignedDisabled"),
        "assignedInactive": total("assignedInactive") if activity else None,
        "assignedNeverSignedIn": total("assignedNeverSignedIn") if activity == "signInActivity" else None,
        "assignedGuests": total("assignedGuests"), "directAndGroup": total("directAndGroup"),
        "groupErrors": total("groupErrors"), "unusedSeats": total("unusedSeats"), "wasteSeats": total("wasteSeats"),
        "monthlyCost": _by_currency(skus, "monthlyCost"), "monthlyWaste": _by_currency(skus, "monthlyWaste"),
        "findings": len(findings),
        "enabledPaid": total("enabled", [s for s in skus if s["billed"]]) or 0,
        "free": {"skus": len(free), "enabled": total("enabled", free) or 0, "assigned": total("assigned", free) or 0},
        "monthlySavingByCode": saving or None,
    }


def _change_block(changes: Changes, previous: dict[str, Any], skus: list[dict[str, Any]]) -> dict[str, Any]:
    removed_users = changes.finish()
    before = {(s.get("skuId") or "").lower(): s for s in previous["skus"]}
    now = {s["skuId"]: s for s in skus}
    rows = []
    for sid in sorted(set(before) | set(now) | set(changes.assigned) | set(changes.removed)):
        seats_before = ((before.get(sid) or {}).get("prepaidUnits") or {}).get("enabled") or 0
        seats_after = (now.get(sid) or {}).get("enabled") or 0
        row = {"skuId": sid, "skuPartNumber": (now.get(sid) or {}).get("skuPartNumber") or
               (before.get(sid) or {}).get("skuPartNumber") or sid,
               "licencesAssigned": changes.assigned.get(sid, 0), "licencesRemoved": changes.removed.get(sid, 0),
               "seatsBefore": seats_before, "seatsAfter": seats_after, "seatsChange": seats_after - seats_before}
        if row["licencesAssigned"] or row["licencesRemoved"] or row["seatsChange"]:
            rows.append(row)
    return {
        "previousRunId": previous["runId"], "previousStartedAt": previous["startedAt"],
        "usersAdded": changes.added, "usersRemoved": removed_users,
        "licencesAssigned": sum(r["licencesAssigned"] for r in rows),
        "licencesRemoved": sum(r["licencesRemoved"] for r in rows),
        "seatsBought": sum(r["seatsChange"] for r in rows if r["seatsChange"] > 0),
        "seatsDropped": -sum(r["seatsChange"] for r in rows if r["seatsChange"] < 0),
        "skus": rows,
    }


def trend_point(doc: dict[str, Any]) -> dict[str, Any]:
    t = doc["totals"]
    return {"runId": doc["basis"]["runId"], "startedAt": doc["basis"]["startedAt"], "assigned": t["assigned"],
            "enabled": t["enabled"], "unusedSeats": t["unusedSeats"], "wasteSeats": t["wasteSeats"],
            "monthlyWaste": t["monthlyWaste"]}


def _trend(store: Store, runs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    points = []
    for run_id, manifest in runs:
        doc = read_json(store, f"{run_prefix(manifest['tenantId'], run_id)}/{INSIGHTS_FILE}")
        if doc and doc.get("version") == INSIGHTS_VERSION:
            points.append(trend_point(doc))
    return points[::-1]


# -- the entry point ------------------------------------------------------------------------------------

def derive(store: Store, manifest: dict[str, Any], settings: Any, prices: PriceSheet | None = None,
           names: ProductNames | None = None) -> dict[str, Any]:
    """Compute and write the insights files of the run `manifest` describes; return its manifest entry."""
    cpu0 = time.process_time()
    # Hundreds of thousands of parsed records pass through, a few compact maps stay: the cyclic garbage
    # collector would rescan those maps over and over (a third of the time) and frees nothing here.
    collecting = gc.isenabled()
    gc.disable()
    try:
        entry = _derive(store, manifest, settings, prices, names)
    finally:
        if collecting:
            gc.enable()
    if entry["status"] == "succeeded":
        entry["cpuSeconds"] = round(time.process_time() - cpu0, 3)
    return entry


def _derive(store: Store, manifest: dict[str, Any], settings: Any, prices: PriceSheet | None,
            names: ProductNames | None) -> dict[str, Any]:
    datasets = manifest["datasets"]
    missing = [n for n in ("users", "subscribed_skus") if not _usable(datasets.get(n))]
    if missing:
        return {"status": "skipped", "reason": f"insights need the {' and '.join(missing)} dataset(s) of the run"}
    tenant, run_id = manifest["tenantId"], manifest["runId"]
    prefix = run_prefix(tenant, run_id)
    names = names or load_names(store, settings.product_names_url)
    sku_records = list(records(store, f"{prefix}/{datasets['subscribed_skus']['file']}"))
    group_names: dict[str, str] = {}
    if _usable(datasets.get("groups")):
        group_names = {g["id"]: g.get("displayName") for g in records(store, f"{prefix}/{datasets['groups']['file']}")}
    subs: dict[str, dict[str, Any]] = {}  # skuId -> {isTrial: all its subscriptions are trials, next renewal}
    sub_records: list[dict[str, Any]] = []
    if _usable(datasets.get("subscriptions")):
        sub_records = list(records(store, f"{prefix}/{datasets['subscriptions']['file']}"))
        for sub in sub_records:
            entry = subs.setdefault((sub.get("skuId") or "").lower(), {"isTrial": True, "nextLifecycleDateTime": None})
            entry["isTrial"] = entry["isTrial"] and sub.get("isTrial") is True
            nxt = sub.get("nextLifecycleDateTime")
            if nxt and sub.get("status") in BILLED and (entry["nextLifecycleDateTime"] or "9") > nxt:
                entry["nextLifecycleDateTime"] = nxt
    activity, inputs = _activity(store, prefix, datasets)
    changes = None
    try:  # the spools (on-disk look-ups) are closed in every exit path
        earlier = find_runs(store, manifest, TREND_RUNS - 1)
        changes, previous, no_changes = _changes(store, manifest, earlier[0] if earlier else None)
        advice = (subs, sub_records, _exclusions(store, prefix, datasets, settings, group_names),
                  _downgrade_inputs(store, prefix, datasets), _copilot_inputs(store, prefix, datasets))
        return _compute(store, manifest, settings, prices, names, prefix, datasets, sku_records, group_names,
                        advice, activity, inputs, earlier, changes, previous, no_changes)
    finally:
        activity.close()
        if changes is not None:
            changes.previous.close()


def _exclusions(store: Store, prefix: str, datasets: dict[str, Any], settings: Any, group_names: dict[str, str]
                ) -> Exclusions:
    """M365_INSIGHTS_EXCLUDE, with the excluded groups' members from group_members when the run collected it
    (else only the groups that assign a licence are known: licenseAssignmentStates.assignedByGroup)."""
    ex = Exclusions.parse(tuple(getattr(settings, "insights_exclude", ()) or ()), group_names)
    if ex.group_ids and _usable(datasets.get("group_members")):
        ex.members = frozenset((m.get("memberId") or "").lower()
                               for m in records(store, f"{prefix}/{datasets['group_members']['file']}")
                               if (m.get("groupId") or "").lower() in ex.group_ids)
    return ex


def _overlaps(sku_records: list[dict[str, Any]], subs: dict[str, dict[str, Any]], prices: PriceSheet | None
              ) -> Overlaps:
    candidate, rank = {}, {}
    for rec in sku_records:
        t = SkuTally((rec.get("skuId") or "").lower(), rec.get("skuPartNumber") or "", rec)
        candidate[t.sku_id] = is_billed(t, subs, prices)
        price = prices.price(t.part_number) if prices else None
        rank[t.sku_id] = (-(price[0] if price else 0), len(rec.get("servicePlans") or ()), t.part_number)
    return Overlaps(sku_records, candidate, rank)


def _compute(store: Store, manifest: dict[str, Any], settings: Any, prices: PriceSheet | None, names: ProductNames,
             prefix: str, datasets: dict[str, Any], sku_records: list[dict[str, Any]], group_names: dict[str, str],
             advice: Advice, activity: Activity,
             inputs: dict[str, Any], earlier: list[tuple[str, dict[str, Any]]], changes: Changes | None,
             previous: dict[str, Any] | None, no_changes: str | None) -> dict[str, Any]:
    subs, _sub_records, exclusions, downgrade, copilot = advice
    lines = GzLines(store, f"{prefix}/{FINDINGS_FILE}")
    flat = GzLines(store, f"{prefix}/{USER_LICENCES_FILE}")
    table = FindingsCsv(store, f"{prefix}/{CSV_FILE}")
    tally = Tally(sku_records, started=epoch(manifest["startedAt"]) or int(time.time()),
                  inactive_days=settings.inactive_days, activity=activity, group_names=group_names, lines=lines,
                  billed=lambda t: is_billed(t, subs, prices),
                  free=lambda t: free_reason(t.part_number, prices) is not None,
                  overlaps=_overlaps(sku_records, subs, prices), exclusions=exclusions,
                  downgrades=downgrade[0], csv=table, copilot=copilot[0], product_name=names.name)
    try:  # nothing becomes visible unless every file is complete
        count_users(store, f"{prefix}/{datasets['users']['file']}", tally, changes, flat)
        tally.seat_findings()
        findings_file, flat_file, csv_file = lines.finish(), flat.finish(), table.finish()
        doc = _document(manifest, settings, tally, names, prices, advice, activity, inputs, previous, no_changes,
                        changes, store, earlier)
        html = render(doc)
        for done in (lines, flat, table):
            done.commit()
    except BaseException:
        for partial in (lines, flat, table):
            partial.abort()
        raise
    files = {FINDINGS_FILE: findings_file, USER_LICENCES_FILE: flat_file, CSV_FILE: csv_file,
             REPORT_FILE: put(store, f"{prefix}/{REPORT_FILE}", html, "text/html; charset=utf-8"),
             INSIGHTS_FILE: put(store, f"{prefix}/{INSIGHTS_FILE}",
                                orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n", "application/json")}
    return {"status": "succeeded", "files": files, "findings": len(doc["findings"]), "cpuSeconds": None,
            "warnings": _price_warnings(prices, doc["skus"]) + downgrade[2] + copilot[2]}


def _price_warnings(prices: PriceSheet | None, skus: list[dict[str, Any]]) -> list[dict[str, str]]:
    if not prices:
        return []
    present = {s["skuPartNumber"].upper() for s in skus} | {t for t, _ in DOWNGRADES.values()}  # priced targets
    unknown = sorted(p for p in prices.prices if p not in present)
    if not unknown:
        return []
    return [{"code": "price_sheet_unknown_sku",
             "message": f"M365_PRICE_SHEET prices SKU(s) the tenant does not have: {', '.join(unknown)}. Check the "
                        "part numbers against subscribed_skus (skuPartNumber)."}]


def _document(manifest: dict[str, Any], settings: Any, tally: Tally, names: ProductNames,
              prices: PriceSheet | None, advice: Advice,
              activity: Activity, inputs: dict[str, Any], previous: dict[str, Any] | None, no_changes: str | None,
              changes: Changes | None, store: Store, earlier: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """insights.json from the finished tally."""
    subs, sub_records, exclusions, downgrade, copilot = advice
    datasets = manifest["datasets"]
    known = activity.source
    skus = [_sku_entry(t, names, prices, known, subs) for t in tally.skus.values()]
    skus.sort(key=lambda s: (-(s["assigned"] or 0), s["skuPartNumber"]))
    by_id = {s["skuId"]: s for s in skus}
    details = _advice(tally, skus, sub_records, epoch(manifest["startedAt"]) or 0)
    for code, sid in tally.findings:
        if code == "downgrade_candidate":
            details[(code, sid)] = _downgrade_detail(by_id[sid], prices, names)
    findings = [_finding(f, by_id[f.sku.sku_id], settings.inactive_days, details.get(key))
                for key, f in tally.findings.items()]
    findings.sort(key=lambda f: (-(f.get("monthlySaving") or 0), SEVERITY_ORDER[f["severity"]], -f["count"],
                                 f["code"], f["skuPartNumber"]))
    excluded = [{"code": code, "skuId": sid, "skuPartNumber": by_id[sid]["skuPartNumber"], "count": n}
                for (code, sid), n in sorted(exclusions.counts.items())]
    doc = {
        "version": INSIGHTS_VERSION,
        "generatedBy": f"m365-inventory-connector {__version__}",
        "basis": basis(manifest, settings.inactive_days, activity, inputs, prices, names, previous, no_changes,
                       datasets),
        "totals": _totals(tally, skus, findings, known),
        "skus": skus,
        "findings": findings,
        "excluded": excluded,
        "changes": _change_block(changes, previous, skus) if changes and previous else None,
    }
    doc["basis"]["freeSkus"] = FREE_BASIS
    doc["basis"]["fallbacks"]["downgrades"] = downgrade[1]
    doc["basis"]["fallbacks"]["copilotSeats"] = copilot[1]
    doc["basis"]["exclusions"] = exclusions.basis(tuple(getattr(settings, "insights_exclude", ()) or ()))
    doc["trend"] = _trend(store, earlier) + [trend_point(doc)]
    return doc
