"""Graph's quotas per app across all tenants, for a simulator serving several tenants (simulator/fleet.py): one
budget that every tenant's Graph (simulator/graph/limits.py) draws on."""

from __future__ import annotations

import threading
import time
from collections import deque

# Per app across all tenants (graph-facts §6, concepts/throttling-limits.md): any request 130,000 per 10 s
# ("Global"); identity and access 150,000 resource units per 20 s; identity and access reports 122 requests
# per 10 s; GET signInActivity 10 requests per minute (includes/throttling-entra-logs-reports.md, PR #9591).
APP_WIDE = {"requests": (130_000, 10.0), "identity": (150_000, 20.0), "identity_reports": (122, 10.0),
            "sign_in_activity": (10, 60.0)}


class AppLimits:
    """Graph's quotas per app across all tenants: one per simulator serving several tenants (simulator/fleet.py),
    shared by every tenant's Limits. Sliding windows of (time, units) under their own lock."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._lock = threading.Lock()
        self._calls: dict[str, deque[tuple[float, float]]] = {name: deque() for name in APP_WIDE}
        self.throttled: dict[str, int] = dict.fromkeys(APP_WIDE, 0)

    def take(self, name: str, units: float = 1) -> float | None:
        """Count `units` against the app-wide quota `name` (None), or the seconds until they fit (refused)."""
        limit, window = APP_WIDE[name]
        window /= self.scale
        with self._lock:
            calls, now = self._calls[name], time.monotonic()
            while calls and calls[0][0] <= now - window:
                calls.popleft()
            used = sum(u for _, u in calls)
            if used + units > limit:
                self.throttled[name] += 1
                freed, wait = 0.0, window
                for stamp, u in calls:
                    freed += u
                    if used - freed + units <= limit:
                        wait = stamp + window - now
                        break
                return max(0.001, wait)
            calls.append((now, units))
            return None
