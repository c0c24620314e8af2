"""Reports: Microsoft 365 usage reports (§4: a 302 to a pre-authenticated download, 14 requests per
10 minutes per report), the tenant's report settings (concealed names) and authentication-method
registration details (§5)."""

from __future__ import annotations

import re
from typing import Any

from ..usage import PERIODS, REPORT_NAMES, REPORTS
from ..web import Request, Response
from .area import Area
from .protocol import METADATA, GraphError, ok, query_options, require, require_audit_log, require_premium

REPORT_ROLES = frozenset({"Reports.Read.All"})
REPORT_SETTINGS_ROLES = frozenset({"ReportSettings.Read.All", "ReportSettings.ReadWrite.All"})
_REPORT_CALL = re.compile(r"^(?:microsoft\.graph\.)?(get[A-Za-z0-9]+)(?:\((.*)\))?$")


class ReportsArea(Area):
    """/reports/getX(...), /reports/authenticationMethods/userRegistrationDetails, /admin/reportSettings."""

    def route(self, req: Request, claims: dict[str, Any], raw: list[str], rest: list[str]) -> Response | None:
        if rest == ["reports", "authenticationmethods", "userregistrationdetails"]:
            return self._registration_details(req, claims)
        if rest == ["admin", "reportsettings"]:
            return self._report_settings(req, claims)
        if len(rest) == 2 and rest[0] == "reports" and _REPORT_CALL.match(raw[1]):
            return self._report(req, claims, raw[1])
        return None

    def _registration_details(self, req: Request, claims: dict[str, Any]) -> Response:
        """userRegistrationDetails (§5): AuditLog.Read.All, a premium tenant, the identity reports limit."""

        query_options(req, {"$select", "$top", "$skiptoken", "$filter", "$orderby"}, "userRegistrationDetails")
        require_audit_log(claims)
        require_premium(self.sim.spec.premium)
        directory_read = {"Directory.Read.All", "Directory.ReadWrite.All"} & set(claims.get("roles") or ())
        if self.sim.spec.registration_needs_directory_read and not directory_read:
            # graph-facts §5/§11 [ISSUE microsoft-graph-docs #9269, #12911, #2789]: the premium-licence check
            # behind these reports failed until the app had Directory.Read.All.
            raise GraphError(403, "Authentication_ApplicationHasNoDirectoryReadAccess",
                             "Failed to do premium license check from ADGraph")
        self.limits.identity_report()
        mode = self.sim.spec.registration_top  # §5: $top is not documented here (TenantSpec.registration_top)
        if mode == "refuse" and any(k.lower() == "$top" for k, _ in req.pairs):
            raise GraphError(400, "BadRequest", "Query option 'Top' is not allowed for this resource.")
        return self.pager.list_page(req, self.sim.inventory.registration_details,
                                    "reports/authenticationMethods/userRegistrationDetails", 100,
                                    999 if mode == "honour" else 100, ignore_top=mode == "ignore")

    def _report_settings(self, req: Request, claims: dict[str, Any]) -> Response:
        query_options(req, {"$select"}, "reportSettings")
        require(claims, REPORT_SETTINGS_ROLES)
        entity = {"@odata.type": "#microsoft.graph.adminReportSettings",
                  "displayConcealedNames": self.sim.spec.report_names_concealed}
        if self.sim.spec.report_settings_wrapped:  # the v1.0 doc sample's shape
            return ok({"value": entity})
        return ok({"@odata.context": f"{METADATA}#admin/reportSettings/$entity", "id": "default",
                   "displayConcealedNames": self.sim.spec.report_names_concealed})

    def _report(self, req: Request, claims: dict[str, Any], segment: str) -> Response:
        """§4: 302 to a pre-authenticated download URL on another host; 14 requests per 10 min per report."""
        match = _REPORT_CALL.match(segment)
        assert match is not None
        name = REPORT_NAMES.get(match.group(1).lower())
        if name is None:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{match.group(1)}'.")
        _columns, takes_period = REPORTS[name]
        args = (match.group(2) or "").strip()
        period = None
        if takes_period:
            found = re.fullmatch(r"period\s*=\s*'([^']*)'", args)
            if not found:
                raise GraphError(400, "BadRequest", f"The parameter 'period' is required for {name}.")
            period = found.group(1)
            if period not in PERIODS:
                raise GraphError(400, "BadRequest", f"Invalid value '{period}' for parameter 'period'. Supported "
                                 "values are D7, D30, D90 and D180.")
        elif args:
            raise GraphError(400, "BadRequest", f"{name} takes no parameters.")
        query_options(req, {"$format"}, name)
        require(claims, REPORT_ROLES, "S2SUnauthorized", "Invalid permissions.")
        self.limits.usage_report(name)
        url = self.sim.register_download(name, period, self.sim.spec.report_names_concealed)
        return Response(302, b"", {"Content-Type": "text/plain", "Location": url})
