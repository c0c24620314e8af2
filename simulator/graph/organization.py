"""The organization (§3 /organization), its subscribed SKUs (/subscribedSkus) and company subscriptions
(/directory/subscriptions)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

from ..web import Request, Response
from .area import Area
from .protocol import METADATA, ok, query_options, require, select_properties

ORG_ROLES = frozenset(
    {"Organization.Read.All", "Directory.Read.All", "Organization.ReadWrite.All", "Directory.ReadWrite.All"}
)
# §3: /directory/subscriptions. LicenseAssignment.Read.All is listed by newer docs [UNVERIFIED].
SUBSCRIPTION_ROLES = ORG_ROLES | {"LicenseAssignment.Read.All"}
# §3: /subscribedSkus. The published table (learn.microsoft.com/graph/api/subscribedsku-list, v1.0) names
# LicenseAssignment.Read.All as the least privileged application permission; Organization.Read.All,
# Directory.Read.All and their ReadWrite forms are higher (older copies listed only those).
SKU_ROLES = ORG_ROLES | {"LicenseAssignment.Read.All"}


class OrganizationArea(Area):
    """/organization, /subscribedSkus and /directory/subscriptions."""

    def route(self, req: Request, claims: dict[str, Any], raw: list[str], rest: list[str]) -> Response | None:
        if rest == ["directory", "subscriptions"]:
            query_options(req, {"$select", "$top", "$skiptoken"}, "subscriptions")
            require(claims, SUBSCRIPTION_ROLES)
            return self.pager.list_page(req, self.sim.inventory.subscriptions, "directory/subscriptions", 100, 999)
        if rest == ["organization"]:
            return self._organization(req, claims)
        if rest == ["subscribedskus"]:
            return self._subscribed_skus(req, claims)
        return None

    # Property names by lower-case name; lazy because SKUs need the tenant's UPN index.
    @cached_property
    def org_properties(self) -> dict[str, str]:
        return {p.lower(): p for p in self.sim.tenant.organization()}

    @cached_property
    def sku_properties(self) -> dict[str, str]:
        return {p.lower(): p for p in self.sim.tenant.subscribed_skus()[0]}

    def _organization(self, req: Request, claims: dict[str, Any]) -> Response:
        return self._collection(req, claims, "organization", "organization", lambda: [self.sim.tenant.organization()],
                                lambda: self.org_properties, ORG_ROLES)

    def _subscribed_skus(self, req: Request, claims: dict[str, Any]) -> Response:
        return self._collection(req, claims, "subscribedSkus", "subscribedSku", self.sim.tenant.subscribed_skus,
                                lambda: self.sku_properties, SKU_ROLES)

    def _collection(self, req: Request, claims: dict[str, Any], name: str, type_name: str,
                    items: Callable[[], list[dict[str, Any]]], known: Callable[[], dict[str, str]],
                    roles: frozenset[str]) -> Response:
        """/organization or /subscribedSkus: every object, ``$select`` the only option (the id is always kept)."""
        options = query_options(req, {"$select"}, name)
        require(claims, roles)
        objects = items()
        context = f"{METADATA}#{name}"
        if "$select" in options:
            props = select_properties(options["$select"], known(), type_name)
            objects = [{"id": o["id"], **{p: o[p] for p in props}} for o in objects]
            context += f"({options['$select']})"
        return ok({"@odata.context": context, "value": objects})
