"""Directory roles (§9): role definitions, role assignments (with ``$expand``) and the PIM schedules of
eligible and active assignments."""

from __future__ import annotations

from typing import Any

from ..web import Request, Response
from .area import Area
from .protocol import GraphError, query_options, require

ROLE_MANAGEMENT_ROLES = frozenset({"RoleManagement.Read.Directory", "RoleManagement.Read.All", "Directory.Read.All",
                                   "RoleManagement.ReadWrite.Directory", "Directory.ReadWrite.All"})


class RolesArea(Area):
    """/roleManagement/directory/{roleDefinitions, roleAssignments, roleEligibilitySchedules,
    roleAssignmentSchedules}."""

    def route(self, req: Request, claims: dict[str, Any], raw: list[str], rest: list[str]) -> Response | None:
        if rest[:2] != ["rolemanagement", "directory"]:
            return None
        if rest[2:] == ["roledefinitions"]:
            query_options(req, {"$select", "$top", "$skiptoken"}, "roleDefinitions")
            require(claims, ROLE_MANAGEMENT_ROLES)
            return self.pager.list_page(req, self.sim.inventory.role_definitions,
                                        "roleManagement/directory/roleDefinitions", 100, 999)
        if rest[2:] == ["roleassignments"]:
            return self._role_assignments(req, claims)
        if rest[2:] in (["roleeligibilityschedules"], ["roleassignmentschedules"]):
            return self._schedules(req, claims, rest[2])
        return None


    def _role_assignments(self, req: Request, claims: dict[str, Any]) -> Response:
        options = query_options(req, {"$select", "$top", "$skiptoken", "$expand"}, "roleAssignments")
        require(claims, ROLE_MANAGEMENT_ROLES)
        inv = self.sim.inventory
        expand = [e.strip().lower() for e in options.get("$expand", "").split(",") if e.strip()]
        for e in expand:
            if e not in ("principal", "roledefinition"):
                raise GraphError(400, "BadRequest", f"Could not find a property named '{e}' on type "
                                 "'microsoft.graph.unifiedRoleAssignment'.")
        definitions = {d["id"]: d for d in inv.role_definitions()}

        def render(pair: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
            assignment, principal = pair
            out = dict(assignment)
            if "principal" in expand:
                out["principal"] = dict(principal)
            if "roledefinition" in expand:
                out["roleDefinition"] = definitions[assignment["roleDefinitionId"]]
            return out

        context = "roleManagement/directory/roleAssignments"
        if expand:
            names = ("principal()" if e == "principal" else "roleDefinition()" for e in expand)
            context += "(" + ",".join(names) + ")"
        return self.pager.list_page(req, inv.role_assignments, context, 100, 999, render=render)

    def _schedules(self, req: Request, claims: dict[str, Any], which: str) -> Response:
        """PIM schedules (api/rbacapplication-list-roleeligibilityschedules.md, -roleassignmentschedules.md):
        $select, $filter and $expand, no $top; page size not documented [UNVERIFIED: 100]. Needs Entra ID P2:
        without it the tenant gets AadPremiumLicenseRequired [code observed in third-party reports; status
        UNVERIFIED: 403 here]."""
        query_options(req, {"$select", "$skiptoken"}, which)
        eligibility = which == "roleeligibilityschedules"
        allowed = frozenset({"RoleManagement.Read.Directory", "RoleManagement.Read.All",
                             "RoleManagement.ReadWrite.Directory"} | (
            {"RoleEligibilitySchedule.Read.Directory", "RoleEligibilitySchedule.ReadWrite.Directory"} if eligibility
            else {"RoleAssignmentSchedule.Read.Directory", "RoleAssignmentSchedule.ReadWrite.Directory"}))
        require(claims, allowed)
        spec, apps = self.sim.spec, self.sim.inventory.apps
        held = set(claims.get("roles") or ()) & allowed
        if not eligibility and spec.assignment_schedule_role_refused and \
                held <= {"RoleAssignmentSchedule.Read.Directory"}:
            # The generated permissions table (includes/permissions/rbacapplication-list-roleassignmentschedules-
            # permissions.md) lists RoleManagement.* only for applications; a rendering of the learn page lists
            # RoleAssignmentSchedule.Read.Directory as least privileged. Which one Graph enforces is not verified:
            # an option (TenantSpec.assignment_schedule_role_refused). The message follows the PIM refusals
            # reported in microsoft-graph-docs #19139 and #22292 ("PermissionScopeNotGranted").
            raise GraphError(403, "UnknownError", '{"errorCode":"PermissionScopeNotGranted","message":"Authorization '
                             'failed due to missing permission scope RoleManagement.Read.Directory,'
                             'RoleManagement.Read.All,RoleManagement.ReadWrite.Directory."}')
        if not (spec.premium and spec.p2):
            raise GraphError(403, "AadPremiumLicenseRequired", "The tenant needs an AAD Premium 2 license.")
        items = apps.eligibility_schedules if eligibility else apps.assignment_schedules
        name = "roleEligibilitySchedules" if eligibility else "roleAssignmentSchedules"
        return self.pager.list_page(req, lambda: items, f"roleManagement/directory/{name}", 100, 100)
