"""Several tenants behind one Entra token endpoint and one Microsoft Graph, as a partner's multi-tenant app sees
them: :class:`Fleet`.

One app registration (one client id and secret, from the first tenant, its home) is consented in each tenant
(TenantSpec.app_consented). Entra picks the tenant from the token request's path
(`/{tenant}/oauth2/v2.0/token`, graph-facts §7 "Request"); Graph serves the tenant named by the token's `tid`
claim (graph-facts §7 "Access token roles claim": app tokens carry `tid`), each tenant with its own users,
quotas per app and tenant, faults and request record. Graph's quotas per app across all tenants (graph-facts §6:
any request 130,000 per 10 s, identity 150,000 resource units per 20 s, identity and access reports 122 per
10 s, GET signInActivity 10 per minute) are one budget for every tenant (simulator/graph/limits.py AppLimits).
Key Vault, the managed identity and the download centre are the deployment's: the home tenant's.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Sequence

import orjson

from .app_quotas import AppLimits
from .downloads import DownloadService
from .entra import LoginService
from .graph.service import GraphService
from .server import Simulator
from .state import SimulatorState
from .tenant import TenantSpec
from .web import App, Request, RequestRecord, Response


def _bearer_tenant(auth: str) -> str | None:
    """The `tid` claim of an Authorization header's bearer token, read without checking it: the tenant's own
    Graph checks it."""
    parts = auth[7:].strip().split(".") if auth.lower().startswith("bearer ") else []
    if len(parts) != 3:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    tid = claims.get("tid") if isinstance(claims, dict) else None
    return tid if isinstance(tid, str) else None


class Fleet(Simulator):
    """Several simulated tenants at once; the first spec is the home tenant (where the app is registered).

    `fleet.tenants[i]` is tenant i's state (its spec, tenant id, requests, fail_next...); `fleet` itself is the
    home tenant and serves every listening service.
    """

    def __init__(self, specs: Sequence[TenantSpec], own_apps: Collection[int] = ()) -> None:
        """`own_apps`: indexes of tenants that are collected with an app registration of their own (its own
        client id and secret, consented there alone, with its own app-wide quotas) instead of the home tenant's
        multi-tenant app: the registry's per-tenant `auth`."""
        if not specs:
            raise ValueError("a fleet needs at least one tenant")
        super().__init__(specs[0])
        self.tenants: list[SimulatorState] = [self, *(SimulatorState(spec) for spec in specs[1:])]
        ids = [t.tenant_id for t in self.tenants]
        if len(set(ids)) != len(ids):
            raise ValueError("every tenant needs its own seed (the tenant id comes from it)")
        scale = self.spec.quota_scale if self.spec.quotas else 1.0
        self.app_limits = AppLimits(scale)
        for index, member in enumerate(self.tenants[1:], 1):
            member._services = self._services  # the same listening services (origins in next links, downloads)
            if index in own_apps:
                continue  # its own app: the client id and secret its spec's seed gives it, its own quotas
            # One multi-tenant app: the home tenant's client id, secret and certificate everywhere.
            member.client_id, member.client_secret = self.client_id, self.client_secret
            member.app_certificate = self.app_certificate
            member.app_limits = self.app_limits
        self._graphs: dict[str, App] = {}
        self._logins: dict[str, App] = {}

    def _record(self, record: RequestRecord) -> None:
        """Each request in the record of the tenant it was for (Graph: the token's; Entra: the path's)."""
        state: SimulatorState | None = None
        if record.service == "graph":
            state = self.member(_bearer_tenant(record.headers.get("authorization", "")) or "")
        elif record.service == "login":
            segments = [s for s in record.path.split("/") if s]
            state = self.member(segments[0]) if segments else None
        SimulatorState._record(state or self, record)

    def member(self, key: str) -> SimulatorState | None:
        """The tenant whose id or one of whose domains is `key` (case-insensitive), or None."""
        key = key.lower()
        for state in self.tenants:
            if key == state.tenant_id or key in (d.lower() for d in state.tenant.domains):
                return state
        return None

    def _apps(self) -> dict[str, App]:
        apps = super()._apps()
        home_login, home_graph = apps["login"], apps["graph"]
        for state in self.tenants:
            self._logins[state.tenant_id] = home_login if state is self else LoginService(state)
            self._graphs[state.tenant_id] = home_graph if state is self else GraphService(state)
        downloads = {state.tenant_id: DownloadService(state) for state in self.tenants}
        apps["login"] = lambda req: self._route_login(req, home_login)
        apps["graph"] = lambda req: self._route_graph(req, home_graph)
        apps["download"] = lambda req: self._route_download(req, downloads)
        return apps

    def _route_login(self, req: Request, home: App) -> Response:
        """Entra: the tenant in the path (`/{tenant}/...`) answers; an unknown one gets the home tenant's
        AADSTS90002, instance discovery (`/common/discovery/...`) the home tenant's answer."""
        segments = [s for s in req.path.split("/") if s]
        state = self.member(segments[0]) if segments else None
        return self._logins[state.tenant_id](req) if state is not None else home(req)

    def _route_graph(self, req: Request, home: App) -> Response:
        """Graph: the token's tenant answers (and checks the token); without a known `tid`, the home tenant's
        Graph refuses the token as it refuses any other."""
        service = self._graphs.get(_bearer_tenant(req.headers.get("authorization", "")) or "")
        return home(req) if service is None else service(req)

    def _route_download(self, req: Request, downloads: dict[str, DownloadService]) -> Response:
        """The report download host: the tenant that registered the link serves it (links are unguessable)."""
        segments = [s for s in req.path.split("/") if s]
        if len(segments) == 3:
            for state in self.tenants:
                with state._lock:
                    known = segments[2] in state._downloads
                if known:
                    return downloads[state.tenant_id](req)
        return downloads[self.tenant_id](req)
