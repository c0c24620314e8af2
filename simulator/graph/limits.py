"""Graph's throttling: the resource-unit budget per app and tenant (§6), and the per-API limits over a
sliding window (usage reports, identity and access reports, ``$select=keyCredentials``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import TYPE_CHECKING

from ..app_quotas import AppLimits
from ..web import Request
from .protocol import GraphError

if TYPE_CHECKING:
    from ..state import SimulatorState

REPORT_WINDOW = 600.0  # §6: usage reports, 14 requests per 10 minutes per app and tenant, per report API
# §6: CSV usage reports, 40 requests per 10 minutes per tenant for all apps, all report APIs together.
REPORTS_PER_TENANT = 40

# graph-facts §6 (DOCS concepts/throttling-limits.md, include throttling-entra-logs-reports.md, PR #9591):
# identity and access reports 5 requests per 10 s per app and tenant (userRegistrationDetails and
# signInActivity are among its resources); GET signInActivity 10 requests per minute per app and tenant.
IDENTITY_REPORTS_LIMIT = 5
IDENTITY_REPORTS_WINDOW = 10.0
SIGN_IN_LIMIT = 10
SIGN_IN_WINDOW = 60.0
# DOCS includes/throttling-intune-devices.md: any device management request, 2,000 per 20 s per app and tenant.
INTUNE_LIMIT = 2000
INTUNE_WINDOW = 20.0
# §6 identity and access: resource units per 10 s per app and tenant by the tenant's size (S < 50 users,
# M 50-500, L > 500).
RU_WINDOW = 10.0
RU_BY_SIZE = ((50, 3500), (501, 5000), (math.inf, 8000))
KEY_SELECT_LIMIT = 150  # $select=keyCredentials: 150 requests per minute per tenant (api/application-list.md,
KEY_SELECT_WINDOW = 60.0  # api/serviceprincipal-list.md)

class Limits:
    """The throttling state of one Graph service (request times per window, under the simulator's lock)."""

    def __init__(self, sim: SimulatorState) -> None:
        self.sim = sim
        self._window: deque[tuple[float, int]] = deque()
        self._report_calls: dict[str, deque[float]] = {}
        self._identity_reports: deque[float] = deque()
        self._key_selects: deque[float] = deque()
        self._budget: tuple[float, float] = (0.0, 0.0)  # the resource-unit budget `_window` counts against
        self._sign_ins: deque[float] = deque()
        self._intune: deque[float] = deque()
        self._reports_tenant: deque[float] = deque()

    @property
    def scale(self) -> float:
        return self.sim.spec.quota_scale if self.sim.spec.quotas else 1.0

    def ru_limit(self) -> int | None:
        """The spec's resource-unit budget, else the documented one for the tenant's size (with quotas on)."""
        spec = self.sim.spec
        if spec.rate_limit_ru_per_10s or not spec.quotas:
            return spec.rate_limit_ru_per_10s
        return next(units for below, units in RU_BY_SIZE if spec.users < below)

    def charge(self, req: Request, headers: dict[str, str]) -> None:
        """Count the request's resource units (header x-ms-resource-unit) against the spec's budget per 10 s."""
        sim, spec = self.sim, self.sim.spec
        path = req.path.lower()
        if sim.app_limits is not None and path != "/v1.0/$batch":  # §10: batch items are counted one by one
            _app_take(sim.app_limits, "requests", sim.client_id)
        if path.startswith("/v1.0/devicemanagement/"):  # Intune has its own limit, not resource units
            self.intune()
            return
        if path.startswith("/v1.0/reports/"):  # reports: their own limits (usage reports, identity reports)
            return
        if path == "/v1.0/$batch":  # §10: "Requests in a batch are evaluated individually": the items are charged
            return
        cost = self.cost(req)
        headers["x-ms-resource-unit"] = str(cost)
        limit = self.ru_limit()
        span = RU_WINDOW / (self.scale if not spec.rate_limit_ru_per_10s else 1.0)
        if limit:
            with sim._lock:
                if self._budget != (limit, span):  # a budget set anew (a test, the tenant's size) starts empty
                    self._budget = (limit, span)
                    self._window.clear()
                now = time.monotonic()
                while self._window and self._window[0][0] <= now - span:
                    self._window.popleft()
                used = sum(c for _, c in self._window)
                if used + cost > limit:
                    freed, wait = 0, span
                    for stamp, c in self._window:
                        freed += c
                        if used - freed + cost <= limit:
                            wait = stamp + span - now
                            break
                    raise GraphError(
                        429,
                        "TooManyRequests",
                        "Please retry again later.",
                        {
                            "Retry-After": _seconds(wait),
                            "x-ms-throttle-limit-percentage": f"{min(1.8, (used + cost) / limit):.1f}",
                            "x-ms-throttle-scope": f"Tenant_Application/ReadOnly/{sim.tenant_id}/{sim.client_id}",
                            "x-ms-throttle-information": "ResourceUnitLimitExceeded",
                        },
                    )
                if sim.app_limits is not None:
                    _app_take(sim.app_limits, "identity", sim.client_id, cost)
                self._window.append((now, cost))
                if (used + cost) / limit > 0.8:
                    headers["x-ms-throttle-limit-percentage"] = f"{(used + cost) / limit:.1f}"

    @staticmethod
    def cost(req: Request) -> int:
        """Resource units as in §6 "Limits"."""
        path = req.path.lower().rstrip("/")
        cost = 2 if path == "/v1.0/users" else 3 if path == "/v1.0/subscribedskus" else 1
        if path.endswith("/transitivemembers"):
            cost = 5
        elif path.startswith("/v1.0/groups/") and path.endswith("/members"):
            cost = 3
        keys = {k.lower() for k in req.query}
        if "$select" in keys:
            cost -= 1
        if "$expand" in keys:
            cost += 1
        top = req.query.get("$top", "")
        if top.isdigit() and int(top) < 20:
            cost -= 1
        return max(1, cost)

    def identity_report(self) -> None:
        """One request against the identity and access reports limit (the spec's, else the documented 5)."""
        spec = self.sim.spec
        if spec.identity_reports_limit:
            self._take(self._identity_reports, IDENTITY_REPORTS_WINDOW, spec.identity_reports_limit)
        elif spec.quotas:
            self._take(self._identity_reports, IDENTITY_REPORTS_WINDOW / self.scale, IDENTITY_REPORTS_LIMIT)
            if self.sim.app_limits is not None:
                _app_take(self.sim.app_limits, "identity_reports", self.sim.client_id)

    def sign_in_activity(self) -> None:
        """A users listing that selects or filters signInActivity: 10 per minute, and an identity report."""
        spec = self.sim.spec
        if spec.identity_reports_limit:  # the older spec switch: the reports limit only when asked for
            if spec.sign_in_is_identity_report:
                self.identity_report()
            return
        if spec.quotas:
            self._take(self._sign_ins, SIGN_IN_WINDOW / self.scale, SIGN_IN_LIMIT)
            if self.sim.app_limits is not None:
                _app_take(self.sim.app_limits, "sign_in_activity", self.sim.client_id)
            self.identity_report()

    def intune(self) -> None:
        if self.sim.spec.quotas:
            self._take(self._intune, INTUNE_WINDOW / self.scale, INTUNE_LIMIT)

    def usage_report(self, name: str) -> None:
        """§4: one request for usage report ``name`` against 14 per 10 minutes (TenantSpec.report_rate_limit),
        and 40 per 10 minutes for the tenant's reports together."""
        limit = self.sim.spec.report_rate_limit
        window = REPORT_WINDOW / self.scale
        if limit:
            with self.sim._lock:
                calls = self._report_calls.setdefault(name, deque())
            self._take(calls, window, limit)
        if self.sim.spec.quotas:
            self._take(self._reports_tenant, window, REPORTS_PER_TENANT)

    def key_select(self) -> None:
        """A listing with $select=keyCredentials: 150 a minute per tenant."""
        self._take(self._key_selects, KEY_SELECT_WINDOW, KEY_SELECT_LIMIT)

    def _take(self, calls: deque[float], window: float, limit: int) -> None:
        """Record a request at now, or refuse it with 429 and Retry-After when ``limit`` are in the window."""
        with self.sim._lock:
            now = time.monotonic()
            while calls and calls[0] <= now - window:
                calls.popleft()
            if len(calls) >= limit:
                raise GraphError(429, "TooManyRequests", "Please retry again later.",
                                 {"Retry-After": _seconds(calls[0] + window - now)})
            calls.append(now)


def _app_take(app: AppLimits, name: str, client_id: str, units: float = 1) -> None:
    """Count a request against a quota per app across all tenants; 429 with Retry-After when it is spent, its
    scope the application's (graph-facts §6: `x-ms-throttle-scope`, scope/access/ids)."""
    wait = app.take(name, units)
    if wait is not None:
        raise GraphError(429, "TooManyRequests", "Please retry again later.",
                         {"Retry-After": _seconds(wait), "x-ms-throttle-scope": f"Application/Read/{client_id}"})


def _seconds(wait: float) -> str:
    """Retry-After in seconds: whole seconds as Graph usually sends them, a decimal below one second (the docs'
    sample shows "2.128"), which only scaled quotas need."""
    if wait >= 1:
        return str(math.ceil(wait))
    return f"{max(0.001, wait):.3f}"
