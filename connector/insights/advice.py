"""Recommendations with money, from the data a run already collected: which SKUs cost nothing, which
licences a user holds twice over (overlaps), which unused seats renew soon, which trials with users end
soon, and what a setting asks to leave out (exclusions). docs/insights.md states the rules."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

RENEWAL_WINDOWS = (30, 60, 90)  # days before a renewal in which unused seats are worth reducing
TRIAL_ENDING_DAYS = 30  # a trial with users that ends within this many days is a finding
ACTIVE_SUBSCRIPTION = ("Enabled", "Warning")


def free_skus() -> tuple[frozenset[str], dict[str, Any]]:
    """Upper-case part numbers of SKUs that cost nothing (data/free-skus.json) and where that list comes from."""
    data = json.loads(resources.files("connector.insights").joinpath("data/free-skus.json").read_bytes())
    return frozenset(k.upper() for k in data["skus"]), {"source": data["source"], "skus": len(data["skus"])}


@dataclass
class Exclusions:
    """M365_INSIGHTS_EXCLUDE: SKUs, users and groups whose findings are reported as excluded, not counted."""

    skus: frozenset[str] = frozenset()  # lower-case ids and part numbers
    users: frozenset[str] = frozenset()  # lower-case ids and userPrincipalNames
    groups: frozenset[str] = frozenset()  # lower-case ids and display names
    group_ids: frozenset[str] = frozenset()  # the groups resolved to ids (display names through `groups`)
    members: frozenset[str] = frozenset()  # user ids in an excluded group (from group_members, when collected)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (code, skuId) -> excluded users/seats

    @classmethod
    def parse(cls, entries: tuple[str, ...], group_names: dict[str, str | None]) -> Exclusions:
        kinds: dict[str, set[str]] = {"sku": set(), "user": set(), "group": set()}
        for entry in entries:
            kind, _, value = entry.partition(":")
            kinds[kind.strip().lower()].add(value.strip().lower())
        groups = frozenset(kinds["group"])
        ids = {gid.lower() for gid, name in group_names.items() if (name or "").lower() in groups}
        return cls(frozenset(kinds["sku"]), frozenset(kinds["user"]), groups, frozenset(ids | groups))

    def __bool__(self) -> bool:
        return bool(self.skus or self.users or self.groups)

    def sku(self, sku_id: str, part_number: str) -> bool:
        return sku_id in self.skus or part_number.lower() in self.skus

    def reason(self, user_id: str | None, upn: str | None, sku_id: str, part_number: str,
               groups: list[str] | None) -> str | None:
        """Why a finding about this user (id, userPrincipalName) and SKU is excluded, or None."""
        if self.sku(sku_id, part_number):
            return f"sku:{part_number}"
        uid = (user_id or "").lower()
        if uid in self.users or (upn or "").lower() in self.users:
            return "user"
        if self.group_ids:
            hit = next((g for g in groups or () if g.lower() in self.group_ids), None)
            if hit:
                return f"group:{hit}"
            if uid in self.members:
                return "group"
        return None

    def basis(self, setting: tuple[str, ...]) -> dict[str, Any] | None:
        if not self:
            return None
        return {"setting": list(setting), "skus": sorted(self.skus), "users": sorted(self.users),
                "groups": sorted(self.groups), "groupMembers": len(self.members)}


class Overlaps:
    """Licences a user holds twice over: a SKU every service plan of which the user also gets from the other
    SKUs it holds (Office 365 E3 beside Microsoft 365 E3, EMS beside Microsoft 365 E3, Power BI Pro beside
    E5). Plans switched off in an assignment (`disabledPlans`) do not count. Only SKUs paid for are named
    redundant (a free one saves nothing); the most expensive redundant one is named first, so of two SKUs
    with the same plans the dearer goes."""

    def __init__(self, sku_records: list[dict[str, Any]], candidate: dict[str, bool], rank: dict[str, Any]):
        self.plans: dict[str, frozenset[str]] = {}
        self.plan_names: dict[str, str] = {}
        for rec in sku_records:
            sid = (rec.get("skuId") or "").lower()
            plans = rec.get("servicePlans") or []
            self.plans[sid] = frozenset((p.get("servicePlanId") or "").lower() for p in plans) - {""}
            for p in plans:
                self.plan_names[(p.get("servicePlanId") or "").lower()] = p.get("servicePlanName") or ""
        self.candidate = candidate
        self.rank = rank
        self._cache: dict[Any, list[tuple[str, tuple[str, ...], tuple[str, ...]]]] = {}

    def redundant(self, licences: list[dict[str, Any]]) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
        """(redundant SKU id, the SKU ids that cover it, the shared plan names) for one user's assignedLicenses."""
        if len(licences) < 2:
            return []
        key = tuple(sorted(((lic.get("skuId") or "").lower(), tuple(sorted(lic.get("disabledPlans") or ())))
                           for lic in licences))
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._find(key)
        return found

    def _find(self, key: tuple[tuple[str, tuple[str, ...]], ...]) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
        enabled = {sid: self.plans.get(sid, frozenset()) - {d.lower() for d in off} for sid, off in key}
        out = []
        for sid in sorted(enabled, key=lambda s: self.rank.get(s, (0, s))):
            mine = enabled[sid]
            if not mine or not self.candidate.get(sid):
                continue
            others = [o for o in enabled if o != sid]
            rest = frozenset().union(*(enabled[o] for o in others))
            if mine <= rest:
                covering = tuple(sorted(o for o in others if enabled[o] & mine))
                out.append((sid, covering, tuple(sorted(self.plan_names.get(p, p) for p in mine))))
                del enabled[sid]  # the others still cover it; it cannot cover another in turn
        return out


def renewals(subscriptions: list[dict[str, Any]], skus: dict[str, dict[str, Any]], started: int,
             epoch: Any) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per SKU: unused seats of SKUs paid for that renew within the longest window, allocated to its
    subscriptions in renewal order up to each one's totalLicenses; and trials with users ending soon."""
    renew: dict[str, dict[str, Any]] = {}
    trials: dict[str, dict[str, Any]] = {}
    horizon = started + RENEWAL_WINDOWS[-1] * 86400
    ordered = sorted(subscriptions, key=lambda s: s.get("nextLifecycleDateTime") or "9")
    left = {sid: s["unusedSeats"] for sid, s in skus.items()}
    for sub in ordered:
        sid = (sub.get("skuId") or "").lower()
        sku = skus.get(sid)
        when = epoch(sub.get("nextLifecycleDateTime"))
        if sku is None or when is None or sub.get("status") not in ACTIVE_SUBSCRIPTION or not started <= when:
            continue
        days = (when - started + 86399) // 86400
        if sub.get("isTrial") is True:
            if days <= TRIAL_ENDING_DAYS and sku["assigned"]:
                trial = trials.setdefault(sid, {"endsOn": sub["nextLifecycleDateTime"], "days": days,
                                                "subscriptions": []})
                trial["subscriptions"].append(sub.get("id"))
            continue
        if when > horizon or not sku["billed"] or not left.get(sid):
            continue
        seats = min(left[sid], sub.get("totalLicenses") or 0)
        if seats <= 0:
            continue
        left[sid] -= seats
        entry = renew.setdefault(sid, {"seats": 0, "renewsOn": sub["nextLifecycleDateTime"], "days": days,
                                       "window": next(w for w in RENEWAL_WINDOWS if days <= w), "subscriptions": []})
        entry["seats"] += seats
        entry["subscriptions"].append({"id": sub.get("id"), "renewsOn": sub["nextLifecycleDateTime"], "seats": seats})
    return renew, trials


# Downgrades: the suite -> the frontline plan that would do for a user who uses Office only on the web and on
# mobile and keeps mailbox and OneDrive under its limits. Source (limits and what F3 lacks): Microsoft,
# "Changing from a Microsoft 365 E plan to a Microsoft 365 F plan",
# learn.microsoft.com/microsoft-365/frontline/switch-from-enterprise-to-frontline: F plans have no Office
# desktop apps; F3 has a 2 GB mailbox, no archive mailbox, 2 GB of OneDrive, no Teams Phone.
DOWNGRADES = {  # suite part number -> (target part number, target skuId from Microsoft's product names CSV)
    "SPE_E3": ("SPE_F1", "66b55226-6b4f-492c-910c-a3b7a3c9d993"),  # Microsoft 365 E3 -> Microsoft 365 F3
    "ENTERPRISEPACK": ("DESKLESSPACK", "4b585984-651b-448a-9e53-3b10f069cf7f"),  # Office 365 E3 -> Office 365 F3
}
F3_LIMIT_BYTES = 2 * 1024**3  # mailbox and OneDrive (Exchange quotas are binary gigabytes)
DOWNGRADE_REPORTS = ("report_m365_app_user_detail", "report_mailbox_usage_detail",
                     "report_onedrive_usage_account_detail")


def downgrade_fits(app: Iterable[dict[str, Any]], mailbox: Iterable[dict[str, Any]],
                   onedrive: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """userPrincipalName (lower case) -> evidence, for the users whose usage in the reports' period fits F3:
    in getM365AppUserDetail with Office activity and no desktop use (Windows, Mac), in getMailboxUsageDetail
    with at most 2 GB used and no archive, in getOneDriveUsageAccountDetail with at most 2 GB used. A user
    missing from a report, or listed twice with one row that does not fit, is not a candidate."""
    fits: dict[str, dict[str, Any]] = {}
    bad: set[str] = set()
    for row in app:
        upn = (row.get("userPrincipalName") or "").lower()
        if not upn:
            continue
        if row.get("windows") is not False or row.get("mac") is not False or not row.get("lastActivityDate"):
            bad.add(upn)
            continue
        fits[upn] = {"desktopApps": False, "platforms": [p for p in ("web", "mobile") if row.get(p)],
                     "officeLastActivity": row.get("lastActivityDate"), "reportPeriod": row.get("reportPeriod")}
    for rows, key, name, archive in ((mailbox, "userPrincipalName", "mailboxBytes", True),
                                      (onedrive, "ownerPrincipalName", "oneDriveBytes", False)):
        seen: set[str] = set()
        for row in rows:
            upn = (row.get(key) or "").lower()
            if upn not in fits:
                continue
            used = row.get("storageUsedInBytes")
            if not isinstance(used, int) or used > F3_LIMIT_BYTES or (archive and row.get("hasArchive")):
                bad.add(upn)
            seen.add(upn)
            fits[upn][name] = max(used, fits[upn].get(name) or 0) if isinstance(used, int) else None
        for upn in [u for u in fits if u not in seen]:
            del fits[upn]
    for upn in bad:
        fits.pop(upn, None)
    for evidence in fits.values():
        evidence["limitBytes"] = F3_LIMIT_BYTES
    return fits


# Copilot seats: Microsoft 365 Copilot licences (product names CSV: Microsoft_365_Copilot) held by users with no
# Copilot activity in the period of the Copilot usage report (opt-in dataset copilot_usage_user_detail, beta).
COPILOT_SKUS = frozenset({"MICROSOFT_365_COPILOT"})
COPILOT_REPORT = "copilot_usage_user_detail"


def copilot_activity(rows: Iterable[dict[str, Any]]) -> dict[str, str | None]:
    """userPrincipalName (lower case) -> the last Copilot activity date in the period, or None (listed, no
    activity). A user listed twice keeps the latest date."""
    seen: dict[str, str | None] = {}
    for row in rows:
        upn = (row.get("userPrincipalName") or "").lower()
        if upn:
            last = row.get("lastActivityDate") or None
            seen[upn] = max(filter(None, (seen.get(upn), last)), default=None)
    return seen
