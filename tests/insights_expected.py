"""The licence figures of a simulated tenant, computed here from the simulator's own data with the
definitions of docs/insights.md, independently of connector/insights*.py, for the tests to compare with."""

from __future__ import annotations

import collections
import json
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

# The bundled list of free SKUs is data (with its source), read here as a tool would.
FREE = {k.upper() for k in json.loads((Path(__file__).resolve().parent.parent / "connector" / "insights" / "data" /
                                       "free-skus.json").read_text())["skus"]}


def ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def last_success(sia: dict[str, Any] | None) -> datetime | None:
    if not sia:
        return None
    if sia.get("lastSuccessfulSignInDateTime"):
        return ts(sia["lastSuccessfulSignInDateTime"])
    found = [ts(sia.get(k)) for k in ("lastSignInDateTime", "lastNonInteractiveSignInDateTime") if sia.get(k)]
    return max(found) if found else None


def expected(sim: Any, started: str, *, days: int = 90, source: str = "signInActivity",
             prices: dict[str, Decimal] | None = None, report_rows: list[dict[str, Any]] | None = None,
             exclude: tuple[set[str], set[str]] = (set(), set())) -> dict[str, Any]:
    """Per SKU figures, findings per (code, skuId) with their users, and totals."""
    cutoff = ts(started) - timedelta(days=days)
    users = list(sim.tenant.users())
    skus = {s["skuId"]: s for s in sim.tenant.subscribed_skus()}
    subscriptions = sim.inventory.subscriptions()
    trials = {s["skuId"]: s["isTrial"] for s in subscriptions}
    plans = {sid: {p["servicePlanId"] for p in s["servicePlans"]} for sid, s in skus.items()}
    excluded_skus, excluded_users = exclude
    excluded: collections.Counter = collections.Counter()
    activity: dict[str, datetime | None] = {}
    if report_rows is not None:
        for row in report_rows:
            dates = [ts(v + "T00:00:00Z") for k, v in row.items() if k.endswith("LastActivityDate") and v]
            activity[row["userPrincipalName"].lower()] = max(dates) if dates else None
    fig: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    findings: dict[tuple[str, str], set[str]] = collections.defaultdict(set)

    def free(sid: str) -> bool:
        price = (prices or {}).get(skus[sid]["skuPartNumber"])
        return price == 0 or (price is None and skus[sid]["skuPartNumber"].upper() in FREE)

    def billed(sid: str) -> bool:
        return skus[sid]["capabilityStatus"] in ("Enabled", "Warning") and not trials.get(sid) and not free(sid)

    for u in users:
        held = {lic["skuId"] for lic in u["assignedLicenses"]}
        created = ts(u["createdDateTime"])
        old = created < cutoff
        enabled = u["accountEnabled"] is not False
        if source == "signInActivity":
            last = last_success(u["signInActivity"])
            never = last is None and old
            inactive = last is not None and last < cutoff
        elif source == "usageReports":
            last = activity.get(u["userPrincipalName"].lower())
            never = False
            inactive = last < cutoff if last else old
        else:
            never = inactive = False
        cls = ("disabled" if not enabled else "unknown" if source is None else
               "neverSignedIn" if never else "inactive" if inactive else "active")
        direct = {st["skuId"] for st in u["licenseAssignmentStates"] if st["assignedByGroup"] is None}
        grouped = {st["skuId"] for st in u["licenseAssignmentStates"] if st["assignedByGroup"]}
        for sid in held:
            f = fig[sid]
            f["assigned"] += 1
            f["assignedDisabled"] += not enabled
            f["assignedInactive"] += inactive
            f["assignedNeverSignedIn"] += never
            f["assignedGuests"] += u["userType"] == "Guest"
            f["directAndGroup"] += sid in direct and sid in grouped
            f[cls] += 1
            code = {"disabled": "licence_on_disabled_account", "neverSignedIn": "licence_never_used",
                    "inactive": "licence_inactive"}.get(cls)
            if code and billed(sid):
                findings[(code, sid)].add(u["id"])
            if u["userType"] == "Guest":
                findings[("licence_on_guest", sid)].add(u["id"])
            if sid in direct and sid in grouped:
                findings[("direct_and_group_assignment", sid)].add(u["id"])
            if skus[sid]["capabilityStatus"] != "Enabled":
                findings[("subscription_not_active", sid)].add(u["id"])
        for st in u["licenseAssignmentStates"]:
            if st["assignedByGroup"] and st["state"] != "Active":
                fig[st["skuId"]]["groupErrors"] += 1
                findings[("group_assignment_error", st["skuId"])].add(u["id"])
        # Overlaps: a SKU paid for whose every (enabled) plan another held SKU also gives.
        enabled_plans = {lic["skuId"]: plans[lic["skuId"]] - set(lic["disabledPlans"]) for lic in u["assignedLicenses"]}
        for sid, mine in enabled_plans.items():
            others = set().union(*(p for o, p in enabled_plans.items() if o != sid))
            if mine and billed(sid) and mine <= others:
                findings[("overlapping_licence", sid)].add(u["id"])
    for key in list(findings):  # excluded users and SKUs are counted apart
        code, sid = key
        gone = {uid for uid in findings[key] if uid in excluded_users} if sid not in excluded_skus else findings[key]
        if gone:
            excluded[key] = len(gone)
            findings[key] -= gone
            if not findings[key]:
                del findings[key]
    seat_findings = {}
    for sid, s in skus.items():
        f = fig[sid]
        enabled_seats, consumed = s["prepaidUnits"]["enabled"], s["consumedUnits"]
        f["enabled"], f["consumed"], f["available"] = enabled_seats, consumed, enabled_seats - consumed
        unused = max(enabled_seats - consumed, 0) if s["capabilityStatus"] == "Enabled" and billed(sid) else 0
        f["unusedSeats"] = unused
        f["wasteSeats"] = unused + f["disabled"] + f["neverSignedIn"] + f["inactive"] if billed(sid) else 0
        if s["capabilityStatus"] == "Enabled" and unused:
            seat_findings[("unused_seats", sid)] = unused
        if s["capabilityStatus"] == "Enabled" and consumed > enabled_seats:
            seat_findings[("over_assigned", sid)] = consumed - enabled_seats
        price = (prices or {}).get(s["skuPartNumber"])
        if price is not None:
            f["monthlyWaste"] = float(round(price * f["wasteSeats"], 2))
        f["free"] = free(sid)
    for sub in subscriptions:  # one subscription per SKU in the simulator
        sid, days = sub["skuId"], (ts(sub["nextLifecycleDateTime"]) - ts(started)).total_seconds() / 86400
        if sub["status"] not in ("Enabled", "Warning") or days < 0:
            continue
        if not sub["isTrial"] and days <= 90 and fig[sid]["unusedSeats"]:
            seat_findings[("renewal_unused_seats", sid)] = min(fig[sid]["unusedSeats"], sub["totalLicenses"])
        if sub["isTrial"] and days <= 30 and fig[sid]["assigned"]:
            seat_findings[("trial_ending", sid)] = fig[sid]["assigned"]
    for key in [k for k in seat_findings if k[1] in excluded_skus]:
        excluded[key] = seat_findings.pop(key)
    return {"skus": fig, "findings": findings, "seatFindings": seat_findings, "users": users, "skuRecords": skus,
            "excluded": excluded}


# Downgrades, restated from docs/insights.md: Microsoft 365 F3 has no desktop Office, no archive mailbox, and
# 2 GB of mailbox and of OneDrive (learn.microsoft.com/microsoft-365/frontline/switch-from-enterprise-to-frontline).
F3_LIMIT = 2 * 1024**3
SUITES = {"SPE_E3": "SPE_F1", "ENTERPRISEPACK": "DESKLESSPACK"}


def wasted(u: dict[str, Any], cutoff: datetime) -> bool:
    """The user's licences are waste findings already: disabled, never signed in (an old account), inactive."""
    last = last_success(u["signInActivity"])
    old = ts(u["createdDateTime"]) < cutoff
    return u["accountEnabled"] is False or (last is None and old) or (last is not None and last < cutoff)


def expected_downgrades(sim: Any, started: str, *, days: int = 90, period: str = "D30"
                        ) -> dict[tuple[str, str], dict[str, Any]]:
    """(user id, suite skuId) -> evidence, for the holders of an E3 suite paid for whose usage fits F3 and whose
    licence is not already a waste finding (disabled, never signed in, inactive)."""
    cutoff = ts(started) - timedelta(days=days)
    rows = {name: sim.usage.rows(name, period, concealed=False) for name in
            ("getM365AppUserDetail", "getMailboxUsageDetail", "getOneDriveUsageAccountDetail")}
    app = {r["userPrincipalName"].lower(): r for r in rows["getM365AppUserDetail"]}
    mailbox = {r["userPrincipalName"].lower(): r for r in rows["getMailboxUsageDetail"]}
    onedrive = {r["ownerPrincipalName"].lower(): r for r in rows["getOneDriveUsageAccountDetail"]}
    skus = {s["skuId"]: s for s in sim.tenant.subscribed_skus()}
    trials = {s["skuId"]: s["isTrial"] for s in sim.inventory.subscriptions()}
    out = {}
    for u in sim.tenant.users():
        upn = u["userPrincipalName"].lower()
        a, m, o = app.get(upn), mailbox.get(upn), onedrive.get(upn)
        if not (a and m and o) or a["windows"] or a["mac"] or not a["lastActivityDate"]:
            continue
        if m["storageUsedInBytes"] > F3_LIMIT or m["hasArchive"] or o["storageUsedInBytes"] > F3_LIMIT:
            continue
        if wasted(u, cutoff):
            continue
        for lic in u["assignedLicenses"]:
            sku = skus[lic["skuId"]]
            if sku["skuPartNumber"] in SUITES and sku["capabilityStatus"] in ("Enabled", "Warning") \
                    and not trials.get(lic["skuId"]):
                out[(u["id"], lic["skuId"])] = {
                    "downgradeTo": SUITES[sku["skuPartNumber"]], "mailboxBytes": m["storageUsedInBytes"],
                    "oneDriveBytes": o["storageUsedInBytes"], "officeLastActivity": a["lastActivityDate"]}
    return out


def expected_copilot_unused(sim: Any, started: str, *, days: int = 90, period: str = "D30") -> set[str]:
    """Ids of the users holding Microsoft 365 Copilot (a SKU paid for) with no Copilot activity in the Copilot
    report's period whose licence is not already a waste finding (disabled, never signed in, inactive)."""
    from simulator.copilot import rows

    cutoff = ts(started) - timedelta(days=days)
    active = {r["userPrincipalName"].lower() for r in rows(sim.tenant, period, False) if r["lastActivityDate"]}
    skus = {s["skuId"]: s for s in sim.tenant.subscribed_skus()}
    trials = {s["skuId"]: s["isTrial"] for s in sim.inventory.subscriptions()}
    out = set()
    for u in sim.tenant.users():
        if wasted(u, cutoff):
            continue
        for lic in u["assignedLicenses"]:
            sku = skus[lic["skuId"]]
            if sku["skuPartNumber"] == "Microsoft_365_Copilot" and not trials.get(lic["skuId"]) \
                    and u["userPrincipalName"].lower() not in active:
                out.add(u["id"])
    return out
