"""Datasets that yield a shared quota bucket to a slower-bound dataset's first window (Dataset.yields_to).

Sign-in activity is bound by GET signInActivity's 10 requests a minute and shares identity and access reports'
5 per 10 s with MFA registration. If both start at once, MFA pages take shared slots while the sign-in chain
fills its first minute, so its ten pages spread over half a minute instead of ten seconds; every later minute
starts where its counterpart went out (a sliding window), so the spread is paid again at the end of the run.
The yielding dataset therefore waits until the other has had its first window's pages answered (or one window
has passed, or it ended); from then on the pacer keeps the places of its next pages (connector/graph/pacer.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.catalog.datasets import DATASETS


@dataclass
class FirstWindow:
    """Opens when `limit` pages of the dataset were answered, when it ends, or after `window` seconds."""

    limit: int
    window: float
    pages: int = 0
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def page(self) -> None:
        self.pages += 1
        if self.pages >= self.limit:
            self.opened.set()

    def close(self) -> None:
        """The dataset ended (any way): nothing is left to yield to."""
        self.opened.set()

    async def wait(self) -> float:
        """Seconds waited."""
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(self.opened.wait(), self.window)
        except TimeoutError:
            pass
        return time.perf_counter() - t0


def first_windows(started: Iterable[str], estimates: Mapping[str, Any], limits: Mapping[str, Any]) -> dict[str,
                                                                                                           FirstWindow]:
    """A gate per dataset that another started dataset yields to, when its estimate names a binding quota (a
    listing of one window's pages or fewer has none, and nothing waits for it)."""
    names = set(started)
    gates: dict[str, FirstWindow] = {}
    for name in names:
        other = DATASETS[name].yields_to
        estimate = estimates.get(other)
        quota = limits.get(estimate.quota) if estimate is not None and estimate.quota else None
        if other in names and quota is not None and other not in gates:
            gates[other] = FirstWindow(max(1, int(quota.limit)), float(quota.window))
    return gates
