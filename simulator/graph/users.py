"""Users (§0, §1): /users with $select, $top, $filter on UPN prefixes or `id in (...)`, $count and keyset paging,
/users/$count, /users/{id}, and /users?$expand=manager."""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import orjson

from ..object_types import USER_TYPE
from ..user_objects import DEFAULT_USER_PROPERTIES
from ..web import Request, Response
from .area import Area
from .paging import page_size
from .protocol import (
    METADATA,
    GraphError,
    not_found,
    ok,
    query_options,
    require,
    require_audit_log,
    require_premium,
    select_properties,
)

USER_ROLES = frozenset({"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
EXPAND_PAGE = 100  # $expand on directory objects returns at most 100 objects (Graph known issue 13635)

# graph-facts §11 [ISSUE microsoft-graph-docs #21098, microsoft-graph-docs-contrib #1238]: in a directory
# $filter, `or` takes at most 15 child clauses; the 16th is refused with this 400. It is reported lifted under
# ConsistencyLevel: eventual; the simulator refuses it in every mode (stricter: the collector never relies on it).
MAX_OR_CLAUSES = 15
_TOO_MANY_OR = ("Too many child clauses specified in search filter expression containing 'OR' operators: {n}. "
                "Max allowed: 15.")

_STARTSWITH = re.compile(r"\s*startswith\(\s*userprincipalname\s*,\s*'((?:[^']|'')*)'\s*\)", re.IGNORECASE)
_OR = re.compile(r"\s+or\s+", re.IGNORECASE)


_ID_IN = re.compile(r"\s*id\s+in\s*\(\s*((?:'[0-9a-fA-F-]+'\s*,\s*)*'[0-9a-fA-F-]+')\s*\)\s*$", re.IGNORECASE)


def parse_id_filter(text: str) -> tuple[str, ...] | None:
    """The ids of ``id in ('a','b',...)`` (filter-query-parameter.md: `in`; resources/user.md: id supports $filter
    with eq and in), or None."""
    match = _ID_IN.match(text)
    if not match:
        return None
    return tuple(v.strip().strip("'").lower() for v in match.group(1).split(","))


def parse_upn_prefix_filter(text: str) -> tuple[str, ...]:
    """Prefixes of ``startswith(userPrincipalName,'x') [or ...]``; raises ValueError for anything else."""
    prefixes: list[str] = []
    pos = 0
    while True:
        match = _STARTSWITH.match(text, pos)
        if not match:
            raise ValueError(text)
        prefixes.append(match.group(1).replace("''", "'"))
        pos = match.end()
        if not text[pos:].strip():
            return tuple(prefixes)
        joiner = _OR.match(text, pos)
        if not joiner:
            raise ValueError(text)
        pos = joiner.end()


class UsersArea(Area):
    """/users, /users/$count, /users/{id} and /users?$expand=manager."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._cache: dict[tuple[str, ...], dict[int, bytes]] = {}  # TenantSpec.render_cache
        self._cache_version = -1
        self._prefix_cache: dict[tuple[Any, ...], tuple[int, ...]] = {}  # $expand=manager with a $filter

    def route(self, req: Request, claims: dict[str, Any], raw: list[str], rest: list[str]) -> Response | None:
        if rest == ["users"] and any(k.lower() == "$expand" for k, _ in req.pairs):
            return self._users_with_manager(req, claims)
        if rest == ["users"]:
            return self._users(req, claims)
        if rest == ["users", "$count"]:
            return self._users_count(req, claims)
        if len(rest) == 2 and rest[0] == "users":
            return self._user(req, claims, raw[1])
        return None

    # Property names by lower-case name; lazy because users need the tenant's UPN index.
    @cached_property
    def user_properties(self) -> dict[str, str]:
        return {p.lower(): p for p in self.sim.tenant.user(0)} if self.sim.tenant.user_count else {}

    def _properties(self, options: dict[str, str]) -> list[str]:
        """The properties to serve: the defaults, or $select's (with the id always)."""
        props: list[str] = list(DEFAULT_USER_PROPERTIES)
        if "$select" in options:
            props = select_properties(options["$select"], self.user_properties, "user")
            if "id" not in props:
                props.append("id")
        return props

    def _candidates(self, options: dict[str, str]) -> tuple[tuple[int, ...] | range, str]:
        raw = options.get("$filter")
        tenant = self.sim.tenant
        if raw is None:
            return tenant.all_indexes(), ""
        ids = parse_id_filter(raw)
        if ids is not None:
            # Each value of `in` taken as one clause of the 15 a default-mode filter allows (graph-facts §11)
            # [UNVERIFIED for `in`: the reading least favourable to the connector].
            if len(ids) > MAX_OR_CLAUSES:
                raise GraphError(400, "Request_UnsupportedQuery", _TOO_MANY_OR.format(n=len(ids)))
            found = {tenant.index_of(i) for i in ids}
            return tuple(sorted(i for i in found if i is not None and tenant.exists(i))), raw
        try:
            prefixes = parse_upn_prefix_filter(raw)
        except ValueError:
            raise GraphError(
                400,
                "Request_UnsupportedQuery",
                "Unsupported or invalid query filter clause specified (the simulator supports "
                "startswith(userPrincipalName,'...') joined with 'or').",
            ) from None
        if len(prefixes) > MAX_OR_CLAUSES:
            raise GraphError(400, "Request_UnsupportedQuery", _TOO_MANY_OR.format(n=len(prefixes)))
        return tenant.prefix_matches(prefixes, self.sim.spec.startswith_case_sensitive), raw

    def _check_count(self, req: Request) -> None:
        if req.headers.get("consistencylevel", "").lower() != "eventual":
            raise GraphError(400, "Request_BadRequest", "$count is not currently supported.")

    def _users(self, req: Request, claims: dict[str, Any]) -> Response:
        sim = self.sim
        options = query_options(req, {"$select", "$top", "$filter", "$count", "$skiptoken"}, "users")
        props = self._properties(options)
        size = page_size(options, 100, 999)
        count = self._count_option(req, options)
        candidates, filter_text = self._candidates(options)
        require(claims, USER_ROLES)
        sign_in = "signInActivity" in props
        if sign_in:
            require_audit_log(claims)
            require_premium(sim.spec.premium)
            self.limits.sign_in_activity()
            cap = sim.spec.sign_in_page_limit
            if size > cap and sim.spec.sign_in_top_fails and "$top" in options:
                # The older service refused a larger page outright [ISSUE msgraph-sdk-powershell #1898].
                raise GraphError(400, "Request_UnsupportedQuery",
                                 f"Cannot query data for more than {cap} users at a time")
            size = min(size, cap)
        # Keyset paging: the token holds the index of the next user, so users added, renamed or deleted
        # while a client pages neither shift nor repeat the others (an opaque cursor, like Graph's).
        after = self.pager.read_skiptoken(options["$skiptoken"], filter_text) if "$skiptoken" in options else 0
        hook = sim.on_users_page
        if hook is not None:
            hook(sim, filter_text, after)
            candidates, _ = self._candidates(options)
        start = sim.tenant.page_from(candidates, after)
        page = candidates[start : start + size]
        context = f"{METADATA}#users" + (f"({options['$select']})" if "$select" in options else "")
        body: dict[str, Any] = {"@odata.context": context}
        if count == "true":
            body["@odata.count"] = len(candidates) + self.sim.spec.count_lag
        if start + len(page) < len(candidates):
            body["@odata.nextLink"] = self.pager.next_link(req, self.pager.make_skiptoken(page[-1] + 1, filter_text))
        body["value"] = self._page_of_users(req, page, props, sign_in)
        with sim._lock:
            sim.users_cursors[filter_text] = max(sim.users_cursors.get(filter_text, -1), page[-1] if page else -1)
        return ok(body)

    def _count_option(self, req: Request, options: dict[str, str]) -> str:
        """``$count`` ("", "true" or "false"); true needs ConsistencyLevel: eventual."""
        count = options.get("$count", "").lower()
        if count not in ("", "true", "false"):
            raise GraphError(400, "Request_BadRequest", f"Invalid value '{options['$count']}' for $count.")
        if count == "true":
            self._check_count(req)
        return count

    def _page_of_users(self, req: Request, page: Sequence[int], props: list[str], sign_in: bool) -> list[Any]:
        sim, tenant = self.sim, self.sim.tenant
        eventual = req.headers.get("consistencylevel", "").lower() == "eventual"
        quirk = sign_in and sim.spec.sign_in_eventual_quirk and eventual
        users: list[Any] = (self._rendered(page, props) if sim.spec.render_cache and not quirk
                            else [tenant.user(i, props) for i in page])
        if quirk:
            # graph-facts §11 [ISSUE msgraph-sdk-powershell #1898]: under ConsistencyLevel: eventual (with
            # $count=true in the report; any eventual request here, to be strict) signInActivity comes back
            # empty for some users. Which ones is not known; every seventh here.
            for i, user in zip(page, users, strict=True):
                if i % 7 == 3:
                    user["signInActivity"] = None
        return users

    def warm(self, select: str) -> None:
        """Benchmarks (TenantSpec.render_cache): render every user for this $select before any client asks, so
        that the pages of a listing paced at its quota answer in the same short time from the first one on, as
        Graph's do; building them in the middle of a run costs the stand-in CPU Graph spends on its own
        machines, and at scaled quotas that time, which does not scale, lands in every window."""
        self._rendered(self.sim.tenant.all_indexes(), self._properties({"$select": select}))

    def _rendered(self, page: Sequence[int], props: list[str]) -> list[orjson.Fragment]:
        """The users' JSON from the benchmark's render cache (TenantSpec.render_cache), built once per
        user and $select; emptied whenever a user is renamed or deleted."""
        tenant, key = self.sim.tenant, tuple(props)
        if self._cache_version != tenant.version:
            self._cache.clear()
            self._cache_version = tenant.version
        cache = self._cache.setdefault(key, {})
        out = []
        for i in page:
            data = cache.get(i)
            if data is None:
                data = cache[i] = orjson.dumps(tenant.user(i, props))
            out.append(orjson.Fragment(data))
        return out

    def _users_count(self, req: Request, claims: dict[str, Any]) -> Response:
        options = query_options(req, {"$filter"}, "users/$count")
        self._check_count(req)
        candidates, _ = self._candidates(options)
        require(claims, USER_ROLES)
        count = len(candidates) + self.sim.spec.count_lag
        return Response(200, str(count).encode(), {"Content-Type": "text/plain;charset=utf-8"})

    def _user(self, req: Request, claims: dict[str, Any], key: str) -> Response:
        options = query_options(req, {"$select"}, "user")
        props = self._properties(options)
        require(claims, USER_ROLES)
        index = self.sim.tenant.index_of(key)
        if index is None:
            raise not_found(key)
        if "signInActivity" in props:
            require_audit_log(claims)
        context = f"{METADATA}#users" + (f"({options['$select']})" if "$select" in options else "") + "/$entity"
        return ok({"@odata.context": context, **self.sim.tenant.user(index, props)})

    @cached_property
    def _sorted_upns(self) -> tuple[list[str], list[int]]:
        """Lower-case UPNs in sorted order with their user indexes: a prefix is a contiguous range."""
        t = self.sim.tenant
        pairs = sorted((t.upn(i).lower(), i) for i in range(t.user_count))
        return [u for u, _ in pairs], [i for _, i in pairs]

    @cached_property
    def _sorted_exact_upns(self) -> tuple[list[str], list[int]]:
        """UPNs as written, in sorted order with their user indexes (startswith_case_sensitive)."""
        t = self.sim.tenant
        pairs = sorted((t.upn(i), i) for i in range(t.user_count))
        return [u for u, _ in pairs], [i for _, i in pairs]

    def _prefix_matches(self, prefixes: tuple[str, ...]) -> tuple[int, ...]:
        """Same answer as Tenant.prefix_matches (indexes in paging order, case-sensitively when the spec says
        startswith() is), by bisection and cached per filter: thousands of two-character chains would each scan
        every UPN on every page otherwise."""
        if len(prefixes) > MAX_OR_CLAUSES:
            raise GraphError(400, "Request_UnsupportedQuery", _TOO_MANY_OR.format(n=len(prefixes)))
        exact = self.sim.spec.startswith_case_sensitive
        cache = self._prefix_cache
        found = cache.get((exact, *prefixes))
        if found is None:
            upns, indexes = self._sorted_exact_upns if exact else self._sorted_upns
            hits: list[int] = []
            for prefix in set(prefixes) if exact else {p.lower() for p in prefixes}:
                lo = bisect.bisect_left(upns, prefix)
                hi = lo
                while hi < len(upns) and upns[hi].startswith(prefix):
                    hi += 1
                hits.extend(indexes[lo:hi])
            found = cache[(exact, *prefixes)] = tuple(sorted(set(hits)))
        return found

    def _users_with_manager(self, req: Request, claims: dict[str, Any]) -> Response:
        """GET /users?$expand=manager (api/user-list-manager.md). $expand is not supported with advanced queries
        (concepts/query-parameters.md), so $count or ConsistencyLevel is a 400; $select inside $expand needs
        $levels, and $levels works on a single user only (microsoft-graph-docs-contrib #1777: "Transitive
        manager's list is only supported on a single user"); at most 100 users per page (known issue 13635)."""
        options = query_options(req, {"$select", "$top", "$filter", "$expand", "$skiptoken"}, "users")
        if req.headers.get("consistencylevel", "").lower() == "eventual":
            raise GraphError(400, "Request_UnsupportedQuery", "$expand is not supported with advanced queries.")
        expand = options["$expand"].strip()
        if expand.lower() != "manager":
            if re.search(r"\$levels", expand, re.I):
                raise GraphError(400, "Request_Unsupported", "Transitive manager's list is only supported on a single "
                                 "user, send the $expand request on /users/{id} endpoint")
            raise GraphError(400, "BadRequest", f"Unsupported $expand '{expand}' on users: only manager (with $levels "
                             "for a nested $select).")
        require(claims, USER_ROLES)
        tenant = self.sim.tenant
        if "$filter" in options:
            try:
                candidates: Any = self._prefix_matches(parse_upn_prefix_filter(options["$filter"]))
            except ValueError:
                raise GraphError(400, "Request_UnsupportedQuery",
                                 "Unsupported or invalid query filter clause.") from None
        else:
            candidates = range(tenant.user_count)
        props = self._properties(options)
        size = min(page_size(options, EXPAND_PAGE, 999), EXPAND_PAGE)
        bound = f"{req.path.lower()}|expand|{options.get('$filter', '')}"
        start = self.pager.read_skiptoken(options["$skiptoken"], bound) if "$skiptoken" in options else 0
        page = candidates[start:start + size]
        values = []
        apps = self.sim.inventory.apps
        for i in page:
            user = tenant.user(i, props)
            boss = apps.manager_of(i)
            if boss is not None:
                user["manager"] = {"@odata.type": USER_TYPE, **tenant.user(boss, DEFAULT_USER_PROPERTIES)}
            values.append(user)
        body: dict[str, Any] = {"@odata.context": f"{METADATA}#users"}
        if start + len(page) < len(candidates):
            body["@odata.nextLink"] = self.pager.next_link(req, self.pager.make_skiptoken(start + len(page), bound))
        body["value"] = values
        return ok(body)
