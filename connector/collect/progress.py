"""Progress of a running collection, for the people waiting on it.

A long run (a large tenant's sign-ins or memberships take many minutes) must show it is moving:
the engine logs one progress line every PROGRESS_LOG_SECONDS while datasets run, on the
`m365_connector` logger, so the Function app's log stream and Application Insights see it (and the
CLI prints it when stderr is not a terminal); on a terminal the CLI shows a live table instead,
drawn with rich. Both read the same figures: records written so far, Graph requests, retries and
429s per dataset, and the rate since the dataset started.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("m365_connector")

PROGRESS_LOG_SECONDS = 60.0
PROGRESS_EVENT = "collection_progress"


@dataclass(frozen=True)
class DatasetProgress:
    name: str
    status: str
    records: int
    requests: int
    retries: int
    throttled: int
    seconds: float
    rate: float  # records per second since the dataset started
    seconds_left: float | None = None  # expected, from Graph's quotas (connector/collect/estimate.py)


def rows(run: Any, now: float | None = None) -> list[DatasetProgress]:
    """Per-dataset figures of a running (or finished) engine Run; safe to call from another thread."""
    now = time.perf_counter() if now is None else now
    graph = getattr(run, "graph", None)
    stats = dict(getattr(graph, "stats", None) or {})
    out = []
    for name, res in list(run.results.items()):
        started = run.dataset_started.get(name)
        if res.status == "running" and started is not None:
            seconds = now - started
        else:
            seconds = res.durationSeconds
        st = stats.get(name)
        requests, retries, throttled = (st.requests, st.retries, st.throttled) if st else (
            res.requests, res.retries, res.throttled)
        rate = res.records / seconds if seconds > 0 else 0.0
        left = _seconds_left(run, name, res, seconds, requests)
        out.append(DatasetProgress(name, res.status, res.records, requests, retries, throttled, round(seconds, 1),
                                   round(rate, 1), left))
    return out


def _seconds_left(run: Any, name: str, res: Any, seconds: float, requests: int) -> float | None:
    if res.status in ("succeeded", "skipped", "failed"):
        return 0.0
    estimate = (getattr(run, "estimates", None) or {}).get(name)
    if estimate is None:
        return None
    if res.status == "pending":
        return round(estimate.seconds)
    from connector.collect.estimate import seconds_left

    left = seconds_left(estimate, res.records, seconds, requests)
    return None if left is None else round(left)


def run_seconds_left(current: list[DatasetProgress]) -> float | None:
    """The run's time left: its slowest dataset's (datasets run at once); None while nothing is estimated."""
    known = [r.seconds_left for r in current if r.seconds_left is not None]
    return max(known) if known else None


def log_progress(run: Any) -> None:
    """One INFO line with the figures as facts (telemetry turns them into dimensions)."""
    current = rows(run)
    done = sum(1 for r in current if r.status not in ("pending", "running"))
    running = [r for r in current if r.status == "running"]
    log.info("collection progress", extra={"m365": {
        "event": PROGRESS_EVENT, "runId": run.run_id, "tenantId": run.tenant_id, "trigger": run.trigger,
        "status": f"running ({done}/{len(current)} datasets done)",
        "seconds": round(time.time() - run.started, 1),
        "expectedSecondsLeft": run_seconds_left(current),
        "datasets": {r.name: {"status": r.status, "records": r.records, "seconds": r.seconds,
                              "requests": r.requests, "throttled": r.throttled, "recordsPerSecond": r.rate,
                              "secondsLeft": r.seconds_left}
                     for r in running},
    }})


def _left(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"~{seconds / 60:.0f} min" if seconds >= 90 else f"~{seconds:.0f} s"


class LiveTable:
    """A live per-dataset table on a terminal (rich), refreshed from the Run a few times a second."""

    def __init__(self, stream: Any) -> None:
        self.run: Any = None
        self._stream = stream
        self._live: Any = None

    def attach(self, run: Any) -> None:
        self.run = run

    def __enter__(self) -> LiveTable:
        from rich.console import Console
        from rich.live import Live

        self._live = Live(get_renderable=self._render, console=Console(file=self._stream), refresh_per_second=4,
                          transient=True, redirect_stdout=False, redirect_stderr=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(box=None, pad_edge=False, header_style="bold")
        for column, justify in (("dataset", "left"), ("status", "left"), ("records", "right"),
                                ("requests", "right"), ("retries", "right"), ("429s", "right"),
                                ("records/s", "right"), ("seconds", "right"), ("left", "right")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        if self.run is None:
            table.add_row("signing in...", "", "", "", "", "", "", "", "")
            return table
        for r in rows(self.run):
            style = {"running": "cyan", "succeeded": "green", "failed": "red", "skipped": "yellow"}.get(r.status)
            table.add_row(r.name, r.status, f"{r.records:,}", f"{r.requests:,}", str(r.retries), str(r.throttled),
                          f"{r.rate:,.0f}" if r.status == "running" else "", f"{r.seconds:.1f}",
                          _left(r.seconds_left) if r.status in ("pending", "running") else "", style=style)
        return table
