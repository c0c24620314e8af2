"""Changes to the simulated tenant after start (users created, deleted, renamed, relicensed; group
memberships changed; groups renamed), recorded in order so delta queries (simulator/graph/delta.py) report
them as Graph does (concepts/delta-query-overview.md, concepts/delta-query-users.md,
concepts/delta-query-groups.md).

A test or benchmark calls these between collections: ``sim.changes.rename_user(...)`` or
``sim.changes.day_of_changes(share=0.01)``. The log holds one entry per changed object (its last change) and
one per membership change, so its memory grows with the number of changes, not with the tenant.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .licensing import LICENSE_GROUP_SKUS, LICENSE_GROUPS, group_licence_change
from .object_types import SP_TYPE, USER_TYPE
from .seeded import iso

if TYPE_CHECKING:
    from .inventory import Inventory
    from .tenant import Tenant

LICENCE_PROPERTIES = ("assignedLicenses", "licenseAssignmentStates", "assignedPlans")


@dataclass
class ChangeLog:
    """What changed and when (a sequence number per change). `objects[collection][id]` is the last change of an
    object: "upsert" (created or changed), "changed" (soft-deleted: restorable for 30 days, reported as
    `@removed` with reason "changed") or "deleted" (deleted for good: reason "deleted"). `members[group id]`
    lists membership changes as (seq, @odata.type, member id, removed)."""

    seq: int = 0
    objects: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)
    members: dict[str, list[tuple[int, str, str, bool]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def object(self, collection: str, oid: str, state: str = "upsert") -> None:
        with self.lock:
            self.seq += 1
            self.objects.setdefault(collection, {})[oid] = (self.seq, state)

    def member(self, group_id: str, odata_type: str, member_id: str, removed: bool) -> None:
        with self.lock:
            self.seq += 1
            self.members.setdefault(group_id, []).append((self.seq, odata_type, member_id, removed))

    def since(self, collection: str, seq: int, until: int, members: bool = False) -> list[tuple[str, str]]:
        """(id, state) of the objects changed after `seq` up to `until`, in the order of their last change; with
        `members` (groups whose membership is tracked) also those whose membership changed (state "upsert")."""
        with self.lock:
            found = {oid: (s, state) for oid, (s, state) in self.objects.get(collection, {}).items()
                     if seq < s <= until}
            if members:
                for gid, changes in self.members.items():
                    last = max((s for s, *_ in changes if seq < s <= until), default=0)
                    if last and gid not in found:
                        found[gid] = (last, "upsert")
        return [(oid, state) for oid, (_s, state) in sorted(found.items(), key=lambda kv: kv[1][0])]

    def member_changes(self, group_id: str, seq: int, until: int) -> list[tuple[str, str, bool]]:
        """The net membership changes of a group after `seq`: (@odata.type, member id, removed), one per member."""
        with self.lock:
            net: dict[str, tuple[str, bool]] = {}
            for s, odata_type, mid, removed in self.members.get(group_id, ()):
                if seq < s <= until:
                    net[mid] = (odata_type, removed)
        return [(t, mid, removed) for mid, (t, removed) in net.items()]


class TenantChanges:
    """The changes an admin makes between two collections, applied to the simulated tenant and logged."""

    def __init__(self, tenant: Tenant, inventory: Inventory) -> None:
        self.tenant, self.inventory = tenant, inventory
        self.log = ChangeLog()
        self._gone: set[int] = set()  # users deleted (never created again)
        self._groups_of: dict[str, set[int]] | None = None

    # ------------------------------------------------------------------ users

    def _index(self, user_id: str) -> int:
        index = self.tenant.index_of(user_id)
        if index is None:
            raise KeyError(f"no user {user_id}")
        return index

    def add_user(self) -> str:
        """Create the next pending user (TenantSpec.pending_users); its id."""
        tenant = self.tenant
        index = next((i for i in range(tenant.user_count, tenant.index.user_count) if not tenant.exists(i)
                      and i not in self._gone), None)
        if index is None:
            raise RuntimeError("no pending user left to create: raise TenantSpec.pending_users")
        tenant.index.create(index)
        uid = tenant.user_id(index)
        self.log.object("users", uid)
        return uid

    def remove_user(self, user_id: str, permanently: bool = False) -> None:
        """Delete a user (soft unless `permanently`); Entra removes it from its groups as well."""
        index = self._index(user_id)
        self.tenant.delete(index)
        self._gone.add(index)
        self.log.object("users", user_id, "deleted" if permanently else "changed")
        groups = self.inventory._groups
        # Entra removes the user from its groups. Whether /groups/delta then lists the user `@removed` in those
        # groups' `members@delta` is not documented (a Microsoft Q&A answer says yes, a Stack Exchange question
        # no) [UNVERIFIED]: the reading least favourable to the connector, not logged as a membership change.
        for g in sorted(self._member_of().get(user_id, ())):
            self.remove_member(groups.groups()[g]["id"], user_id, logged=False)

    def _member_of(self) -> dict[str, set[int]]:
        """Member id -> indexes of the groups it is a direct member of; built once, then kept up to date."""
        if self._groups_of is None:
            groups = self.inventory._groups
            found: dict[str, set[int]] = {}
            for g in range(len(groups.groups())):
                for _t, mid in groups.direct_members(g):
                    found.setdefault(mid, set()).add(g)
            self._groups_of = found
        return self._groups_of

    def rename_user(self, user_id: str, upn: str | None = None, display_name: str | None = None) -> None:
        index = self._index(user_id)
        if upn is not None:
            self.tenant.rename(index, upn)
        if display_name is not None:
            self.set_user(user_id, displayName=display_name)
        else:
            self.log.object("users", user_id)

    def set_user(self, user_id: str, **properties: Any) -> None:
        """Change properties of a user (Graph names), e.g. jobTitle or department."""
        index = self._index(user_id)
        self.tenant.overrides.setdefault(index, {}).update(properties)
        self.tenant.index.touch()
        self.log.object("users", user_id)

    def change_licences(self, user_id: str, like: str | None = None) -> None:
        """Give a user the licences of user `like` (assignedLicenses, licenseAssignmentStates and assignedPlans
        as that user holds them), or none."""
        tenant = self.tenant
        props = ({p: [] for p in LICENCE_PROPERTIES} if like is None
                 else tenant.user(self._index(like), LICENCE_PROPERTIES))
        self.set_user(user_id, **props)

    # ------------------------------------------------------------------ groups

    def add_member(self, group_id: str, member_id: str, odata_type: str = USER_TYPE) -> None:
        groups = self.inventory._groups
        index = groups.group_index(group_id)
        if index is None:
            raise KeyError(f"no group {group_id}")
        members = groups.direct_members(index)
        if all(mid != member_id for _t, mid in members):
            members.append((odata_type, member_id))
            groups.version += 1
            self._service_principals_changed(odata_type)
            self._group_licensing(index, odata_type, member_id, joined=True)
            if self._groups_of is not None:
                self._groups_of.setdefault(member_id, set()).add(index)
            self.log.member(group_id, odata_type, member_id, False)

    def remove_member(self, group_id: str, member_id: str, logged: bool = True) -> None:
        groups = self.inventory._groups
        index = groups.group_index(group_id)
        if index is None:
            raise KeyError(f"no group {group_id}")
        members = groups.direct_members(index)
        for pos, (odata_type, mid) in enumerate(members):
            if mid == member_id:
                del members[pos]
                groups.version += 1
                self._service_principals_changed(odata_type)
                self._group_licensing(index, odata_type, member_id, joined=False)
                if self._groups_of is not None:
                    self._groups_of.get(member_id, set()).discard(index)
                if logged:
                    self.log.member(group_id, odata_type, member_id, True)
                return

    def _group_licensing(self, group: int, odata_type: str, member_id: str, joined: bool) -> None:
        """A user joining or leaving a licence group gets or loses its licences (simulator/licensing.py
        group_licence_change). Not logged as a user change: user-delta.md says changes to licenseAssignmentStates
        are not tracked; whether a group-based change of assignedLicenses and assignedPlans makes the user appear
        in /users/delta is not documented [UNVERIFIED]: the least favourable reading, it does not."""
        tenant = self.tenant
        gid = self.inventory._groups.groups()[group]["id"]
        if odata_type != USER_TYPE or gid not in LICENSE_GROUPS:
            return
        sku_key = LICENSE_GROUP_SKUS[LICENSE_GROUPS.index(gid)]
        index = tenant.index_of(member_id)
        if sku_key not in tenant.licences.sku_by_key or index is None or not tenant.exists(index):
            return
        held = tenant.user(index, LICENCE_PROPERTIES)
        changed = group_licence_change(tenant.licences, held, gid, sku_key, joined, iso(tenant.now_epoch))
        tenant.overrides.setdefault(index, {}).update(changed)
        tenant.index.touch()

    def _service_principals_changed(self, odata_type: str) -> None:
        """/servicePrincipals/{id}/memberOf is computed once from the memberships: again after a change."""
        if odata_type == SP_TYPE:
            self.inventory.apps.__dict__.pop("member_of", None)

    def rename_group(self, group_id: str, display_name: str) -> None:
        self.set_group(group_id, displayName=display_name)

    def set_group(self, group_id: str, **properties: Any) -> None:
        """Change properties of a group (Graph names), e.g. displayName or visibility."""
        groups = self.inventory._groups
        index = groups.group_index(group_id)
        if index is None:
            raise KeyError(f"no group {group_id}")
        groups.groups()[index].update(properties)
        groups.version += 1
        self.log.object("groups", group_id)

    # ------------------------------------------------------------------ devices, apps, grants

    def _listed(self, collection: str) -> list[dict[str, Any]]:
        inv = self.inventory
        return {"devices": inv.devices, "applications": lambda: inv.apps.applications,
                "servicePrincipals": lambda: inv.apps.service_principals,
                "oauth2PermissionGrants": lambda: inv.apps.grants}[collection]()

    def set_object(self, collection: str, oid: str, **properties: Any) -> None:
        """Change properties of a device, application, service principal or oauth2PermissionGrant (Graph names:
        `collection` as in the path, e.g. "servicePrincipals")."""
        found = next(o for o in self._listed(collection) if o["id"] == oid)
        found.update(properties)
        self.log.object(collection, oid)

    # ------------------------------------------------------------------ a day of changes

    def day_of_changes(self, share: float = 0.01, seed: int = 7) -> dict[str, int]:
        """About `share` of the users changed (a quarter each renamed, relicensed, given another job title; a
        tenth created and a tenth deleted) and as many membership changes (half added, half removed), drawn
        from `seed`. The counts made, by kind."""
        rnd = random.Random(seed)
        tenant, groups = self.tenant, self.inventory._groups
        live = tenant.all_indexes()
        n = max(1, int(len(live) * share))
        picked = rnd.sample(list(live), min(len(live), n))
        counts = {"renamed": 0, "relicensed": 0, "changed": 0, "created": 0, "deleted": 0,
                  "membersAdded": 0, "membersRemoved": 0}
        for k, index in enumerate(picked):
            uid = tenant.user_id(index)
            kind = k % 10
            if kind in (0, 1):
                upn = tenant.upn(index)
                self.rename_user(uid, upn=f"r{k}.{upn}", display_name=f"Renamed {k}")
                counts["renamed"] += 1
            elif kind in (2, 3, 4):
                self.change_licences(uid, like=None if k % 2 else tenant.user_id(picked[(k + 1) % len(picked)]))
                counts["relicensed"] += 1
            elif kind in (5, 6, 7):
                self.set_user(uid, jobTitle=f"Title {k}")
                counts["changed"] += 1
            elif kind == 8 and tenant.index.user_count > tenant.user_count:
                try:
                    self.add_user()
                    counts["created"] += 1
                except RuntimeError:
                    pass
            else:
                self.remove_user(uid)
                counts["deleted"] += 1
        group_count = len(groups.groups())
        for k in range(n):
            g = rnd.randrange(group_count)
            gid = groups.groups()[g]["id"]
            members = [m for m in groups.direct_members(g) if m[0] == USER_TYPE]
            if k % 2 and members:
                self.remove_member(gid, members[rnd.randrange(len(members))][1])
                counts["membersRemoved"] += 1
            else:
                live = tenant.all_indexes()
                self.add_member(gid, tenant.user_id(live[rnd.randrange(len(live))]))
                counts["membersAdded"] += 1
        return counts
