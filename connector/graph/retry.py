"""How Graph requests wait and retry: one policy for throttling, an unavailable service, broken
connections and broken pages.

- Every request has one budget of retries (`M365_MAX_RETRIES`), whatever the cause: 429, 500,
  502, 503, 504, a transport error (reset, timeout, connection cut mid-body) or a page that is not
  the JSON it should be. Pages are idempotent GETs, so sending one again is always safe.
- Patience is not a failure: a 429 does not use up the budget while its scope keeps getting answers
  (some request of the same scope succeeded while this one was out, or since the scope's previous
  429). A rate limit such as
  the identity-reports limit (5 requests per 10 s) then slows a dataset down but never fails it,
  as long as the run's time allows; a service that answers nothing but 429 still exhausts it.
- The wait is Graph's `Retry-After` when it sends one, else exponential backoff with jitter.
- A wait longer than MAX_WAIT, or one that would end after the run's deadline
  (`M365_RUN_TIME_LIMIT`), is not waited: the request gives up at once and its dataset fails with
  a message saying so. The SDK's own retry handler draws the same line (it never retries a wait of
  180 s or more); a run does not stall an hour for a `Retry-After: 3600`.
- Throttling slows only the scope that was throttled (a dataset), never the others: its
  concurrency halves and new requests of that scope wait out the pause, which is set only when
  the throttled request really is retried and never for longer than MAX_WAIT.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Statuses worth sending again: throttled, or the service briefly unable to answer.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# The longest single wait the connector accepts (kiota's RetryHandler: no retry at 180 s or more).
MAX_WAIT = 180.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number (Graph's samples show "10" and "2.128") or an HTTP
    date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def backoff(retry: int) -> float:
    """Exponential backoff with jitter for the `retry`-th retry (0-based): about 0.5, 1, 2, 4 ... 30 s."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** retry)
    return ceiling / 2 + random.random() * ceiling / 2


class Deadline:
    """The moment a run must have finished its Graph work (monotonic clock)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()


class AdaptiveLimiter:
    """Concurrency of one scope that adapts to throttling: halves on a 429 and pauses new requests
    for the Retry-After (at most MAX_WAIT), then grows back by one slot per `limit` successful
    answers (slow recovery)."""

    def __init__(self, maximum: int):
        self.maximum = maximum
        self.limit = maximum
        self.in_flight = 0
        self.lowest = maximum
        self.pauses = 0
        self.completed = 0  # successful answers so far (progress, for the retry budget)
        self.completed_at_throttle = 0  # `completed` when the scope last got a 429
        self._successes = 0
        self._resume_at = 0.0
        self._cond = asyncio.Condition()

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._cond:
            while True:
                wait = self._resume_at - loop.time()
                if wait > 0:
                    self._cond.release()
                    try:
                        await asyncio.sleep(wait)
                    finally:
                        await self._cond.acquire()
                    continue
                if self.in_flight < self.limit:
                    break
                await self._cond.wait()
            self.in_flight += 1

    async def __aexit__(self, *exc: object) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def throttled(self, retry_after: float) -> None:
        loop = asyncio.get_running_loop()
        self.limit = max(1, self.limit // 2)
        self.lowest = min(self.lowest, self.limit)
        self._successes = 0
        self.pauses += 1
        self._resume_at = max(self._resume_at, loop.time() + min(max(0.0, retry_after), MAX_WAIT))

    def succeeded(self) -> None:
        self.completed += 1
        if self.limit >= self.maximum:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limit += 1
