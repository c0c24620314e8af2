"""Graph's app-wide quotas as one budget for every process of a deployment: leases in a shared ledger.

Graph counts some quotas per app across all tenants (catalog/quotas.py, scope "app": 10 sign-in activity
pages a minute, 122 identity-and-access-reports requests per 10 s, 150,000 resource units per 20 s, 130,000
requests per 10 s). A deployment that collects many tenants runs several processes, each with in-process
pacers (pacer.py) that only know their own tenant; these buckets must be counted in one place they all see.

The ledger is one row per app and quota in a store that can compare-and-swap (Azure Table rows with ETags,
connector/store/quota_rows.py; locked files of the machine for local runs; memory in one process). A row lists the
leases granted in the last window and the consumers (tenants) waiting. A *lease* is `units` that its holder
may send between `start` and `end` (the hold): so that requests sent anywhere inside a lease, and reaching
Graph a little later, never put more than the limit in any of Graph's windows, leases are placed so that no
span of `window * (1 + MARGIN) + slack + hold` holds more than the limit. A process takes its units from a
lease without a round trip, and sizes the next lease by what it used of the last (AppBudget), so the cost
is one compare-and-swap per lease, not per request. A lease of a small quota (sign-in activity's 10 a minute)
that its holder has spent is shortened to the answer of its last request, in a second write that nobody waits
for: a lease is counted until its end plus a window, so the next window's request need not wait for a hold it
did not use (0.6 s of every sign-in minute, 1.2% of the listing). A lease nothing was sent under is taken out.

Fair shares: when a bucket is contended, the next lease goes to the waiting consumer with the least work
left (pages it still needs in that bucket, as the run estimated them from the tenant's size), aged by how
long it has waited. Shortest-remaining-first is what makes fifty 2,000-user tenants finish in their first
minutes instead of all at the end, while the 1,000,000-user tenant, which needs 2,000 sign-in pages at 10 a
minute whatever the order, finishes no later than under round-robin (the budget is never left idle while
anyone waits); the ageing keeps a steady stream of small tenants from holding a big one back for ever.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from connector.catalog.quotas import DEFAULTS, Quota
from connector.graph.pacer import MARGIN, SLACK

# A lease may be spent during this share of its quota's window after its start (at least HOLD_MIN seconds): long
# enough for a process to wake and send, short, since a lease not used up is counted for the whole of it: 1% of
# the sign-in quota's rate (0.6 s of 60; a holder that misses it asks again, bench/quota_ledger.py counts how
# often). Quotas of more than BIG units a window are far beyond what a deployment sends (130,000 requests per
# 10 s): their leases last a whole window, so a process asks the ledger about once a window, at the price of
# counting them at half their documented rate.
HOLD = 0.01
HOLD_BIG = 1.0
BIG = 10000
# At least half a second, whatever the scale: a used-up lease ends at its request's answer (AppBudget.spent) and
# an unused one is taken out (Ledger.release), so the hold costs nothing when the request goes; but a request
# answered after its lease's end is counted only until that end plus a window, and it may have reached Graph
# later. With scaled windows a hold of 1% (30-60 ms) was shorter than a busy machine's send-to-arrival time:
# bench/tenants.py at 20x had 4-9 of about 790 requests refused by the app-wide sign-in quota, none with 0.5 s.
HOLD_MIN = 0.5
# ... and at least this many seconds for those far quotas: a lease must outlast the round trip that fetched it
# and the holder's wake-up, which a busy event loop (dozens of datasets parsing pages) stretches to tenths of a
# second; with windows divided by a benchmark's or test's scale, a lease of one window (0.1 s) ended before its
# holder could spend it, and a full collection spent most of its time asking for leases again (a 5,000-user
# tenant at scale 100: 19 s, 618 round trips, 147 leases ended unspent). Graph's own windows (10-20 s) are longer.
HOLD_BIG_MIN = 2.0
LOOKAHEAD = 0.05  # a lease may start this share of the window after it is granted (the holder sleeps until then)
LEASE_SHARE = 0.02  # the largest lease: this share of the limit (at least 1 unit)
STALE = 3.0  # a waiting consumer not heard from for this many spans no longer holds others back
AGING = 10.0  # waiting this many spans halves a consumer's work left, for the choice of who goes next
CONFLICTS = 50  # compare-and-swap attempts before a lease request backs off
VERSION = 1


class LedgerError(RuntimeError):
    """A ledger row is malformed or the ledger cannot be used; the message names the row and the field."""


class Rows(Protocol):
    """A store of JSON rows with versions: the one primitive the ledger needs (compare-and-swap)."""

    def read(self, key: str) -> tuple[dict[str, Any] | None, Any]:
        """The row and its version (None, None when there is none)."""

    def write(self, key: str, row: dict[str, Any], version: Any) -> bool:
        """Write the row if its version is still `version` (None: only if there is no row); False if not."""

    def describe(self, key: str) -> str:
        """Where the row is, for messages."""


class MemoryRows:
    """Rows in this process: the ledger when there is no shared store (one process collects every tenant)."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()
        self.writes = 0
        self.reads = 0

    def read(self, key: str) -> tuple[dict[str, Any] | None, Any]:
        with self._lock:
            self.reads += 1
            text, version = self._rows.get(key, (None, None))
        return (json.loads(text) if text is not None else None), version

    def write(self, key: str, row: dict[str, Any], version: Any) -> bool:
        with self._lock:
            current = self._rows.get(key, (None, None))[1]
            if current != version:
                return False
            self._rows[key] = (json.dumps(row), (current or 0) + 1)
            self.writes += 1
            return True

    def describe(self, key: str) -> str:
        return f"in-memory quota ledger row {key}"


@dataclass
class Lease:
    start: float  # time.time(): the holder may send from here
    end: float  # ... until here
    units: float


def spans(quota: Quota) -> tuple[float, float]:
    """(the span within which leases must hold at most the limit, the hold of one lease), in seconds."""
    documented = DEFAULTS.get(quota.name)
    scale = min(1.0, quota.window / documented.window) if documented else 1.0
    hold = max(HOLD_MIN, quota.window * HOLD) if quota.limit <= BIG else max(HOLD_BIG_MIN, quota.window * HOLD_BIG)
    return quota.window * (1 + MARGIN) + SLACK * scale + hold, hold


def _row(raw: dict[str, Any] | None, where: str) -> tuple[list[list[Any]], dict[str, list[float]]]:
    """The row's leases [[start, end, units, consumer]] and waiting consumers {consumer: [left, since, seen]}, or
    LedgerError naming the field that is not what this version writes."""
    if raw is None:
        return [], {}
    if raw.get("v") != VERSION:
        raise LedgerError(f"{where}: field v is {raw.get('v')!r}, expected {VERSION}; delete the row (it is "
                          "rebuilt within one window) or upgrade every instance to the same version.")
    try:
        leases, waiting = raw["leases"], raw["waiting"]
        leases = json.loads(leases) if isinstance(leases, str) else leases
        waiting = json.loads(waiting) if isinstance(waiting, str) else waiting
    except (KeyError, ValueError) as exc:
        raise LedgerError(f"{where}: field {getattr(exc, 'args', [''])[0] if isinstance(exc, KeyError) else 'leases'}"
                          " is missing or not JSON; delete the row (it is rebuilt within one window).") from None
    if not (isinstance(leases, list) and all(isinstance(x, list) and len(x) == 4 and all(
            isinstance(v, (int, float)) for v in x[:3]) and isinstance(x[3], str) for x in leases)):
        raise LedgerError(f"{where}: field leases is not a list of [start, end, units, consumer]; delete the row "
                          "(it is rebuilt within one window).")
    if not (isinstance(waiting, dict) and all(isinstance(v, list) and len(v) == 3 and all(
            isinstance(n, (int, float)) for n in v) for v in waiting.values())):
        raise LedgerError(f"{where}: field waiting is not a map of consumer to [left, since, seen]; delete the "
                          "row (it is rebuilt within one window).")
    return leases, waiting


def _reach(span: float, hold: float) -> float:
    """How long after a lease's end it still counts: the window, the margin and the slack (span less the hold)."""
    return span - hold


def _live(leases: list[list[Any]], now: float, reach: float) -> list[list[Any]]:
    return [lease for lease in leases if lease[1] + reach > now]


def _earliest(leases: list[list[Any]], now: float, units: float, quota: Quota, span: float,
              hold: float) -> float:
    """The first start from now at which `units` more keep every span within the limit (first come, first
    served: never before the last lease's start). A lease counts until its end plus a window (its end is its
    start plus the hold, or its last request's moment once its holder has spent it)."""
    units = min(units, quota.limit)  # a request dearer than the whole quota waits for an empty span
    reach = _reach(span, hold)
    t = max([now] + [lease[0] for lease in leases])
    counted = sorted((lease[1] + reach, lease[2]) for lease in leases if lease[1] + reach > t)
    total = sum(u for _, u in counted)
    for free_at, u in counted:
        if total + units <= quota.limit:
            break
        total -= u
        t = max(t, free_at)
    return t


def _priority(entry: list[float], now: float, span: float) -> float:
    left, since, _ = entry
    return left / (1 + max(0.0, now - since) / (AGING * span))


def _rank(line: list[tuple[str, list[float]]], consumer: str) -> int:
    return next(i for i, (c, _) in enumerate(line) if c == consumer)


class Ledger:
    """Leases of the app-wide buckets of one app, over a Rows store shared by every process."""

    def __init__(self, rows: Rows, app: str):
        self.rows = rows
        self.app = app
        self.conflicts = 0  # compare-and-swap writes lost to another process (each retried)
        self.round_trips = 0  # reads and writes of the rows

    def key(self, quota: str) -> str:
        return f"{self.app}/{quota}"

    def pause(self, quota: Quota, seconds: float, consumer: str) -> None:
        """Graph refused a request in this app-wide bucket (a 429 whose scope is the application): no process
        of the deployment gets a lease in it for `seconds`. A lease of the whole limit placed a span before the
        end of the pause keeps every later lease from starting earlier (it counts until the pause ends)."""
        key = self.key(quota.name)
        span, hold = spans(quota)
        for _ in range(CONFLICTS):
            raw, version = self.rows.read(key)
            self.round_trips += 1
            leases, waiting = _row(raw, self.rows.describe(key))
            now = time.time()
            start = round(now + seconds - span, 3)
            if any(lease[2] >= quota.limit and lease[0] >= start for lease in leases):
                return  # another process paused it as long already
            leases = _live(leases, now, _reach(span, hold))
            leases.append([start, round(start + hold, 3), quota.limit, f"429:{consumer}"])
            leases.sort(key=lambda lease: lease[0])
            self.round_trips += 1
            if self.rows.write(key, {"v": VERSION, "leases": leases, "waiting": waiting}, version):
                return
            self.conflicts += 1
            time.sleep(random.uniform(0, 0.05))

    def lease(self, quota: Quota, units: float, consumer: str, left: float) -> Lease | float:
        """A lease of `units` for `consumer` (who has `left` units of work in this bucket), or the time.time()
        at which to ask again (the bucket is full, or a waiting consumer with less work left goes first)."""
        key = self.key(quota.name)
        span, hold = spans(quota)
        # At least twice the row's millisecond rounding of a start: a window of microseconds (quotas scaled
        # a million times, as benchmarks switch them off) would otherwise never see its rounded-up start
        # within reach and chase it for ever.
        ahead_of_time = max(quota.window * LOOKAHEAD, 0.002)
        for _ in range(CONFLICTS):
            raw, version = self.rows.read(key)
            self.round_trips += 1
            leases, waiting = _row(raw, self.rows.describe(key))
            now = time.time()
            leases = _live(leases, now, _reach(span, hold))
            waiting = {c: e for c, e in waiting.items() if e[2] > now - STALE * span}
            seen = waiting.get(consumer)
            mine = [float(left), seen[1] if seen else now, now]
            start = math.ceil(_earliest(leases, now, units, quota, span, hold) * 1000) / 1000  # as the row keeps it
            line = sorted({**waiting, consumer: mine}.items(),
                          key=lambda ce: (_priority(ce[1], now, span), ce[1][1], ce[0]))
            first = line[0][0]
            # The first in line asks when its lease can be had: a lease free for longer than that was passed
            # over (its process is slow or gone), and whoever asks may have it rather than leave it idle.
            passed_over = now - _earliest(leases, 0.0, units, quota, span, hold) > 2 * hold + ahead_of_time
            if (first == consumer or passed_over) and start <= now + ahead_of_time:
                waiting.pop(consumer, None)
                leases.append([start, round(start + hold, 3), units, consumer])
                answer: Lease | float = Lease(start, start + hold, units)
            else:
                # Wait: the first in line asks again when the lease can be had, the second just after (to take
                # over when the first is done), the others when those between them and the first should have
                # drawn what they still need (at most a span on: estimates are estimates).
                between = line[1:_rank(line, consumer)]
                answer = start - ahead_of_time if first == consumer else max(start, now) + hold + min(
                    span, span * sum(min(e[0], quota.limit) for _, e in between) / quota.limit)
                if seen is not None and now - seen[2] < span:
                    return answer  # already in line, and recently: no write
                waiting[consumer] = [round(v, 3) for v in mine]
            row = {"v": VERSION, "leases": leases, "waiting": waiting}
            self.round_trips += 1
            if self.rows.write(key, row, version):
                return answer
            self.conflicts += 1
            time.sleep(random.uniform(0, min(hold, 0.05)))  # others are writing: let them, then read again
        return time.time() + hold

    def shrink(self, quota: Quota, lease: Lease, consumer: str, at: float) -> bool:
        """The holder spent the lease; its last request was answered at `at` (AppBudget.spent): the lease ends
        there (never later than it did). False if the row no longer has it (a lease a window old is dropped
        anyway)."""
        end = math.ceil(at * 1000) / 1000  # as the row keeps times; rounded up, never earlier than the request

        def shorten(mine: list[Any], _leases: list[list[Any]]) -> bool:
            if mine[1] <= end:
                return False
            mine[1] = max(mine[0], end)
            return True

        return self._amend(quota, lease, consumer, shorten)

    def release(self, quota: Quota, lease: Lease, consumer: str) -> bool:
        """The holder sent nothing under the lease: it ended before a busy event loop woke to spend it, or its
        request went back to wait for the tenant's own buckets. It no longer counts, so the next lease need not
        wait a window for it (a chain of 10 a minute lost one page of a window each time)."""

        def drop(mine: list[Any], leases: list[list[Any]]) -> bool:
            leases.remove(mine)
            return True

        return self._amend(quota, lease, consumer, drop)

    def _amend(self, quota: Quota, lease: Lease, consumer: str,
               change: Callable[[list[Any], list[list[Any]]], bool]) -> bool:
        """Change the consumer's own lease in the row (compare-and-swap, retried); False if the row no longer
        has it or `change` leaves it as it is."""
        key = self.key(quota.name)
        for _ in range(CONFLICTS):
            raw, version = self.rows.read(key)
            self.round_trips += 1
            leases, waiting = _row(raw, self.rows.describe(key))
            mine = next((x for x in leases if x[0] == lease.start and x[2] == lease.units and x[3] == consumer), None)
            if mine is None or not change(mine, leases):
                return False
            self.round_trips += 1
            if self.rows.write(key, {"v": VERSION, "leases": leases, "waiting": waiting}, version):
                return True
            self.conflicts += 1
            time.sleep(random.uniform(0, 0.05))
        return False


@dataclass
class _Pool:
    lease: Lease | None = None
    left: float = 0.0
    size: float = 1.0  # units of the next lease
    granted: float = 0.0  # units this consumer drew in this bucket
    lock: threading.Lock = field(default_factory=threading.Lock)
    name: str = ""  # the app-wide quota
    span: float = 0.0  # its span (spans()): a lease after a full span's worth starts this long after this one
    reach: float = 0.0  # ... that is, this long after this one's end


@dataclass
class Grant:
    """Units taken from leases for one request; `live()` until the first of their leases ends."""

    taken: list[tuple[_Pool, Lease, float]]

    def live(self) -> bool:
        now = time.time()
        return all(lease.start <= now < lease.end for _, lease, _ in self.taken)

    def next_window(self) -> dict[str, float]:
        """Per app-wide quota, the time.time() from which a lease a whole limit later can start: when a chain
        that fills the bucket (sign-in pages) sends its request one window on."""
        return {pool.name: lease.end + pool.reach for pool, lease, _ in self.taken}


class AppBudget:
    """The app-wide buckets as this process sees them: leases from the ledger, spent by its requests.

    One per app and Graph endpoint in a process (budget_for), shared by every run and tenant of it and by any
    event loop: state is behind threading locks and the ledger's I/O runs in a worker thread."""

    def __init__(self, ledger: Ledger, limits: Mapping[str, Quota]):
        self.ledger = ledger
        self.limits = {n: q for n, q in limits.items() if q.scope == "app"}
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._demand: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self.requests = 0  # requests that drew on the budget
        self.waited = 0.0  # seconds they waited for it
        self.expired = 0  # leases that ended with units left: the processes were too slow to spend them
        self.released = 0  # ... of which none was used, taken out of the ledger

    def set_demand(self, consumer: str, demand: Mapping[str, float]) -> None:
        """The units a consumer (a tenant's run) expects to draw per app-wide quota: who goes first."""
        with self._lock:
            self._demand[consumer] = dict(demand)

    def _pool(self, name: str, consumer: str) -> _Pool:
        with self._lock:
            pool = self._pools.get((name, consumer))
            if pool is None:
                span, hold = spans(self.limits[name])
                pool = self._pools[(name, consumer)] = _Pool(name=name, span=span, reach=_reach(span, hold))
            return pool

    def _left(self, name: str, consumer: str, pool: _Pool) -> float:
        demand = self._demand.get(consumer, {}).get(name)
        return 1e9 if demand is None else max(1.0, demand - pool.granted)

    def _draw(self, name: str, units: float, consumer: str, ask: bool) -> tuple[_Pool, Lease, float] | float | None:
        """Units from the pool's lease, or the time.time() to try again; when the lease is spent or over, None
        without `ask`, else the ledger is asked (in a worker thread: this blocks). Never waits on another
        thread's ledger call."""
        quota = self.limits[name]
        pool = self._pool(name, consumer)
        if not pool.lock.acquire(blocking=False):
            return time.time() + spans(quota)[1] / 10
        try:
            now = time.time()
            lease = pool.lease
            if lease is not None and now < lease.end and pool.left >= min(units, quota.limit):
                if now < lease.start:
                    return lease.start
                pool.left -= units
                pool.granted += units
                return pool, lease, units
            if not ask:
                return None
            if lease is not None:  # spent or over: size the next lease by what was used of this one
                used = lease.units - pool.left
                self.expired += pool.left >= units  # units left unspent when it ended (counted for nothing)
                if used <= 0 and self.ledger.release(quota, lease, consumer):
                    self.released += 1  # ... unless nothing was sent under it: then it is not counted at all
                ceiling = max(1.0, math.floor(quota.limit * LEASE_SHARE))
                pool.size = min(ceiling, pool.size * 2) if pool.left < units else max(1.0, used)
            want = max(min(units, quota.limit), pool.size)
            answer = self.ledger.lease(quota, want, consumer, self._left(name, consumer, pool))
            if isinstance(answer, Lease):
                pool.lease, pool.left = answer, answer.units
                return answer.start
            return answer
        finally:
            pool.lock.release()

    async def take(self, buckets: Iterable[tuple[str, str, float]], consumer: str) -> Grant:
        """Units for one request in every app-wide bucket it draws on (scarcest first), waiting as long as the
        ledger says; a Grant whose leases are all live when it returns."""
        wanted = sorted(((n, u) for n, _, u in buckets if n in self.limits), key=lambda b: self.limits[b[0]].limit)
        started = time.time()
        while True:
            taken: list[tuple[_Pool, Lease, float]] = []
            for name, units in wanted:
                while True:
                    got = self._draw(name, units, consumer, False)  # most requests: units of a live lease
                    if got is None:
                        got = await asyncio.get_running_loop().run_in_executor(
                            _EXECUTOR, self._draw, name, units, consumer, True)
                    if not isinstance(got, float):
                        taken.append(got)
                        break
                    await asyncio.sleep(max(0.0, got - time.time()))
            grant = Grant(taken)
            if grant.live():
                self.requests += 1
                self.waited += time.time() - started
                return grant
            self.give_back(grant)

    def spent(self, grant: Grant, consumer: str) -> None:
        """The grant's request has its answer (or failed): a lease of a small quota that it used up ends now, here
        and (in a write nobody waits for) in the ledger, so the next window's request is not held back by the rest
        of its hold. Now, not at the sending: Graph counts the request when it arrives, and only the answer says
        it has (the in-process pacer counts at the answer for the same reason)."""
        now = time.time()
        for pool, lease, _units in grant.taken:
            quota = self.limits[pool.name]
            if quota.limit > BIG or lease.start > now:
                continue
            with pool.lock:
                used_up = pool.lease is lease and pool.left < 1.0 and now < lease.end
                if used_up:
                    lease.end = now
            if used_up:
                _EXECUTOR.submit(self.ledger.shrink, quota, lease, consumer, now).add_done_callback(_ignore)

    async def pause(self, names: Iterable[str], seconds: float, consumer: str) -> None:
        """A 429 in the application's scope: these app-wide buckets pause for every process (the ledger), and
        this process's leases in them are spent."""
        for name in names:
            quota = self.limits.get(name)
            if quota is None:
                continue
            for (bucket, _consumer), pool in list(self._pools.items()):
                if bucket == name:
                    with pool.lock:
                        pool.left = 0.0
            await asyncio.get_running_loop().run_in_executor(_EXECUTOR, self.ledger.pause, quota, seconds, consumer)

    def give_back(self, grant: Grant) -> None:
        """Units of a request not sent after all return to their lease while it lasts."""
        for pool, lease, units in grant.taken:
            with pool.lock:
                if pool.lease is lease:
                    pool.left += units
                    pool.granted -= units


def _ignore(future: Any) -> None:
    """A lease not shortened stays as long as it was: counted a little longer, never less."""
    future.exception()


# The ledger's round trips have threads of their own: waiting on a busy row must not hold up the default
# executor's, which the run's storage writes use.
_EXECUTOR = ThreadPoolExecutor(max_workers=8, thread_name_prefix="quota-ledger")
_BUDGETS: dict[tuple[str, ...], AppBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def budget_for(key: tuple[str, ...], limits: Mapping[str, Quota], rows: Callable[[], Rows],
               where: str = "") -> AppBudget:
    """The process-wide budget of one (Graph endpoint, app) and ledger (`where`, for this process only):
    every run of the process shares its leases."""
    app = {n: (q.limit, q.window) for n, q in limits.items() if q.scope == "app"}
    with _BUDGETS_LOCK:
        budget = _BUDGETS.get((*key, where))
        if budget is None or {n: (q.limit, q.window) for n, q in budget.limits.items()} != app:
            budget = _BUDGETS[(*key, where)] = AppBudget(Ledger(rows(), "|".join(key)), limits)
        return budget
