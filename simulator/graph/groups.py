"""Groups (§8 /groups) and their members, transitive members and owners (api/group-list-members.md,
api/group-list-owners.md)."""

from __future__ import annotations

from typing import Any

from ..object_types import SP_TYPE
from ..web import Request, Response
from .area import Area
from .protocol import GraphError, directory_objects, not_found, query_options, require

GROUP_ROLES = frozenset({"GroupMember.Read.All", "Group.Read.All", "Directory.Read.All", "GroupMember.ReadWrite.All",
                         "Group.ReadWrite.All", "Directory.ReadWrite.All"})


class GroupsArea(Area):
    """/groups and /groups/{id}/{members, transitiveMembers, owners}."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        # Members without service principals, per (group index, relation): computed once per group, since the
        # largest groups have every user as a member.
        self._without_sps: dict[tuple[int, str], list[tuple[str, str]]] = {}
        self._version = 0

    def route(self, req: Request, claims: dict[str, Any], raw: list[str], rest: list[str]) -> Response | None:
        if rest == ["groups"]:
            query_options(req, {"$select", "$top", "$skiptoken"}, "groups")
            require(claims, GROUP_ROLES)
            return self.pager.list_page(req, self.sim.inventory.groups, "groups", 100, 999, type_name="group")
        if len(rest) == 3 and rest[0] == "groups" and rest[2] in ("members", "transitivemembers", "owners"):
            return self._relation(req, claims, raw, rest)
        return None

    def _relation(self, req: Request, claims: dict[str, Any], raw: list[str], rest: list[str]) -> Response:
        inv = self.sim.inventory
        query_options(req, {"$select", "$top", "$skiptoken"}, rest[2])
        require(claims, GROUP_ROLES)
        index = inv.group_index(raw[1])
        if index is None:
            raise not_found(raw[1])
        if rest[2] == "owners":
            # api/group-list-owners.md: "service principals are not listed as group owners" in v1.0.
            pairs = [p for p in inv.apps.group_owners[index] if p[0] != SP_TYPE]
        else:
            # api/group-list-members.md: hidden-membership groups need Member.Read.Hidden as well. What Graph does
            # without it is not documented: users report that it leaves the members out silently, a 200 with an
            # empty list (microsoft-graph-docs #12552, #12285; msgraph-sdk-dotnet #1255), the default here;
            # TenantSpec.hidden_membership_refused answers 403 Authorization_RequestDenied instead. And "This API
            # has a known issue where service principals are not listed as group members in v1.0" (also
            # concepts/known-issues.md). transitiveMembers likewise [UNVERIFIED for transitiveMembers].
            if inv.groups()[index]["visibility"] == "HiddenMembership" and \
                    "Member.Read.Hidden" not in (claims.get("roles") or ()):
                if self.sim.spec.hidden_membership_refused:
                    raise GraphError(403, "Authorization_RequestDenied",
                                     "Insufficient privileges to complete the operation.")
                return self.pager.list_page(req, list, "directoryObjects", 100, 999, odata_type=True)
            if self._version != inv._groups.version:  # changed since (simulator/changes.py)
                self._without_sps.clear()
                self._version = inv._groups.version
            cache = self._without_sps
            pairs = cache.get((index, rest[2]))
            if pairs is None:  # computed once per group: the largest have every user as a member
                members = inv.direct_members(index) if rest[2] == "members" else inv.transitive_members(index)
                pairs = cache[(index, rest[2])] = [p for p in members if p[0] != SP_TYPE]
        return self.pager.list_page(req, lambda: pairs, "directoryObjects", 100, 999,
                                    render=directory_objects(inv, req), odata_type=True)
