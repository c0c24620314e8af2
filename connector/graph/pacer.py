"""The pacer: every request of a run waits for room in Graph's buckets before it is sent.

Graph counts per app and tenant, not per dataset: every request a run sends draws on the same buckets
(connector/catalog/quotas.py), whichever dataset sends it. So each attempt (retries included; each
`$batch` item on its own, as Graph evaluates them) is classified into its buckets and waits for room in all
of them *before* it is sent, instead of learning the limit from 429s. A 429 still pauses the buckets of
the request that got it, for every dataset, and Graph's `x-ms-resource-unit` /
`x-ms-throttle-limit-percentage` headers correct the estimate of resource units.

Buckets are sliding windows: at most `limit` units in any `window` seconds (a little longer: MARGIN),
reserved first come first served. The pacer reserves without awaiting, so it can be shared by every run
of a process (one per app, tenant and Graph endpoint) whatever event loop each run uses.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from connector.catalog.quotas import DEFAULTS, IDENTITY_BY_SIZE, Quota

# The wait of a pacer window is stretched by this share (plus SLACK seconds) so that latency jitter
# between the connector's clock and Graph's cannot put one request too many into Graph's window.
MARGIN = 0.02
SLACK = 0.02


class _Window:
    """Reservations of one bucket: (send time, units), in time order."""

    def __init__(self, quota: Quota):
        self.quota = quota
        self.entries: deque[tuple[float, float]] = deque()
        self.used = 0.0  # units in `entries`
        self.reserved = 0.0
        self.paused_until = 0.0

    @property
    def span(self) -> float:
        return self.quota.window * (1 + MARGIN) + SLACK

    def _forget(self, before: float) -> None:
        while self.entries and self.entries[0][0] <= before:
            self.used -= self.entries.popleft()[1]

    def earliest(self, t: float, units: float) -> float:
        """The first moment from t at which `units` more fit in the window ending there."""
        t = max(t, self.paused_until, self.entries[-1][0] if self.entries else t)
        units = min(units, self.quota.limit)  # a request dearer than the whole quota waits for an empty window
        in_window = [(s, u) for s, u in self.entries if s > t - self.span]
        total = sum(u for _, u in in_window)
        for start, u in in_window:
            if total + units <= self.quota.limit:
                break
            total -= u
            t = max(t, start + self.span)
        return t

    def take(self, t: float, units: float) -> None:
        self._forget(t - self.span)
        self.entries.append((t, units))
        self.used += units
        self.reserved += units


@dataclass
class Reservation:
    at: float  # time.monotonic() at which the request may be sent
    buckets: tuple[tuple[str, str, float], ...]

    def delay(self) -> float:
        return max(0.0, self.at - time.monotonic())


class Pacer:
    """Every bucket of one app, tenant and Graph endpoint; reservations are thread-safe and never await."""

    def __init__(self, limits: Mapping[str, Quota]):
        self.limits = dict(limits)
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()
        self.waited: dict[str, float] = {}  # seconds requests waited for each quota
        self.sent: dict[str, float] = {}  # units sent per quota

    def _window(self, name: str, key: str) -> _Window:
        window = self._windows.get((name, key))
        if window is None:
            window = self._windows[(name, key)] = _Window(self.limits[name])
        return window

    def set_tenant_size(self, users: int) -> None:
        """Identity resource units by the tenant's size (unknown: the smallest quota)."""
        if "identity" not in self.limits or self.limits["identity"].limit != DEFAULTS["identity"].limit:
            return  # overridden by M365_GRAPH_QUOTAS: kept as set
        limit = next(units for below, units in IDENTITY_BY_SIZE if users < below)
        with self._lock:
            quota = self.limits["identity"] = replace(self.limits["identity"], limit=limit)
            for (name, _), window in self._windows.items():
                if name == "identity":
                    window.quota = quota

    def reserve(self, buckets: Iterable[tuple[str, str, float]], max_wait: float | None = None) -> Reservation | None:
        """Room for one request in every bucket it draws on; None (nothing reserved) if it would have to
        wait longer than `max_wait` seconds."""
        wanted = tuple(b for b in buckets if b[0] in self.limits)
        now = time.monotonic()
        with self._lock:
            windows = [(self._window(name, key), units) for name, key, units in wanted]
            t = now
            for _ in range(8):  # the latest of the buckets' earliest moments; stable after a pass or two
                later = max((w.earliest(t, u) for w, u in windows), default=t)
                if later <= t:
                    break
                t = later
            if max_wait is not None and t - now > max_wait:
                return None
            for (window, units), (name, _, _) in zip(windows, wanted, strict=True):
                window.take(t, units)
                self.sent[name] = self.sent.get(name, 0.0) + units
                if t > now:
                    self.waited[name] = self.waited.get(name, 0.0) + (t - now)
        return Reservation(t, wanted)

    def pause(self, buckets: Iterable[tuple[str, str, float]], seconds: float) -> None:
        """A 429: Graph's Retry-After holds every request of these buckets, whichever dataset sends it."""
        until = time.monotonic() + max(0.0, seconds)
        with self._lock:
            for name, key, _ in buckets:
                if name in self.limits:
                    window = self._window(name, key)
                    window.paused_until = max(window.paused_until, until)

    def charge(self, name: str, key: str, units: float) -> None:
        """Graph said what a request cost (x-ms-resource-unit) beyond the estimate: count the difference now."""
        if units <= 0 or name not in self.limits:
            return
        with self._lock:
            window = self._window(name, key)
            window.take(max(time.monotonic(), window.entries[-1][0] if window.entries else 0.0), units)

    def near_limit(self, name: str, share: float) -> None:
        """x-ms-throttle-limit-percentage over 1 (or close to it): spend a window's worth less for a while."""
        if name not in self.limits or share < 0.8:
            return
        with self._lock:
            window = self._window(name, "")
            window.paused_until = max(window.paused_until, time.monotonic() + window.span * min(1.0, share - 0.8))


_PACERS: dict[tuple[str, ...], Pacer] = {}
_PACERS_LOCK = threading.Lock()


def pacer_for(key: tuple[str, ...], limits: Mapping[str, Quota]) -> Pacer:
    """The process-wide pacer of one (Graph endpoint, tenant, app): runs of a process share Graph's buckets."""
    with _PACERS_LOCK:
        pacer = _PACERS.get(key)
        if pacer is None or pacer.limits.keys() != limits.keys() or any(
                (pacer.limits[n].window, pacer.limits[n].limit) != (q.window, q.limit)
                for n, q in limits.items() if n != "identity"):
            pacer = _PACERS[key] = Pacer(limits)
        return pacer
