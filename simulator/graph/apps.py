"""Applications and service principals (api/application-list.md, api/serviceprincipal-list.md), their
owners, memberships, owned objects and app role assignments, and delegated permission grants.
"""

from __future__ import annotations

from typing import Any

from ..object_types import GROUP_TYPE
from ..web import Request, Response
from .area import Area
from .protocol import directory_objects, not_found, query_options, require

APPLICATION_ROLES = frozenset({"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All",
                               "Directory.ReadWrite.All", "Application.ReadWrite.OwnedBy"})
GRANT_ROLES = frozenset({"DelegatedPermissionGrant.Read.All", "Directory.Read.All",
                         "DelegatedPermissionGrant.ReadWrite.All", "Directory.ReadWrite.All"})


class AppsArea(Area):
    """/applications, /servicePrincipals (+ /{id}/owners, memberOf, ownedObjects, appRoleAssignedTo) and
    /oauth2PermissionGrants."""

    def route(self, req: Request, claims: dict[str, Any], raw: list[str], rest: list[str]) -> Response | None:
        if rest in (["applications"], ["serviceprincipals"]):
            return self._objects(req, claims, rest[0])
        if len(rest) == 3 and rest[0] in ("applications", "serviceprincipals"):
            return self._relation(req, claims, raw, rest)
        if rest == ["oauth2permissiongrants"]:
            # api/oauth2permissiongrant-list.md: "supports the $filter (eq) OData query parameter" only; the page
            # size is not documented [UNVERIFIED: 100]. Permissions: see connector/catalog/datasets.py GRANT_READ.
            query_options(req, {"$skiptoken"}, "oauth2PermissionGrants")
            require(claims, GRANT_ROLES)
            apps = self.sim.inventory.apps
            return self.pager.list_page(req, lambda: apps.grants, "oauth2PermissionGrants", 100, 100)
        return None

    def _relation(self, req: Request, claims: dict[str, Any], raw: list[str], rest: list[str]) -> Response | None:
        """/applications/{id}/owners, /servicePrincipals/{id}/{owners, memberOf, ownedObjects, appRoleAssignedTo}."""
        inv = self.sim.inventory
        apps = inv.apps
        query_options(req, {"$select", "$top", "$skiptoken"}, rest[2])
        require(claims, APPLICATION_ROLES)
        kind = "application" if rest[0] == "applications" else "servicePrincipal"
        owner = apps.application_by_id(raw[1]) if kind == "application" else apps.service_principal_by_id(raw[1])
        if owner is None:
            raise not_found(raw[1])
        obj_id = owner["id"]
        if rest[2] == "owners":
            pairs = apps.owners.get(obj_id, [])
        elif kind == "servicePrincipal" and rest[2] == "memberof":
            # api/serviceprincipal-list-memberof.md: groups and directory roles, direct only; 100 / 999.
            pairs = [(GROUP_TYPE, g) for g in apps.member_of.get(obj_id, [])]
        elif kind == "servicePrincipal" and rest[2] == "ownedobjects":
            pairs = apps.owned_objects.get(obj_id, [])  # api/serviceprincipal-list-ownedobjects.md
        elif kind == "servicePrincipal" and rest[2] == "approleassignedto":
            # api/serviceprincipal-list-approleassignedto.md; page sizes not documented [UNVERIFIED 100/999]
            items = apps.app_role_assignments.get(obj_id, [])
            return self.pager.list_page(req, lambda: items, f"servicePrincipals('{obj_id}')/appRoleAssignedTo", 100,
                                        999)
        else:
            return None
        return self.pager.list_page(req, lambda: pairs, "directoryObjects", 100, 999,
                                    render=directory_objects(inv, req), odata_type=True)

    def _objects(self, req: Request, claims: dict[str, Any], name: str) -> Response:
        """/applications and /servicePrincipals: default 100, $top up to 999 (api/application-list.md,
        serviceprincipal-list.md). keyCredentials' `key` only with $select=keyCredentials, and such requests are
        limited to 150 a minute per tenant (same pages)."""
        apps = self.sim.inventory.apps
        options = query_options(req, {"$select", "$top", "$skiptoken"}, name)
        require(claims, APPLICATION_ROLES)
        select = [p.strip().lower() for p in options.get("$select", "").split(",") if p.strip()]
        with_key = "keycredentials" in select
        if with_key:
            self.limits.key_select()
        source = apps.applications if name == "applications" else apps.service_principals

        def render(obj: dict[str, Any]) -> dict[str, Any]:
            out = {k: v for k, v in obj.items() if not k.startswith("_")}
            if not with_key:
                out["keyCredentials"] = [{**c, "key": None} for c in obj["keyCredentials"]]
            return out

        context = "applications" if name == "applications" else "servicePrincipals"
        return self.pager.list_page(req, lambda: source, context, 100, 999, render=render,
                                    type_name="application" if name == "applications" else "servicePrincipal")
