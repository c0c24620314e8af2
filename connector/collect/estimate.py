"""How long each dataset will take, from the tenant's size and Graph's quotas, said before a run starts.

A quota sets a floor no client can beat: sign-in activity is 500 users a page at 10 pages a minute, so
1,000,000 users take about 200 minutes whatever the machine. People deciding whether to run now, or how
to set M365_INVOCATION_BUDGET, need that figure up front (`check`, the start of every run) and, while a
run goes, the time left (progress lines, the status record, the manifest).

Only datasets with one page per N users have an estimate; the rest take seconds to minutes and are not
bound by a request-rate quota at any tenant size we know of (their figure is "-").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connector.catalog.datasets import DATASETS
from connector.catalog.quotas import APP_WIDE, Quota

# A page size where the declaration has none, or asks for one its API page does not document
# (Dataset.top_undocumented): userRegistrationDetails documents no $top
# (api/authenticationmethodsroot-list-userregistrationdetails.md: "supports only $filter and $orderBy"), so
# Graph's default page is assumed; its size is not documented [UNVERIFIED: 100, as for directory lists]. A
# running dataset's time left uses the page size it is actually answered with.
DEFAULT_PAGE = 100
# Datasets of one record per user, and the quotas their pages draw on besides resource units.
PER_USER = {
    "users": (),
    "user_sign_in_activity": ("sign_in_activity", "identity_reports"),
    "mfa_registration": ("identity_reports",),
}


@dataclass(frozen=True)
class Estimate:
    dataset: str
    users: int
    pages: int
    seconds: float
    quota: str  # the quota that binds ("" when none does)
    per_minute: float  # pages a minute the binding quota allows this dataset

    def text(self) -> str:
        if not self.quota:
            return f"{self.dataset}: {self.users:,} users in {self.pages:,} pages; not bound by a request quota"
        users_a_minute = self.per_minute * (self.users / self.pages if self.pages else 0)
        return (f"{self.dataset}: {self.users:,} users at Graph's limit of {users_a_minute:,.0f} a minute "
                f"({self.quota}): about {_duration(self.seconds)}")

    def as_dict(self) -> dict[str, Any]:
        return {"users": self.users, "pages": self.pages, "seconds": round(self.seconds), "quota": self.quota or None,
                "pagesPerMinute": round(self.per_minute, 2) if self.quota else None}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} seconds"
    minutes = f"{round(seconds / 60):,} minutes"
    return minutes if seconds < 7200 else f"{minutes} ({seconds / 3600:.1f} hours)"


def page_size(name: str) -> int:
    ds = DATASETS[name]
    return DEFAULT_PAGE if ds.top_undocumented else ds.top or DEFAULT_PAGE


def estimates(selected: Iterable[str], users: int, limits: Mapping[str, Quota],
              page_sizes: Mapping[str, int] | None = None) -> dict[str, Estimate]:
    """Each per-user dataset's pages and duration when the run's datasets share Graph's buckets.

    Datasets that draw on one bucket split it: sign-in activity and MFA registration both draw on identity
    and access reports (5 per 10 s), sign-in activity alone on its 10 a minute. Each bucket's pages are
    spent at its rate, so a dataset ends no sooner than its own quota allows, nor than the pages of its
    bucket before and with it do."""
    chosen = [n for n in selected if n in PER_USER]
    sizes = {n: (page_sizes or {}).get(n) or page_size(n) for n in chosen}
    pages = {n: max(1, math.ceil(users / sizes[n])) for n in chosen}
    out: dict[str, Estimate] = {}
    for name in chosen:
        seconds, binding, rate = 0.0, "", 0.0
        for quota_name in PER_USER[name]:
            quota = limits.get(quota_name)
            if quota is None:
                continue
            sharing = [n for n in chosen if quota_name in PER_USER[n]]
            mine = _windows(pages[name], quota)
            # The bucket's pages until this dataset is done: its own, and the others' up to as many.
            shared = _windows(sum(min(pages[n], pages[name]) for n in sharing), quota)
            need = max(mine, shared)
            if need > seconds:
                seconds, binding = need, quota_name
                # Alone in its bucket: the quota's own rate; sharing it: the share left to this dataset.
                rate = quota.per_minute if len(sharing) == 1 else pages[name] / need * 60
        if binding and seconds == _windows(pages[name], limits[binding]):
            seconds += _last_window(pages[name], limits[binding], [limits[q] for q in PER_USER[name]
                                                                  if q != binding and q in limits])
        out[name] = Estimate(name, users, pages[name], seconds, binding, rate)
    return out


def app_demand(found: Mapping[str, Estimate]) -> dict[str, float]:
    """Pages a run expects to draw from each app-wide quota: its place in line when tenants share them
    (connector/graph/ledger.py serves the least work left first)."""
    demand: dict[str, float] = {}
    for estimate in found.values():
        for quota_name in PER_USER[estimate.dataset]:
            name = APP_WIDE[quota_name]
            demand[name] = demand.get(name, 0.0) + estimate.pages
    return demand


def _last_window(pages: int, binding: Quota, others: list[Quota]) -> float:
    """The binding quota's last window holds up to `limit` pages, and they draw on the dataset's other buckets
    too: sign-in activity's last ten pages go five at once, then five one identity-reports window (10 s)
    later (no six of them can be sent within 10 s). Zero when the last window's pages fit every other bucket."""
    last = pages - max(0, math.ceil(pages / binding.limit) - 1) * binding.limit
    return max((_windows(last, quota) for quota in others), default=0.0)


def _windows(pages: int, quota: Quota) -> float:
    """Seconds `pages` requests take at `limit` per `window`: the first `limit` go at once, then one window
    for each `limit` more (the sliding window the pacer keeps to)."""
    return max(0, math.ceil(pages / quota.limit) - 1) * quota.window


def seconds_left(estimate: Estimate, records: int, elapsed: float, requests: int = 0) -> float | None:
    """Time left of a running per-user dataset: its pages still to come at the rate its quota allows (or at
    the rate seen so far, when it is not quota bound and has run a while). Pages are as large as Graph has
    answered them so far (`records` over `requests`), else as the estimate assumed."""
    page = records / requests if records and requests else estimate.users / max(1, estimate.pages)
    left_pages = math.ceil(max(0, estimate.users - records) / max(1.0, page))
    if estimate.quota and estimate.per_minute:
        return left_pages / estimate.per_minute * 60
    if records and elapsed > 0:
        return max(0, estimate.users - records) / (records / elapsed)
    return None
