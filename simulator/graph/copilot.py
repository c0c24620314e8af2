"""/beta/copilot/reports/getMicrosoft365CopilotUsageUserDetail(period='D30'): the Copilot usage report, which
Microsoft documents under /beta only (simulator/copilot.py has the source). JSON pages, Reports.Read.All; the
usage reports' request limit is not applied to it (its own is not documented)."""

from __future__ import annotations

import re
from typing import Any

from ..copilot import rows
from ..usage import PERIODS
from ..web import Request, Response
from .area import Area
from .protocol import GraphError, require

REPORT_ROLES = frozenset({"Reports.Read.All"})
_CALL = re.compile(r"^getMicrosoft365CopilotUsageUserDetail\(period='([^']*)'\)$", re.IGNORECASE)
PAGE = 200  # rows per page [UNVERIFIED: the page size is not documented; the sample pages with $skiptoken]


class CopilotArea(Area):
    """The one /beta path the simulator answers."""

    def route(self, req: Request, claims: dict[str, Any], raw: list[str], rest: list[str]) -> Response | None:
        if len(raw) != 3 or rest[:2] != ["copilot", "reports"]:
            return None
        match = _CALL.match(raw[2])
        if not match:
            return None
        require(claims, REPORT_ROLES)
        period = match.group(1).upper()
        if period not in PERIODS:
            raise GraphError(400, "BadRequest", f"Invalid period '{match.group(1)}'. Use D7, D30, D90 or D180.")
        concealed = self.sim.spec.report_names_concealed
        return self.pager.list_page(req, lambda: rows(self.sim.tenant, period, concealed),
                                    "copilot/reports/getMicrosoft365CopilotUsageUserDetail", PAGE, PAGE)
