"""The pacer: every request of a run waits for room in Graph's buckets before it is sent.

Graph counts per app and tenant, not per dataset: every request a run sends draws on the same buckets
(connector/catalog/quotas.py), whichever dataset sends it. So each attempt (retries included; each
`$batch` item on its own, as Graph evaluates them) is classified into its buckets and waits for room in all
of them *before* it is sent, instead of learning the limit from 429s. A 429 still pauses the buckets of
the request that got it, for every dataset, and Graph's `x-ms-resource-unit` /
`x-ms-throttle-limit-percentage` headers correct the estimate of resource units.

Buckets are sliding windows: at most `limit` units in any `window` seconds (a little longer: MARGIN and the
slack below). A request takes the first moment that keeps every window within the limit, is moved to its
real sending time when it goes (`confirm`) and to its answer when that comes (`settle`). The pacer reserves
without awaiting, so it can be shared by every run of a process (one per app, tenant and Graph endpoint)
whatever event loop each run uses.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from connector.catalog.quotas import APP_WIDE, DEFAULTS, IDENTITY_BY_SIZE, Quota

# Graph counts a request when it arrives, somewhere between its sending and its answer: the pacer counts it
# at its answer (Pacer.settle), the latest it can have arrived, so a request held up on its way cannot put
# the next window's first request into this one. A window is also stretched by this share plus a slack of
# SLACK seconds (scaled with scaled quotas), which grows by SLACK_STEP with every 429 the bucket still gets
# (up to SLACK_MAX, or a tenth of the window), for clocks and answers that disagree all the same. The share is
# small: clocks drift by parts per million, and counting at the answer already covers a request's way there; at
# 1% it cost a 10-a-minute chain 1% of its pages for nothing (docs/performance.md, "Results on Graph's terms").
MARGIN = 0.001
SLACK = 0.05
SLACK_STEP = 0.1
SLACK_MAX = 1.0
SLACK_FLOOR = 0.002


class _Window:
    """Reservations of one bucket: send times and units, in time order.

    A request may take a moment before reservations already made for later (a sign-in page waiting for the
    next minute must not hold up an MFA page that fits in the reports bucket now), as long as no window of
    `span` seconds holds more than the limit. Buckets of many units (resource units) are kept first come
    first served: their waits are short and a scan of thousands of entries per request would cost more."""

    EXACT_UP_TO = 100  # request-count quotas: find the first gap among the reservations

    def __init__(self, quota: Quota):
        self.quota = quota
        self.times: list[float] = []
        self.units: list[float] = []
        self.paused_until = 0.0
        # Scaled quotas (M365_GRAPH_QUOTA_SCALE, against the local simulator) scale the slack alike.
        documented = DEFAULTS.get(quota.name)
        self.scale = min(1.0, quota.window / documented.window) if documented else 1.0
        self.slack = max(SLACK_FLOOR, SLACK * self.scale)
        self.held: list[tuple[float, str, float]] = []  # places kept for a slower bucket's next requests (hold())

    @property
    def span(self) -> float:
        return self.quota.window * (1 + MARGIN) + self.slack

    def widen(self) -> None:
        self.slack = min(max(SLACK_MAX * self.scale, self.quota.window / 10), self.slack + SLACK_STEP * self.scale)

    def _forget(self, before: float) -> None:
        cut = bisect.bisect_right(self.times, before)
        if cut:
            del self.times[:cut], self.units[:cut]

    def _load(self, start: float, end: float) -> float:
        """Units reserved in [start, end)."""
        lo, hi = bisect.bisect_left(self.times, start), bisect.bisect_left(self.times, end)
        return sum(self.units[lo:hi])

    def _fits(self, t: float, units: float) -> bool:
        limit, span = self.quota.limit, self.span
        lo = bisect.bisect_right(self.times, t - span)
        starts = [t, *(x for x in self.times[lo:] if x <= t)]
        return all(self._load(w, w + span) + units <= limit for w in starts)

    def earliest(self, t: float, units: float) -> float:
        """The first moment from t at which `units` more keep every window within the limit."""
        t = max(t, self.paused_until)
        units = min(units, self.quota.limit)  # a request dearer than the whole quota waits for an empty window
        if self.times and self.times[-1] > t and self.quota.limit <= self.EXACT_UP_TO:
            lo = bisect.bisect_right(self.times, t - self.span)
            for candidate in sorted({t, *(x + self.span for x in self.times[lo:] if x + self.span > t)}):
                if self._fits(candidate, units):
                    return candidate
        t = max(t, self.times[-1] if self.times else t)
        lo = bisect.bisect_right(self.times, t - self.span)
        total = sum(self.units[lo:])
        for start, u in zip(self.times[lo:], self.units[lo:], strict=True):
            if total + units <= self.quota.limit:
                break
            total -= u
            t = max(t, start + self.span)
        return t

    def drop(self, t: float, units: float) -> None:
        """Forget one reservation (it is moved to when the request is really sent)."""
        at = bisect.bisect_left(self.times, t)
        while at < len(self.times) and self.times[at] == t:
            if self.units[at] == units:
                del self.times[at], self.units[at]
                return
            at += 1

    def take(self, t: float, units: float) -> None:
        self._forget(time.monotonic() - self.span)  # reservations are never made in the past
        at = bisect.bisect_right(self.times, t)
        self.times.insert(at, t)
        self.units.insert(at, units)


def _first_fit(windows: list[tuple[_Window, float]], t: float) -> float:
    """The first moment from t with room in every bucket: the latest of their earliest moments, again until
    none moves it (stable after a pass or two)."""
    for _ in range(8):
        later = max((w.earliest(t, u) for w, u in windows), default=t)
        if later <= t:
            break
        t = later
    return t


@dataclass
class Reservation:
    at: float  # time.monotonic() at which the request may be sent
    buckets: tuple[tuple[str, str, float], ...]
    # time.monotonic() from which the app-wide ledger would let the request one window on go, per app-wide quota
    # (connector/graph/ledger.py Grant.next_window): where a kept place must be (Pacer._hold_places).
    app_next: dict[str, float] = field(default_factory=dict)

    def delay(self) -> float:
        return max(0.0, self.at - time.monotonic())


class Pacer:
    """Every bucket of one app, tenant and Graph endpoint; reservations are thread-safe and never await."""

    def __init__(self, limits: Mapping[str, Quota]):
        self.limits = dict(limits)
        # M365_GRAPH_QUOTAS set the resource units: the tenant's size does not change them.
        identity = self.limits.get("identity")
        self._identity_set = identity is None or identity.limit != DEFAULTS["identity"].limit
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()
        self.sent: dict[str, float] = {}  # units reserved per quota

    def _window(self, name: str, key: str) -> _Window:
        window = self._windows.get((name, key))
        if window is None:
            window = self._windows[(name, key)] = _Window(self.limits[name])
        return window

    def set_tenant_size(self, users: int) -> None:
        """Identity resource units by the tenant's size (unknown: the smallest quota)."""
        if self._identity_set:
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
            kept = self._take_back_places({name for name, _, _ in wanted}, windows, now)
            t = _first_fit(windows, now)
            if kept is not None and now <= kept[1] < t and all(
                    w._fits(kept[1], min(u, w.quota.limit)) for w, u in windows if w not in kept[0]):
                t = kept[1]  # the place kept for it: counted there already, so it fits where it was kept
            if max_wait is not None and t - now > max_wait:
                return None
            for (window, units), (name, _, _) in zip(windows, wanted, strict=True):
                window.take(t, units)
                self.sent[name] = self.sent.get(name, 0.0) + units
        return Reservation(t, wanted)

    def confirm(self, reservation: Reservation) -> bool:
        """At the moment of sending: move the reservation to now. A request sent later than reserved (a busy event
        loop) would otherwise reach Graph closer to the next ones than the pacer allowed; if now no longer fits,
        the reservation is made again for the first moment that does and False says to wait for it."""
        now = time.monotonic()
        with self._lock:
            windows = [(self._window(name, key), units) for name, key, units in reservation.buckets]
            for window, units in windows:
                window.drop(reservation.at, units)
            fits = all(window._fits(now, min(units, window.quota.limit)) for window, units in windows)
            reservation.at = now if fits else _first_fit(windows, now)
            for window, units in windows:
                window.take(reservation.at, units)
        return reservation.at <= now

    def settle(self, reservation: Reservation) -> None:
        """The answer is in: Graph counted the request at some moment before now, so count it at now, the
        latest it can have arrived. A request held up on its way (a new connection, a busy service) then
        cannot make the next window's first request reach Graph inside this one."""
        now = time.monotonic()
        with self._lock:
            for name, key, units in reservation.buckets:
                window = self._window(name, key)
                window.drop(reservation.at, units)
                window.take(max(now, reservation.at), units)
            reservation.at = max(now, reservation.at)
            self._hold_places(reservation)

    def _hold_places(self, reservation: Reservation) -> None:
        """A request its slowest bucket paces (a sign-in page: 10 a minute) comes again one span of that bucket
        after this one, the chain's next window. Its faster request-count buckets (identity reports: 5 per 10 s,
        shared with MFA registrations) keep that place for it, so other datasets fill what is left instead of
        delaying every sign-in window by up to 10 s each (measured: 1.046 of the floor at 100,000 users at
        Graph's own quotas with MFA pages in the same bucket)."""
        buckets = [(self._window(name, key), name, units) for name, key, units in reservation.buckets]
        slowest = max(buckets, key=lambda b: b[0].quota.window, default=None)
        if slowest is None:
            return
        # Where the next window's request will really go: this bucket's span on, or later if the app-wide
        # ledger's lease (counted from its start, held a little) lets it go only then. A place kept earlier than
        # the request comes would be moved at its sending (confirm) into windows other datasets have filled.
        at = max(reservation.at + slowest[0].span, reservation.app_next.get(APP_WIDE.get(slowest[1], ""), 0.0))
        for window, _name, units in buckets:
            if window.quota.window < slowest[0].quota.window and window.quota.limit <= _Window.EXACT_UP_TO:
                window.take(at, units)
                bisect.insort(window.held, (at, slowest[1], units))

    def _take_back_places(self, names: set[str], windows: list[tuple[_Window, float]],
                          now: float) -> tuple[list[_Window], float] | None:
        """A request of the slower bucket takes back the oldest place kept for it (it is that next request): the
        windows it was kept in and its moment. Places from longer ago than their window are forgotten."""
        freed: list[_Window] = []
        moment = 0.0
        for window, _units in windows:
            while window.held and window.held[0][0] < now - window.span:
                window.held.pop(0)
            mine = next((i for i, (_at, owner, _u) in enumerate(window.held) if owner in names), None)
            if mine is not None:
                at, _owner, units = window.held.pop(mine)
                window.drop(at, units)
                freed.append(window)
                moment = max(moment, at)
        return (freed, moment) if freed else None

    def pause(self, buckets: Iterable[tuple[str, str, float]], seconds: float) -> None:
        """A 429: Graph's Retry-After holds every request of these buckets, whichever dataset sends it, and the
        buckets keep a little more room from now on (their slack grows)."""
        until = time.monotonic() + max(0.0, seconds)
        with self._lock:
            for name, key, _ in buckets:
                if name in self.limits:
                    window = self._window(name, key)
                    window.paused_until = max(window.paused_until, until)
                    window.widen()

    def charge(self, name: str, key: str, units: float) -> None:
        """Graph said what a request cost (x-ms-resource-unit) beyond the estimate: count the difference now."""
        if units <= 0 or name not in self.limits:
            return
        with self._lock:
            window = self._window(name, key)
            window.take(max(time.monotonic(), window.times[-1] if window.times else 0.0), units)

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
