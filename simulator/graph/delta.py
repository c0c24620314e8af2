"""Delta queries (§2): GET /users/delta and /groups/delta, and /devices, /applications, /servicePrincipals and
/oauth2PermissionGrants delta the same way; their next and delta links,
`@removed`, `members@delta`, `$deltatoken=latest`, token expiry and synchronisation resets.

Sources (graph-facts §2, all read in microsoft-graph-docs-contrib): api-reference/v1.0/api/user-delta.md and
group-delta.md; concepts/delta-query-overview.md, delta-query-users.md, delta-query-groups.md.
- A round is one or more calls: every page but the last has `@odata.nextLink` (`/users/delta?$skiptoken=...`),
  the last `@odata.deltaLink` (`/users/delta?$deltatoken=...`); the query given in the first call ($select,
  $expand=members) is encoded into the tokens, so links carry only the token (user-delta.md, "Query
  parameters").
- The first round returns every object (its current state); a round from a delta link returns the objects
  created or changed since, with the selected properties (user-delta.md, "Default: return the same properties as
  initial delta request"), and removed objects as `{"id": ..., "@removed": {"reason": "changed"|"deleted"}}`:
  "changed" when the object can be restored, "deleted" when it is gone for good (delta-query-overview.md,
  "Resource representation in the delta query response").
- `$deltatoken=latest` returns no objects, only a delta link: "sync from now" (delta-query-overview.md).
- Groups: membership in `members@delta` ({"@odata.type", "id"}, removed members with `@removed`), included with
  `$select=members` or `$expand=members`; a group with many members is split over several pages, the same group
  object repeated with a different slice (delta-query-groups.md). "The same resource may be returned more than
  once" (delta-query-overview.md): each page after the first of a change round starts with the last object of
  the page before again.
- Which member types `members@delta` lists is not documented beyond the examples (users): every direct member is
  listed here, service principals included, and the members of hidden-membership groups whether or not the app
  holds Member.Read.Hidden [UNVERIFIED; the connector uses neither: connector/collect/memberships.py]. Memberships
  Entra removes because a user was deleted are not listed (simulator/changes.py `remove_user`) [UNVERIFIED].
- `$top` and `$orderby` are not supported; `$filter` only `id eq` (not implemented here: answered 400).
- Delta tokens of directory objects live 7 days; an expired one is answered with a 40X error whose code is
  `syncStateNotFound` (delta-query-overview.md, "Token duration"; errors.md): 400 here. A synchronisation reset is
  `410 Gone` with a Location header holding the initial query (delta-query-overview.md, "Synchronization reset");
  TenantSpec.delta_reset answers every $deltatoken request so.
- `signInActivity` cannot be selected with delta (microsoft-graph-explorer-v4 #3189; graph-facts §11): 400 here
  [the exact answer UNVERIFIED].
The page size of delta rounds is not documented [UNVERIFIED]: 200 objects here, and 100 members per slice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from typing import Any

import orjson

from ..web import Request, Response
from .apps import APPLICATION_ROLES, GRANT_ROLES
from .area import Area
from .devices import DEVICE_ROLES
from .groups import GROUP_ROLES
from .protocol import METADATA, GraphError, ok, query_options, require, select_properties
from .users import USER_ROLES

PAGE = 200
MEMBER_SLICE = 100
# Collections held as lists of objects, with the same delta function (api/device-delta.md, application-delta.md,
# serviceprincipal-delta.md, oauth2permissiongrant-delta.md; delta-query-overview.md lists them in v1.0), by the
# lower-cased path segment: (name, objects, permissions). Users and groups have their own code below.
LISTS = {
    "devices": ("devices", lambda inv: inv.devices(), DEVICE_ROLES),
    "applications": ("applications", lambda inv: inv.apps.applications, APPLICATION_ROLES),
    "serviceprincipals": ("servicePrincipals", lambda inv: inv.apps.service_principals, APPLICATION_ROLES),
    "oauth2permissiongrants": ("oauth2PermissionGrants", lambda inv: inv.apps.grants, GRANT_ROLES),
}
ROLES = {"users": USER_ROLES, "groups": GROUP_ROLES, **{n: r for n, _o, r in LISTS.values()}}
TOKEN_LIFETIME = 7 * 86400  # directory objects (delta-query-overview.md, "Token duration")
_FUNCTIONS = ("delta", "microsoft.graph.delta")


class DeltaArea(Area):
    """/users/delta and /groups/delta (also as /microsoft.graph.delta, as the SDKs send them)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._key = os.urandom(16)

    def route(self, req: Request, claims: dict[str, Any], raw: list[str], rest: list[str]) -> Response | None:
        if len(rest) != 2 or rest[0] not in ("users", "groups", *LISTS) or rest[1] not in _FUNCTIONS:
            return None
        collection = LISTS[rest[0]][0] if rest[0] in LISTS else rest[0]
        options = query_options(req, {"$select", "$expand", "$deltatoken", "$skiptoken", "$filter"},
                                 f"{collection}/delta")
        require(claims, ROLES[collection])
        if "$filter" in options:
            raise GraphError(400, "Request_UnsupportedQuery", "The simulator supports no $filter on delta.")
        if "$skiptoken" in options:
            state = self._read(options["$skiptoken"], collection, "skip")
        elif options.get("$deltatoken", "").lower() == "latest":
            state = self._first(req, collection, options)
            return self._answer(req, collection, state, [], done=True)
        elif "$deltatoken" in options:
            state = self._read(options["$deltatoken"], collection, "delta")
            self._check_age(req, collection, state)
            state = {**state, "u": self.sim.changes.log.seq, "p": 0, "f": False}
        else:
            state = self._first(req, collection, options)
        return self._page(req, collection, state)

    # ------------------------------------------------------------------ tokens

    def _first(self, req: Request, collection: str, options: dict[str, str]) -> dict[str, Any]:
        """The query of a first call, checked, as the state its tokens carry."""
        select, members = self._query(collection, options)
        now_seq = self.sim.changes.log.seq
        return {"c": collection, "q": select, "m": members, "s": now_seq, "u": now_seq, "p": 0, "f": True}

    def _query(self, collection: str, options: dict[str, str]) -> tuple[list[str] | None, bool]:
        expand = options.get("$expand", "").strip().lower()
        if expand and not (collection == "groups" and expand == "members"):
            raise GraphError(400, "Request_BadRequest", f"$expand={options['$expand']} is not supported on delta.")
        members = collection == "groups" and (expand == "members" or "$select" not in options)
        raw = options.get("$select")
        if raw is None:
            return None, members
        names = [n.strip() for n in raw.split(",")]
        if collection == "groups" and any(n.lower() == "members" for n in names):
            members = True
            names = [n for n in names if n.lower() != "members"]
        if collection == "users":
            if any(n.lower() == "signinactivity" for n in names):
                raise GraphError(400, "Request_UnsupportedQuery",
                                 "The property 'signInActivity' does not support delta query.")
            known = {p.lower(): p for p in self.sim.tenant.user(self.sim.tenant.all_indexes()[0])}
            return select_properties(",".join(names), known, "user"), members
        objects = self._objects(collection)
        known = {p.lower(): p for p in (objects[0] if objects else {}) if not p.startswith("_")}
        type_name = collection[:-1] if collection != "servicePrincipals" else "servicePrincipal"
        return select_properties(",".join(names), known, type_name) if names else ["id"], members

    def _objects(self, collection: str) -> list[dict[str, Any]]:
        inv = self.sim.inventory
        if collection == "groups":
            return inv.groups()
        return next(objects(inv) for name, objects, _r in LISTS.values() if name == collection)

    def _token(self, state: dict[str, Any], kind: str) -> str:
        body = orjson.dumps({**state, "k": kind, "t": state.get("t") or int(time.time()),
                             "tid": self.sim.tenant_id})
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")

    def _read(self, token: str, collection: str, kind: str) -> dict[str, Any]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            mac, body = raw[:12], raw[12:]
            state = orjson.loads(body) if hmac.compare_digest(mac, hmac.new(
                self._key, body, hashlib.sha256).digest()[:12]) else None
        except ValueError:
            state = None
        if not isinstance(state, dict) or state.get("k") != kind or state.get("c") != collection:
            raise GraphError(400, "Request_BadRequest", f"The specified {'delta' if kind == 'delta' else 'page'} "
                             "token value has expired or is invalid.")
        return state

    def _check_age(self, req: Request, collection: str, state: dict[str, Any]) -> None:
        spec = self.sim.spec
        if spec.delta_reset:
            location = f"{self.sim.graph_endpoint}/v1.0/{collection}/delta?$deltatoken="
            raise GraphError(410, "resyncRequired", "The delta token is no longer valid; the application must "
                             "synchronize again.", {"Location": location})
        age = time.time() - float(state.get("t") or 0) + spec.delta_age_days * 86400
        if age > TOKEN_LIFETIME:
            raise GraphError(400, "syncStateNotFound", "The sync state generation is not found. The delta token is "
                             "expired and data must be synchronized again.")

    # ------------------------------------------------------------------ pages

    def _entries(self, collection: str, state: dict[str, Any]) -> list[tuple[str, str, int]]:
        """(id, state, member slice) of the round: every object in a first round, the changed ones after."""
        if state["f"]:
            if collection == "users":
                tenant = self.sim.tenant
                return [(tenant.user_id(i), "upsert", 0) for i in tenant.all_indexes()]
            if collection != "groups":
                return [(o["id"], "upsert", 0) for o in self._objects(collection)]
            out = []
            for g, group in enumerate(self.sim.inventory.groups()):
                slices = max(1, -(-len(self.sim.inventory.direct_members(g)) // MEMBER_SLICE)) if state["m"] else 1
                out += [(group["id"], "upsert", k) for k in range(slices)]
            return out
        changed = self.sim.changes.log.since(collection, state["s"], state["u"], state["m"])
        if collection != "groups" or not state["m"]:
            return [(oid, kind, 0) for oid, kind in changed]
        out = []
        for oid, kind in changed:
            n = len(self.sim.changes.log.member_changes(oid, state["s"], state["u"]))
            out += [(oid, kind, k) for k in range(max(1, -(-n // MEMBER_SLICE)))]
        return out

    def _page(self, req: Request, collection: str, state: dict[str, Any]) -> Response:
        entries = self._entries(collection, state)
        start = state["p"]
        chunk = entries[start:start + PAGE]
        if start and not state["f"] and start <= len(entries):
            chunk = [entries[start - 1], *chunk]  # the same resource returned more than once
        values = [self._render(collection, state, *entry) for entry in chunk]
        done = start + PAGE >= len(entries)
        return self._answer(req, collection, {**state, "p": start + PAGE}, values, done)

    def _answer(self, req: Request, collection: str, state: dict[str, Any], values: list[Any],
                done: bool) -> Response:
        base = f"{self.sim.graph_endpoint}/v1.0/{collection}/delta"
        select = state["q"]
        body: dict[str, Any] = {"@odata.context": f"{METADATA}#{collection}" + (
            f"({','.join(select)})" if select and state["f"] and state["p"] <= PAGE else "")}
        if done:
            after = {"c": collection, "q": select, "m": state["m"], "s": state["u"]}
            body["@odata.deltaLink"] = f"{base}?$deltatoken={self._token(after, 'delta')}"
        else:
            body["@odata.nextLink"] = f"{base}?$skiptoken={self._token(state, 'skip')}"
        body["value"] = values
        return ok(body)

    def _render(self, collection: str, state: dict[str, Any], oid: str, kind: str, part: int) -> dict[str, Any]:
        if kind != "upsert":
            return {"id": oid, "@removed": {"reason": kind}}
        if collection == "users":
            tenant = self.sim.tenant
            index = tenant.index_of(oid)
            if index is None:  # created and deleted within the round
                return {"id": oid, "@removed": {"reason": "changed"}}
            props = state["q"]
            user = tenant.user(index, props)
            return {**user, "id": oid} if props is None or "id" in user else {"id": oid, **user}
        inv = self.sim.inventory
        if collection != "groups":
            found = next((o for o in self._objects(collection) if o["id"] == oid), None)
            if found is None:
                return {"id": oid, "@removed": {"reason": "deleted"}}
            props = state["q"] or [k for k in found if not k.startswith("_")]
            return {"id": oid, **{p: found[p] for p in props if p in found}}
        g = inv.group_index(oid)
        if g is None:
            return {"id": oid, "@removed": {"reason": "deleted"}}
        group = inv.groups()[g]
        props = state["q"]
        out = dict(group) if props is None else {p: group[p] for p in props if p in group}
        out["id"] = oid
        if state["m"]:
            if state["f"]:
                members = [{"@odata.type": t, "id": mid} for t, mid in inv.direct_members(g)]
            else:
                members = [{"@odata.type": t, "id": mid, **({"@removed": {"reason": "deleted"}} if removed else {})}
                           for t, mid, removed in self.sim.changes.log.member_changes(oid, state["s"], state["u"])]
            out["members@delta"] = members[part * MEMBER_SLICE:(part + 1) * MEMBER_SLICE]
        return out

