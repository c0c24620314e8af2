"""The Microsoft 365 Copilot usage report (beta): one row per user holding a Microsoft 365 Copilot licence.

Source: learn.microsoft.com/microsoft-365/copilot/extensibility/api/admin-settings/reports/
copilotreportroot-getmicrosoft365copilotusageuserdetail (beta only: "APIs under the /beta version are subject to
change"): GET /beta/copilot/reports/getMicrosoft365CopilotUsageUserDetail(period='D30'), Reports.Read.All,
"only returns usage data for users who have a Microsoft 365 Copilot license"; its JSON sample has
reportRefreshDate, userPrincipalName, displayName, lastActivityDate, a last activity date per app (""
when none) and copilotActivityUserDetailsByPeriod [{reportPeriod}], paged with @odata.nextLink. Names are
concealed like the other usage reports when the tenant conceals them.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from .seeded import DAY, digest, iso_date
from .usage import HORIZON_DAYS, PERIODS, UsageReports, conceal

if TYPE_CHECKING:
    from .tenant import Tenant

COPILOT_SKU_ID = "639dec6b-bb19-468b-871c-c5c441c4b0cb"  # Microsoft_365_Copilot
APPS = ("copilotChat", "microsoftTeamsCopilot", "wordCopilot", "excelCopilot", "powerPointCopilot", "outlookCopilot",
        "oneNoteCopilot", "loopCopilot")
ACTIVE_SHARE = 0.6  # test data shaping: of the Copilot holders who sign in, this share used Copilot in the period


def rows(tenant: Tenant, period: str, concealed: bool) -> list[dict[str, Any]]:
    """The report's rows for a period (D7, D30, D90, D180), in user order."""
    days = PERIODS[period]
    refresh_epoch = tenant.now_epoch - 2 * DAY
    out = []
    for user in tenant.users():
        if not any(lic["skuId"] == COPILOT_SKU_ID for lic in user["assignedLicenses"]):
            continue
        rnd = random.Random(int.from_bytes(digest(tenant.seed, f"copilot-usage:{period}:{user['id']}"), "big"))
        seen = UsageReports.last_seen(user)
        recent = seen is not None and refresh_epoch - seen < min(days, HORIZON_DAYS) * DAY
        used = recent and rnd.random() < ACTIVE_SHARE
        dates = {f"{app}LastActivityDate": (iso_date((refresh_epoch - rnd.randrange(0, days) * DAY) // DAY)
                                            if used and rnd.random() < 0.7 else "") for app in APPS}
        if used and not any(dates.values()):
            dates["copilotChatLastActivityDate"] = iso_date(refresh_epoch // DAY)
        last = max((d for d in dates.values() if d), default="")
        upn, name = user["userPrincipalName"], user["displayName"]
        out.append({"reportRefreshDate": iso_date(refresh_epoch // DAY),
                    "userPrincipalName": conceal(upn) if concealed else upn,
                    "displayName": conceal(name) if concealed else name,
                    "lastActivityDate": last, **dates,
                    "copilotActivityUserDetailsByPeriod": [{"reportPeriod": days}]})
    return out
