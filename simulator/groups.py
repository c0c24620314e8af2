"""Groups (§8 /groups) and their direct members, deterministic from the tenant's seed: licence groups
(group-based licensing), an all-company group, a dynamic group, a 5 > 6 > 7 nesting chain, Microsoft 365
and security groups, some with devices or service principals as members.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .licensing import LICENSE_GROUP_SKUS, LICENSE_GROUPS
from .object_types import DEVICE_TYPE, GROUP_TYPE, SP_TYPE, USER_TYPE
from .people import KIND_MEMBER, user_kind
from .seeded import DAY, digest, guid, iso, seeded_random

if TYPE_CHECKING:
    from .devices import Devices
    from .tenant import Tenant, TenantSpec

Member = tuple[str, str]  # (@odata.type, id)


class Groups:
    """One tenant's groups and memberships, built once on first use."""

    def __init__(self, tenant: Tenant, spec: TenantSpec, devices: Devices,
                 service_principal_ids: Callable[[], list[str]]) -> None:
        self.tenant = tenant
        self.seed = tenant.seed
        self.group_count = spec.groups if spec.groups is not None else max(12, tenant.user_count // 25)
        self.devices = devices
        self._service_principal_ids = service_principal_ids  # service principals join some security groups
        self._lock = threading.RLock()
        self.version = 0  # incremented by every change made after start (simulator/changes.py)

    @cached_property
    def _groups(self) -> tuple[list[dict[str, Any]], list[list[Member]]]:
        """(group objects, direct members as (odata type, id)), built once."""
        with self._lock:
            return self._build_groups()

    def _build_groups(self) -> tuple[list[dict[str, Any]], list[list[Member]]]:
        t = self.tenant
        groups: list[dict[str, Any]] = []
        members: list[list[Member]] = []
        kinds: list[str] = []
        sku_ids = {s.key: s.sku_id for s in t.skus}
        licence_members = self._licence_members()
        base = t.now_epoch - 2000 * DAY
        for g in range(self.group_count):
            rnd = seeded_random(self.seed, f"group:{g}")
            gid, kind = self._id_and_kind(g, rnd)
            kinds.append(kind)
            groups.append(self._group(g, gid, kind, rnd, base, sku_ids))
            members.append(self._direct_members(g, kind, rnd, licence_members))
        self._nest(groups, members, kinds)
        n = self.group_count
        unified = [g for g in range(8, n) if kinds[g] == "unified"]
        if unified and not any(groups[g]["visibility"] == "HiddenMembership" for g in unified):
            groups[unified[0]]["visibility"] = "HiddenMembership"  # every tenant of a few groups has one
        self._add_service_principals(members, kinds)
        return groups, members

    def _id_and_kind(self, g: int, rnd: random.Random) -> tuple[str, str]:
        """The group's id and kind: licence, all, dynamic, security, unified, mailsecurity or roleassignable."""
        if g < len(LICENSE_GROUPS):
            gid = LICENSE_GROUPS[g]
            kind = "licence"
        else:
            gid = guid(digest(self.seed, f"group-id:{g}"))
            draw = rnd.random()
            kind = ("all" if g == 3 else "dynamic" if g == 4 else "security" if g in (5, 6, 7) else
                    "unified" if draw < 0.4 else
                    "security" if draw < 0.85 else "mailsecurity" if draw < 0.95 else "roleassignable")
        return gid, kind

    def _group(self, g: int, gid: str, kind: str, rnd: random.Random, base: int,
               sku_ids: dict[str, str]) -> dict[str, Any]:
        """The group object (resources/group.md)."""
        t = self.tenant
        nick = {"licence": f"lic-{['m365-e3', 'm365-e5', 'ems'][g % 3]}", "all": "allcompany",
                "dynamic": "sales-dynamic"}.get(kind, f"{kind[:4]}-{g:05d}")
        unified = kind in ("unified", "all")
        mail_enabled = kind in ("unified", "all", "mailsecurity")
        mail = f"{nick}@{t.default_domain}" if mail_enabled else None
        return {
            "id": gid,
            "deletedDateTime": None,
            "classification": None,
            "createdDateTime": iso(base + rnd.randrange(0, 1900) * DAY + rnd.randrange(DAY)),
            "description": None if rnd.random() < 0.3 else f"{kind.title()} group {g}",
            "displayName": {"licence": f"LIC - {['Microsoft 365 E3', 'Office 365 E5', 'EMS E3'][g % 3]}",
                            "all": "All Company", "dynamic": "Sales (dynamic)"}.get(kind, f"Group {g:05d}"),
            "expirationDateTime": None,
            "groupTypes": ["Unified"] if unified else ["DynamicMembership"] if kind == "dynamic" else [],
            "isAssignableToRole": True if kind == "roleassignable" else None,
            "mail": mail,
            "mailEnabled": mail_enabled,
            "mailNickname": nick,
            "membershipRule": '(user.department -eq "Sales")' if kind == "dynamic" else None,
            "membershipRuleProcessingState": "On" if kind == "dynamic" else None,
            "onPremisesLastSyncDateTime": None,
            "onPremisesSecurityIdentifier": None,
            "onPremisesSyncEnabled": True if kind == "security" and rnd.random() < 0.3 else None,
            "preferredDataLocation": None,
            "proxyAddresses": [f"SMTP:{mail}"] if mail else [],
            "renewedDateTime": None,
            "resourceProvisioningOptions": ["Team"] if unified and rnd.random() < 0.6 else [],
            "securityEnabled": not unified or kind == "all",
            "securityIdentifier": "S-1-12-1-" + "-".join(str(rnd.randrange(2**32)) for _ in range(4)),
            "visibility": self._visibility(g, rnd.random()) if unified else None,
            "assignedLicenses": [{"disabledPlans": [], "skuId": sku_ids[LICENSE_GROUP_SKUS[g]]}]
            if kind == "licence" and LICENSE_GROUP_SKUS[g] in sku_ids else [],
        }

    def _direct_members(self, g: int, kind: str, rnd: random.Random,
                        licence_members: list[list[int]]) -> list[Member]:
        """Users (and for a few security groups, devices) directly in group ``g``, in paging order."""
        t = self.tenant
        users = t.user_count
        if kind == "licence":
            direct = [(USER_TYPE, t.user_id(i)) for i in licence_members[g]]
        elif kind == "all":
            direct = [(USER_TYPE, t.user_id(i)) for i in range(users)]
        elif kind == "dynamic":
            direct = [(USER_TYPE, t.user_id(i)) for i in range(users)
                      if user_kind(self.seed, i) == KIND_MEMBER and digest(self.seed, f"user:{i}")[11] % 9 == 0]
        else:
            k = min(users, int(rnd.expovariate(1 / 12)) + (5 if kind == "licence" else 0))
            direct = [(USER_TYPE, t.user_id(i)) for i in sorted(rnd.sample(range(users), k))]
            devices = self.devices.device_count
            if kind in ("security", "mailsecurity") and devices and (g == 5 or rnd.random() < 0.1):
                direct += [(DEVICE_TYPE, self.devices.device(i)["id"])
                           for i in sorted(rnd.sample(range(devices), min(3, devices)))]
        return direct

    def _nest(self, groups: list[dict[str, Any]], members: list[list[Member]], kinds: list[str]) -> None:
        n = self.group_count
        # Nesting: security groups may contain security groups with a higher index (no cycles);
        # groups 5 > 6 > 7 always form a two-level chain.
        for g, c in ((5, 6), (6, 7)):
            if c < n:
                members[g].append((GROUP_TYPE, groups[c]["id"]))
        for g in range(8, n):
            rnd = seeded_random(self.seed, f"nest:{g}")
            if kinds[g] not in ("security", "mailsecurity") or rnd.random() >= 0.15:
                continue
            children = [c for c in range(g + 1, min(n, g + 40)) if kinds[c] in ("security", "roleassignable")]
            for c in rnd.sample(children, min(len(children), 1 + (rnd.random() < 0.3))):
                members[g].append((GROUP_TYPE, groups[c]["id"]))

    def _add_service_principals(self, members: list[list[Member]], kinds: list[str]) -> None:
        n = self.group_count
        # Service principals are members of some security groups (group 7, the end of the 5 > 6 > 7 chain,
        # always: their memberships of 5 and 6 are transitive). v1.0 /groups/{id}/members does not list them
        # (see graph/groups.py); /servicePrincipals/{id}/memberOf does.
        sp_ids = self._service_principal_ids()
        for g in range(5, n):
            if kinds[g] not in ("security", "mailsecurity") or not sp_ids:
                continue
            rnd = seeded_random(self.seed, f"sp-member:{g}")
            if g == 7 or rnd.random() < 0.06:
                members[g].append((SP_TYPE, sp_ids[rnd.randrange(len(sp_ids))]))

    def _visibility(self, g: int, draw: float) -> str:
        """Microsoft 365 groups: Public, Private, or HiddenMembership for about one in twelve (resources/group.md:
        members of a hidden-membership group are visible to owners, members and Member.Read.Hidden only)."""
        if seeded_random(self.seed, f"hidden:{g}").random() < 0.08:
            return "HiddenMembership"
        return "Public" if draw < 0.5 else "Private"

    def _licence_members(self) -> list[list[int]]:
        """Users of each licence group: exactly those whose licence assignment names the group."""
        t = self.tenant
        members: list[list[int]] = [[] for _ in LICENSE_GROUPS]
        for i in range(t.user_count):
            core = t._core(i)
            if core.combo:
                for grant in t.grants(i, core):
                    if grant.group is not None:
                        members[grant.group].append(i)
        return members

    def groups(self) -> list[dict[str, Any]]:
        return self._groups[0]

    @cached_property
    def index_by_id(self) -> dict[str, int]:
        """Position of each group by object id."""
        return {g["id"]: i for i, g in enumerate(self.groups())}

    def group_index(self, group_id: str) -> int | None:
        return self.index_by_id.get(group_id.lower())

    def direct_members(self, index: int) -> list[tuple[str, str]]:
        """(@odata.type, id) of the group's direct members, in paging order."""
        return self._groups[1][index]

    def transitive_members(self, index: int) -> list[tuple[str, str]]:
        """Direct members first, then members reached through nested groups (breadth first), once each."""
        seen: dict[str, str] = {}
        queue = deque([index])
        visited = {index}
        while queue:
            g = queue.popleft()
            for odata_type, oid in self.direct_members(g):
                seen.setdefault(oid, odata_type)
                if odata_type == GROUP_TYPE:
                    child = self.index_by_id[oid]
                    if child not in visited:
                        visited.add(child)
                        queue.append(child)
        seen.pop(self.groups()[index]["id"], None)
        return [(t, oid) for oid, t in seen.items()]

