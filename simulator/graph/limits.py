"""Graph's throttling: the resource-unit budget per app and tenant (§6), and the per-API limits over a
sliding window (usage reports, identity and access reports, ``$select=keyCredentials``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import TYPE_CHECKING

from ..web import Request
from .protocol import GraphError

if TYPE_CHECKING:
    from ..state import SimulatorState

REPORT_WINDOW = 600.0  # §6: usage reports, 14 requests per 10 minutes per app and tenant, per report API

# graph-facts §6 (DOCS concepts/throttling-limits.md, identity and access reports): 5 requests per 10 s per
# app and tenant; userRegistrationDetails is listed there. Listing users with signInActivity is an open
# question [ISSUE microsoft-graph-docs-contrib #8653], so it joins that limit only when the spec says so.
IDENTITY_REPORTS_WINDOW = 10.0
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

    def charge(self, req: Request, headers: dict[str, str]) -> None:
        """Count the request's resource units (header x-ms-resource-unit) against the spec's budget per 10 s."""
        sim, spec = self.sim, self.sim.spec
        cost = self.cost(req)
        headers["x-ms-resource-unit"] = str(cost)
        limit = spec.rate_limit_ru_per_10s
        if limit:
            with sim._lock:
                now = time.monotonic()
                while self._window and self._window[0][0] <= now - 10:
                    self._window.popleft()
                used = sum(c for _, c in self._window)
                if used + cost > limit:
                    freed, wait = 0, 10.0
                    for stamp, c in self._window:
                        freed += c
                        if used - freed + cost <= limit:
                            wait = stamp + 10 - now
                            break
                    raise GraphError(
                        429,
                        "TooManyRequests",
                        "Please retry again later.",
                        {
                            "Retry-After": str(max(1, math.ceil(wait))),
                            "x-ms-throttle-limit-percentage": f"{min(1.8, (used + cost) / limit):.1f}",
                            "x-ms-throttle-scope": f"Tenant_Application/ReadOnly/{sim.tenant_id}/{sim.client_id}",
                            "x-ms-throttle-information": "ResourceUnitLimitExceeded",
                        },
                    )
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
        """One request against the identity and access reports limit (when the spec sets one)."""
        limit = self.sim.spec.identity_reports_limit
        if limit:
            self._take(self._identity_reports, IDENTITY_REPORTS_WINDOW, limit)

    def usage_report(self, name: str) -> None:
        """§4: one request for usage report ``name`` against 14 per 10 minutes (TenantSpec.report_rate_limit)."""
        limit = self.sim.spec.report_rate_limit
        if limit:
            with self.sim._lock:
                calls = self._report_calls.setdefault(name, deque())
            self._take(calls, REPORT_WINDOW, limit)

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
                wait = max(1, math.ceil(calls[0] + window - now))
                raise GraphError(429, "TooManyRequests", "Please retry again later.", {"Retry-After": str(wait)})
            calls.append(now)
