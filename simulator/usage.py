"""Microsoft 365 usage reports (graph-facts §4): typed rows and the CSV Graph hands out.

Each report is a list of columns ``(CSV header, Graph JSON name, kind)`` in Microsoft's
documented order; the JSON names are written out here (as Graph's JSON reports spell them)
rather than derived, so a client's header-to-name rule is checked against them. Rows are
typed Python values; :func:`render` turns them into the CSV of the pre-authenticated
download: UTF-8 with BOM, every field quoted, ``True``/``False`` or ``Yes``/``No`` booleans,
empty strings for nulls, ``+`` between assigned products.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import random
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .seeded import DAY, digest, iso_date

if TYPE_CHECKING:
    from .tenant import Tenant

PERIODS = {"D7": 7, "D30": 30, "D90": 90, "D180": 180}
HORIZON_DAYS = 180  # activity older than this shows no last activity date

# kinds: date, int, bool (True/False), yesno (Yes/No), text, upn, name, userid, products
_OFFICE_ACTIVE = [
    ("Report Refresh Date", "reportRefreshDate", "date"),
    ("User Principal Name", "userPrincipalName", "upn"),
    ("Display Name", "displayName", "name"),
    ("Is Deleted", "isDeleted", "bool"),
    ("Deleted Date", "deletedDate", "date"),
    *[(f"Has {s} License", f"has{j}License", "bool") for s, j in
      (("Exchange", "Exchange"), ("OneDrive", "OneDrive"), ("SharePoint", "SharePoint"),
       ("Skype For Business", "SkypeForBusiness"), ("Yammer", "Yammer"), ("Teams", "Teams"))],
    *[(f"{s} Last Activity Date", f"{j}LastActivityDate", "date") for s, j in
      (("Exchange", "exchange"), ("OneDrive", "oneDrive"), ("SharePoint", "sharePoint"),
       ("Skype For Business", "skypeForBusiness"), ("Yammer", "yammer"), ("Teams", "teams"))],
    *[(f"{s} License Assign Date", f"{j}LicenseAssignDate", "date") for s, j in
      (("Exchange", "exchange"), ("OneDrive", "oneDrive"), ("SharePoint", "sharePoint"),
       ("Skype For Business", "skypeForBusiness"), ("Yammer", "yammer"), ("Teams", "teams"))],
    ("Assigned Products", "assignedProducts", "products"),
]
_APPS = (("Outlook", "outlook"), ("Word", "word"), ("Excel", "excel"), ("PowerPoint", "powerPoint"),
         ("OneNote", "oneNote"), ("Teams", "teams"))
_PLATFORMS = (("Windows", "Windows"), ("Mac", "Mac"), ("Mobile", "Mobile"), ("Web", "Web"))
_DESKTOP = ("Windows", "Mac")  # getM365AppUserDetail's desktop platforms (Mobile and Web are the others)
# Test data shaping: frontline-like users' storage is drawn below this (Microsoft 365 F3 allows 2 GB of mailbox
# and of OneDrive, learn.microsoft.com/microsoft-365/frontline/switch-from-enterprise-to-frontline), so about
# two thirds of them fit and the others just miss.
_FRONTLINE_STORAGE = 3 * 1024**3
_M365_APP = [
    ("Report Refresh Date", "reportRefreshDate", "date"),
    ("User Principal Name", "userPrincipalName", "upn"),
    ("Last Activation Date", "lastActivationDate", "date"),
    ("Last Activity Date", "lastActivityDate", "date"),
    ("Report Period", "reportPeriod", "int"),
    *[(p, p[0].lower() + p[1:], "yesno") for p, _ in _PLATFORMS],
    *[(a, j, "yesno") for a, j in _APPS],
    *[(f"{a} ({p})", f"{j}{pj}", "yesno") for p, pj in _PLATFORMS for a, j in _APPS],
]
_ACTIVATIONS = [
    ("Report Refresh Date", "reportRefreshDate", "date"),
    ("User Principal Name", "userPrincipalName", "upn"),
    ("Display Name", "displayName", "name"),
    ("Product Type", "productType", "text"),
    ("Last Activated Date", "lastActivatedDate", "date"),
    ("Windows", "windows", "int"),
    ("Mac", "mac", "int"),
    ("Windows 10 Mobile", "windows10Mobile", "int"),
    ("iOS", "ios", "int"),
    ("Android", "android", "int"),
    ("Activated On Shared Computer", "activatedOnSharedComputer", "bool"),
]
_EMAIL = [
    ("Report Refresh Date", "reportRefreshDate", "date"),
    ("User Principal Name", "userPrincipalName", "upn"),
    ("Display Name", "displayName", "name"),
    ("Is Deleted", "isDeleted", "bool"),
    ("Deleted Date", "deletedDate", "date"),
    ("Last Activity Date", "lastActivityDate", "date"),
    ("Send Count", "sendCount", "int"),
    ("Receive Count", "receiveCount", "int"),
    ("Read Count", "readCount", "int"),
    ("Meeting Created Count", "meetingCreatedCount", "int"),
    ("Meeting Interacted Count", "meetingInteractedCount", "int"),
    ("Assigned Products", "assignedProducts", "products"),
    ("Report Period", "reportPeriod", "int"),
]
_MAILBOX = [
    ("Report Refresh Date", "reportRefreshDate", "date"),
    ("User Principal Name", "userPrincipalName", "upn"),
    ("Display Name", "displayName", "name"),
    ("Is Deleted", "isDeleted", "bool"),
    ("Deleted Date", "deletedDate", "date"),
    ("Created Date", "createdDate", "date"),
    ("Last Activity Date", "lastActivityDate", "date"),
    ("Item Count", "itemCount", "int"),
    ("Storage Used (Byte)", "storageUsedInBytes", "int"),
    ("Issue Warning Quota (Byte)", "issueWarningQuotaInBytes", "int"),
    ("Prohibit Send Quota (Byte)", "prohibitSendQuotaInBytes", "int"),
    ("Prohibit Send/Receive Quota (Byte)", "prohibitSendReceiveQuotaInBytes", "int"),
    ("Deleted Item Count", "deletedItemCount", "int"),
    ("Deleted Item Size (Byte)", "deletedItemSizeInBytes", "int"),
    ("Deleted Item Quota (Byte)", "deletedItemQuotaInBytes", "int"),
    ("Has Archive", "hasArchive", "bool"),
    # Not in the documented list but seen in real files: a column the client does not know.
    ("Recipient Type", "recipientType", "text"),
    ("Report Period", "reportPeriod", "int"),
]
_ONEDRIVE = [
    ("Report Refresh Date", "reportRefreshDate", "date"),
    ("Site URL", "siteUrl", "site"),
    ("Owner Display Name", "ownerDisplayName", "name"),
    ("Is Deleted", "isDeleted", "bool"),
    ("Last Activity Date", "lastActivityDate", "date"),
    ("File Count", "fileCount", "int"),
    ("Active File Count", "activeFileCount", "int"),
    ("Storage Used (Byte)", "storageUsedInBytes", "int"),
    ("Storage Allocated (Byte)", "storageAllocatedInBytes", "int"),
    ("Owner Principal Name", "ownerPrincipalName", "upn"),
    ("Report Period", "reportPeriod", "int"),
]
_SHAREPOINT = [
    ("Report Refresh Date", "reportRefreshDate", "date"),
    ("User Principal Name", "userPrincipalName", "upn"),
    ("Is Deleted", "isDeleted", "bool"),
    ("Deleted Date", "deletedDate", "date"),
    ("Last Activity Date", "lastActivityDate", "date"),
    ("Viewed Or Edited File Count", "viewedOrEditedFileCount", "int"),
    ("Synced File Count", "syncedFileCount", "int"),
    ("Shared Internally File Count", "sharedInternallyFileCount", "int"),
    ("Shared Externally File Count", "sharedExternallyFileCount", "int"),
    ("Visited Page Count", "visitedPageCount", "int"),
    ("Assigned Products", "assignedProducts", "products"),
    ("Report Period", "reportPeriod", "int"),
]
_TEAMS_COUNTS = (
    ("Team Chat Message Count", "teamChatMessageCount"), ("Private Chat Message Count", "privateChatMessageCount"),
    ("Call Count", "callCount"), ("Meeting Count", "meetingCount"), ("Post Messages", "postMessages"),
    ("Reply Messages", "replyMessages"), ("Urgent Messages", "urgentMessages"),
    ("Meetings Organized Count", "meetingsOrganizedCount"), ("Meetings Attended Count", "meetingsAttendedCount"),
    ("Ad Hoc Meetings Organized Count", "adHocMeetingsOrganizedCount"),
    ("Ad Hoc Meetings Attended Count", "adHocMeetingsAttendedCount"),
    ("Scheduled One-time Meetings Organized Count", "scheduledOneTimeMeetingsOrganizedCount"),
    ("Scheduled One-time Meetings Attended Count", "scheduledOneTimeMeetingsAttendedCount"),
    ("Scheduled Recurring Meetings Organized Count", "scheduledRecurringMeetingsOrganizedCount"),
    ("Scheduled Recurring Meetings Attended Count", "scheduledRecurringMeetingsAttendedCount"),
)
_TEAMS = [
    ("Report Refresh Date", "reportRefreshDate", "date"),
    ("Tenant Display Name", "tenantDisplayName", "text"),
    ("Shared Channel Tenant Display Names", "sharedChannelTenantDisplayNames", "text"),
    ("User Id", "userId", "userid"),
    ("User Principal Name", "userPrincipalName", "upn"),
    ("Last Activity Date", "lastActivityDate", "date"),
    ("Is Deleted", "isDeleted", "bool"),
    ("Deleted Date", "deletedDate", "date"),
    ("Assigned Products", "assignedProducts", "products"),
    *[(h, j, "int") for h, j in _TEAMS_COUNTS],
    ("Audio Duration", "audioDuration", "text"),
    ("Video Duration", "videoDuration", "text"),
    ("Screen Share Duration", "screenShareDuration", "text"),
    ("Audio Duration In Seconds", "audioDurationInSeconds", "int"),
    ("Video Duration In Seconds", "videoDurationInSeconds", "int"),
    ("Screen Share Duration In Seconds", "screenShareDurationInSeconds", "int"),
    ("Has Other Action", "hasOtherAction", "yesno"),
    ("Is Licensed", "isLicensed", "yesno"),
    ("Report Period", "reportPeriod", "int"),
]

# function name -> (columns, takes a period)
REPORTS: dict[str, tuple[list[tuple[str, str, str]], bool]] = {
    "getOffice365ActiveUserDetail": (_OFFICE_ACTIVE, True),
    "getM365AppUserDetail": (_M365_APP, True),
    "getOffice365ActivationsUserDetail": (_ACTIVATIONS, False),
    "getEmailActivityUserDetail": (_EMAIL, True),
    "getMailboxUsageDetail": (_MAILBOX, True),
    "getOneDriveUsageAccountDetail": (_ONEDRIVE, True),
    "getSharePointActivityUserDetail": (_SHAREPOINT, True),
    "getTeamsUserActivityUserDetail": (_TEAMS, True),
}
REPORT_NAMES = {name.lower(): name for name in REPORTS}

# Product names as the reports print them. One contains " + ", which must not split the list.
PRODUCT_NAMES = {
    "E3": "MICROSOFT 365 E3", "E5": "OFFICE 365 E5", "EMS": "ENTERPRISE MOBILITY + SECURITY E3",
    "PBI": "POWER BI (FREE)", "FLOW": "MICROSOFT POWER AUTOMATE FREE", "CRM": "DYNAMICS 365 CUSTOMER ENGAGEMENT PLAN",
    "VISIO": "VISIO ONLINE PLAN 2", "STREAM": "MICROSOFT STREAM TRIAL", "STORE": "MICROSOFT STORE FOR BUSINESS",
    "COPILOT": "MICROSOFT 365 COPILOT",
}
ZERO_GUID = "00000000-0000-0000-0000-000000000000"


def conceal(value: str | None) -> str | None:
    """Concealed names are 32 upper-case hex characters, stable per value (§4)."""
    return None if value is None else hashlib.md5(value.lower().encode()).hexdigest().upper()


def _duration(seconds: int) -> str:
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return "PT" + (f"{h}H" if h else "") + (f"{m}M" if m else "") + (f"{s}S" if s or not (h or m) else "")


@dataclass
class _UserRows:
    """One licensed user as every report's rows see it, with the user's own random draws for the report."""

    tenant: Tenant
    refresh_epoch: int
    refresh: str
    days: int
    user: dict[str, Any]
    combo: tuple[str, ...]
    services: frozenset[str]
    rnd: random.Random
    seen_epoch: int | None
    active: bool
    products: list[str]
    base: dict[str, Any]
    mailbox: bool
    spo: bool
    teams: bool
    frontline: bool = False  # test data shaping (TenantSpec.frontline_share): web/mobile Office, small storage

    def recent(self, active: bool, window: int | None = None) -> str | None:
        window = max(self.days, 30) if window is None else window
        return iso_date((self.refresh_epoch - self.rnd.randrange(0, window) * DAY) // DAY) if active else None

    def seen(self, flag: bool) -> str | None:
        """Last activity date: on or shortly before the last sign-in, within the reports' data."""
        if not flag or self.seen_epoch is None:
            return None
        return iso_date((min(self.refresh_epoch, self.seen_epoch) - self.rnd.randrange(0, 3) * DAY) // DAY)

    def assigned(self, has: bool) -> str | None:
        return iso_date((self.refresh_epoch - self.rnd.randrange(30, 1500) * DAY) // DAY) if has else None


def _office365_active(u: _UserRows) -> list[dict[str, Any]] | None:
    rnd, services, active, base, mailbox, spo, teams = u.rnd, u.services, u.active, u.base, u.mailbox, u.spo, u.teams
    has = {"Exchange": mailbox, "OneDrive": spo, "SharePoint": spo,
           "SkypeForBusiness": "MicrosoftCommunicationsOnline" in services, "Yammer": False,
           "Teams": teams}
    row = dict(base)
    for key, value in has.items():
        lower = key[0].lower() + key[1:]
        row[f"has{key}License"] = value
        row[f"{lower}LastActivityDate"] = u.seen(value and active and rnd.random() < 0.9)
        row[f"{lower}LicenseAssignDate"] = u.assigned(value)
    rows = [row]
    return rows


def _m365_app(u: _UserRows) -> list[dict[str, Any]] | None:
    rnd, user, refresh, days, services, active = u.rnd, u.user, u.refresh, u.days, u.services, u.active
    if "MicrosoftOffice" not in services:
        return None
    row = {"reportRefreshDate": refresh, "userPrincipalName": user["userPrincipalName"],
           "lastActivationDate": u.recent(True, 400), "lastActivityDate": u.seen(active),
           "reportPeriod": days}
    for _p, pj in _PLATFORMS:
        row[pj[0].lower() + pj[1:]] = False
    for _a, aj in _APPS:
        row[aj] = False
    for _p, pj in _PLATFORMS:
        for _a, aj in _APPS:
            used = active and rnd.random() < (0.6 if pj in ("Windows", "Web") else 0.2)
            used = used and not (u.frontline and pj in _DESKTOP)  # the draw is made all the same
            row[f"{aj}{pj}"] = used
            if used:
                row[pj[0].lower() + pj[1:]] = True
                row[aj] = True
    rows = [row]
    return rows


def _activations(u: _UserRows) -> list[dict[str, Any]] | None:
    rnd, user, refresh, combo, services = u.rnd, u.user, u.refresh, u.combo, u.services
    if "MicrosoftOffice" not in services:
        return None
    kinds = ["MICROSOFT 365 APPS FOR ENTERPRISE"] + (["VISIO"] if "VISIO" in combo else [])
    rows = []
    for product in kinds:
        rows.append({"reportRefreshDate": refresh, "userPrincipalName": user["userPrincipalName"],
                     "displayName": user["displayName"], "productType": product,
                     "lastActivatedDate": u.recent(True, 700), "windows": rnd.randrange(0, 4),
                     "mac": rnd.randrange(0, 2), "windows10Mobile": 0, "ios": rnd.randrange(0, 3),
                     "android": rnd.randrange(0, 2), "activatedOnSharedComputer": rnd.random() < 0.05})
    return rows


def _email_activity(u: _UserRows) -> list[dict[str, Any]] | None:
    rnd, days, active, base, mailbox = u.rnd, u.days, u.active, u.base, u.mailbox
    if not mailbox:
        return None
    row = {k: base[k] for k in ("reportRefreshDate", "userPrincipalName", "displayName", "isDeleted",
                                "deletedDate", "assignedProducts", "reportPeriod")}
    row.update({"lastActivityDate": u.seen(active), "sendCount": rnd.randrange(0, 40 * max(1, days)),
                "receiveCount": rnd.randrange(0, 120 * max(1, days)),
                "readCount": rnd.randrange(0, 100 * max(1, days)),
                "meetingCreatedCount": rnd.randrange(0, 3 * max(1, days)),
                "meetingInteractedCount": rnd.randrange(0, 5 * max(1, days))})
    rows = [row]
    return rows


def _storage(u: _UserRows, drawn: int) -> int:
    """Bytes of storage used: as drawn, or below _FRONTLINE_STORAGE for a frontline-like user (test data shaping)."""
    return drawn % _FRONTLINE_STORAGE if u.frontline else drawn


def _mailbox_usage(u: _UserRows) -> list[dict[str, Any]] | None:
    rnd, user, refresh, days, combo, active, mailbox = u.rnd, u.user, u.refresh, u.days, u.combo, u.active, u.mailbox
    if not mailbox:
        return None
    quota = 100 * 1024**3 if "E5" in combo else 50 * 1024**3
    rows = [{"reportRefreshDate": refresh, "userPrincipalName": user["userPrincipalName"],
             "displayName": user["displayName"], "isDeleted": False, "deletedDate": None,
             "createdDate": user["createdDateTime"][:10], "lastActivityDate": u.seen(active),
             "itemCount": rnd.randrange(0, 90000), "storageUsedInBytes": _storage(u, rnd.randrange(10**6, quota)),
             "issueWarningQuotaInBytes": quota - 2 * 1024**3,
             "prohibitSendQuotaInBytes": quota - 1024**3, "prohibitSendReceiveQuotaInBytes": quota,
             "deletedItemCount": rnd.randrange(0, 5000), "deletedItemSizeInBytes": rnd.randrange(0, 10**9),
             "deletedItemQuotaInBytes": 30 * 1024**3, "hasArchive": rnd.random() < 0.2,
             "recipientType": "User", "reportPeriod": days}]
    return rows


def _onedrive_usage(u: _UserRows) -> list[dict[str, Any]] | None:
    rnd, user, refresh, days, active, spo = u.rnd, u.user, u.refresh, u.days, u.active, u.spo
    t = u.tenant
    if not spo:
        return None
    local = user["userPrincipalName"].replace("@", "_").replace(".", "_").lower()
    tenant_host = t.initial_domain.split(".")[0]
    files = rnd.randrange(0, 20000)
    rows = [{"reportRefreshDate": refresh,
             "siteUrl": f"https://{tenant_host}-my.sharepoint.com/personal/{local}",
             "ownerDisplayName": user["displayName"], "isDeleted": False,
             "lastActivityDate": u.seen(active), "fileCount": files,
             "activeFileCount": rnd.randrange(0, files + 1),
             "storageUsedInBytes": _storage(u, rnd.randrange(0, 10**11)),
             "storageAllocatedInBytes": 1024**4, "ownerPrincipalName": user["userPrincipalName"],
             "reportPeriod": days}]
    return rows


def _sharepoint_activity(u: _UserRows) -> list[dict[str, Any]] | None:
    rnd, user, refresh, days, active, products, spo = u.rnd, u.user, u.refresh, u.days, u.active, u.products, u.spo
    if not spo:
        return None
    rows = [{"reportRefreshDate": refresh, "userPrincipalName": user["userPrincipalName"],
             "isDeleted": False, "deletedDate": None, "lastActivityDate": u.seen(active),
             "viewedOrEditedFileCount": rnd.randrange(0, 500), "syncedFileCount": rnd.randrange(0, 900),
             "sharedInternallyFileCount": rnd.randrange(0, 40),
             "sharedExternallyFileCount": rnd.randrange(0, 5), "visitedPageCount": rnd.randrange(0, 300),
             "assignedProducts": products, "reportPeriod": days}]
    return rows


def _teams_activity(u: _UserRows) -> list[dict[str, Any]] | None:
    rnd, user, refresh, days, active, products, teams = u.rnd, u.user, u.refresh, u.days, u.active, u.products, u.teams
    t = u.tenant
    if not teams:
        return None
    audio, video, share = (rnd.randrange(0, 40 * 3600) for _ in range(3))
    row = {"reportRefreshDate": refresh, "tenantDisplayName": t.display_name,
           "sharedChannelTenantDisplayNames": 'Fabrikam, Inc.;Northwind "Traders"'
           if rnd.random() < 0.05 else None,
           "userId": user["id"], "userPrincipalName": user["userPrincipalName"],
           "lastActivityDate": u.seen(active), "isDeleted": False, "deletedDate": None,
           "assignedProducts": products}
    for _h, j in _TEAMS_COUNTS:
        row[j] = rnd.randrange(0, 400) if active else 0
    row.update({"audioDuration": _duration(audio), "videoDuration": _duration(video),
                "screenShareDuration": _duration(share), "audioDurationInSeconds": audio,
                "videoDurationInSeconds": video, "screenShareDurationInSeconds": share,
                "hasOtherAction": rnd.random() < 0.3, "isLicensed": True, "reportPeriod": days})
    rows = [row]
    return rows


# report function -> rows of one licensed user (None: the user is not in that report)
_ROW_BUILDERS = {
    "getOffice365ActiveUserDetail": _office365_active,
    "getM365AppUserDetail": _m365_app,
    "getOffice365ActivationsUserDetail": _activations,
    "getEmailActivityUserDetail": _email_activity,
    "getMailboxUsageDetail": _mailbox_usage,
    "getOneDriveUsageAccountDetail": _onedrive_usage,
    "getSharePointActivityUserDetail": _sharepoint_activity,
    "getTeamsUserActivityUserDetail": _teams_activity,
}


_ROW_FIELDS = ("id", "userPrincipalName", "displayName", "createdDateTime")  # what the row builders read


class _Licensed(NamedTuple):
    """A licensed user as the reports see it: index, the fields of _ROW_FIELDS, SKUs assigned, services of
    its assigned plans, and the epoch second of its last sign-in (UsageReports.last_seen)."""

    index: int
    user: dict[str, Any]
    combo: tuple[str, ...]
    services: frozenset[str]
    seen_epoch: int | None


class UsageReports:
    """Typed report rows for one tenant; rows depend on the report, the period and concealment."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self.seed = tenant.seed
        self._lock = threading.Lock()
        self._licensed: tuple[int, list[_Licensed]] | None = None
        # Rendered files by report, period, concealment and what else the rows depend on: a retried download
        # (a large tenant's first one can outlast the client's read timeout) and every later run of the same
        # tenant state answer at once; one build per key, whoever asks first.
        self._files: dict[tuple[Any, ...], bytes] = {}
        self._building: dict[tuple[Any, ...], threading.Lock] = {}

    def _users(self) -> list[_Licensed]:
        """Licensed users with what the rows read of them. Built once per version of the tenant (every report
        of a run reads the same users; building them was most of the simulator's work in a full collection),
        and only those fields kept: whole users with their assignedPlans took 4 GB at 200,000 users."""
        with self._lock:
            version = self.tenant.version
            if self._licensed is None or self._licensed[0] != version:
                self._licensed = (version, self._licensed_users())
            return self._licensed[1]

    def _licensed_users(self) -> list[_Licensed]:
        t = self.tenant
        out = []
        services_seen: dict[frozenset[str], frozenset[str]] = {}
        for i in range(t.user_count):
            core = t._core(i)
            if core.combo:
                combo = tuple(g.sku for g in t.grants(i, core) if g.assigned)
                if combo:
                    user = t.user(i, (*_ROW_FIELDS, "assignedPlans", "signInActivity"))
                    services = frozenset(p["service"] for p in user["assignedPlans"])
                    services = services_seen.setdefault(services, services)
                    out.append(_Licensed(i, {k: user[k] for k in _ROW_FIELDS}, combo, services,
                                         self.last_seen(user)))
        return out

    @staticmethod
    def last_seen(user: dict[str, Any]) -> int | None:
        """Epoch seconds of the user's last sign-in (successful, else the latest attempt), or None.
        Usage follows sign-ins: a user who never signs in has no activity in any report."""
        sia = user.get("signInActivity") or {}
        value = sia.get("lastSuccessfulSignInDateTime") or max(
            (v for v in (sia.get("lastSignInDateTime"), sia.get("lastNonInteractiveSignInDateTime")) if v),
            default=None)
        if not value:
            return None
        return int(dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())

    def rows(self, report: str, period: str | None, concealed: bool) -> list[dict[str, Any]]:
        """Rows keyed by Graph JSON name with typed values (dates as YYYY-MM-DD strings)."""
        columns, takes_period = REPORTS[report]
        days = PERIODS[period] if takes_period and period else 0
        refresh_epoch = self.tenant.now_epoch - 2 * DAY
        build = _ROW_BUILDERS[report]
        out: list[dict[str, Any]] = []
        for licensed in self._users():
            rows = build(self._user_rows(report, period, days, refresh_epoch, licensed))
            if rows is None:
                continue
            for row in rows:
                if concealed:
                    for _h, j, kind in columns:
                        if kind in ("upn", "name", "site"):
                            row[j] = conceal(row[j])
                        elif kind == "userid":
                            row[j] = ZERO_GUID
                out.append({j: row[j] for _h, j, _k in columns})
        return out

    def _user_rows(self, report: str, period: str | None, days: int, refresh_epoch: int,
                   licensed: _Licensed) -> _UserRows:
        """What the row builders need about a licensed user, with the user's random draws for the report."""
        i, user, combo, services, seen_epoch = licensed
        refresh = iso_date(refresh_epoch // DAY)
        rnd = random.Random(int.from_bytes(digest(self.seed, f"usage:{report}:{period}:{i}"), "big"))
        # Reports keep about 180 days of activity; older users show no date.
        active = seen_epoch is not None and refresh_epoch - seen_epoch < HORIZON_DAYS * DAY
        products = [PRODUCT_NAMES[k] for k in combo]
        base = {"reportRefreshDate": refresh, "userPrincipalName": user["userPrincipalName"],
                "displayName": user["displayName"], "isDeleted": False, "deletedDate": None,
                "assignedProducts": products, "reportPeriod": days}
        # Test data shaping (TenantSpec.frontline_share): the same users in every report and period.
        share = int.from_bytes(digest(self.seed, f"frontline:{i}")[:4], "big") / 2**32
        frontline = "E3" in combo and share < self.tenant.frontline_share
        return _UserRows(self.tenant, refresh_epoch, refresh, days, user, combo, services, rnd, seen_epoch, active,
                         products, base, "exchange" in services, "SharePoint" in services, "TeamspaceAPI" in services,
                         frontline)

    def download(self, report: str, period: str | None, concealed: bool) -> bytes:
        """The report's file as the download host serves it, built once per state of the tenant (its version,
        its clock and the test data shaping the rows read)."""
        t = self.tenant
        state = (t.version, t.now_epoch, t.frontline_share)
        key = (report, period, concealed, state)
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        with building:
            data = self._files.get(key)
            if data is None:
                data = self.render(report, self.rows(report, period, concealed))
                with self._lock:
                    for old in [k for k in self._files if k[3] != state]:
                        del self._files[old]
                        self._building.pop(old, None)
                    self._files[key] = data
            return data

    def render(self, report: str, rows: list[dict[str, Any]]) -> bytes:
        """The CSV as downloaded: BOM, header line, every field quoted, CRLF line ends."""
        columns, _ = REPORTS[report]
        buffer = io.StringIO()
        writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writerow([h for h, _j, _k in columns])
        for row in rows:
            cells = []
            for _h, j, kind in columns:
                value = row[j]
                if value is None:
                    cells.append("")
                elif kind == "bool":
                    cells.append("True" if value else "False")
                elif kind == "yesno":
                    cells.append("Yes" if value else "No")
                elif kind == "products":
                    cells.append("+".join(value))
                else:
                    cells.append(str(value))
            writer.writerow(cells)
        return b"\xef\xbb\xbf" + buffer.getvalue().encode("utf-8")
