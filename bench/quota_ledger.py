"""Benchmark of the app-wide quota ledger (connector/graph/ledger.py) on Azurite's Table service.

    .venv/bin/python bench/quota_ledger.py [--processes 4] [--small 50] [--scale 60]

1. Sign-in fan-out: one tenant of `--big` sign-in pages and `--small` tenants of 4 pages each (2,000 users),
   spread over `--processes` processes (each its own ledger client and budget, as Function instances are),
   drawing on GET signInActivity's 10 a minute per app, the window divided by `--scale`. Prints the wall time
   against the floor (all pages at 10 a window), when the last small tenant finished, how many pages the big
   one had by then, the most requests in any window, and the Table round trips per request.
2. Bulk requests: every process sends as fast as it can against "any request, 130,000 per 10 s" (not
   scaled): Table round trips per request when leases are not contended.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connector.catalog.quotas import DEFAULTS  # noqa: E402
from connector.graph.ledger import AppBudget, Ledger  # noqa: E402
from connector.store.quota_rows import TableRows  # noqa: E402
from tests.conftest import Azurite  # noqa: E402  (the tests' own Azurite: Blob, Queue and Table)


def sign_in_worker(where: str, app: str, scale: float, tenants: dict[str, int], latency: float, out: Any) -> None:
    """One process: its tenants' sign-in chains, one page at a time each, all on one budget."""
    quota = replace(DEFAULTS["app_sign_in_activity"], window=DEFAULTS["app_sign_in_activity"].window / scale)
    rows = TableRows(connection_string=where)
    budget = AppBudget(Ledger(rows, app), {quota.name: quota})
    for tenant, pages in tenants.items():
        budget.set_demand(tenant, {quota.name: pages})
    sent: dict[str, list[float]] = {t: [] for t in tenants}

    async def chain(tenant: str, pages: int) -> None:
        for _ in range(pages):
            await budget.take([(quota.name, "", 1.0)], tenant)
            sent[tenant].append(time.time())
            await asyncio.sleep(latency)  # the page's answer comes before the next is asked for

    async def main() -> None:
        await asyncio.gather(*(chain(t, p) for t, p in tenants.items()))

    asyncio.run(main())
    out.put({"sent": sent, "requests": rows.requests, "conflicts": budget.ledger.conflicts,
             "expired": budget.expired})


def bulk_worker(where: str, app: str, seconds: float, tasks: int, out: Any) -> None:
    quota = DEFAULTS["app_any"]
    rows = TableRows(connection_string=where)
    budget = AppBudget(Ledger(rows, app), {quota.name: quota})
    count = 0

    async def sender(tenant: str) -> None:
        nonlocal count
        end = time.time() + seconds
        while time.time() < end:
            await budget.take([(quota.name, "", 1.0)], tenant)
            count += 1
            await asyncio.sleep(0.005)  # a request in flight

    async def main() -> None:
        await asyncio.gather(*(sender(f"tenant-{os.getpid()}") for _ in range(tasks)))

    asyncio.run(main())
    out.put({"count": count, "requests": rows.requests, "conflicts": budget.ledger.conflicts})


def most_in_window(stamps: list[float], window: float) -> int:
    stamps.sort()
    most, lo = 0, 0
    for hi, t in enumerate(stamps):
        while t - stamps[lo] >= window:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


def spawn(target: Any, args_per_process: list[tuple]) -> tuple[list[dict], float]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, out)) for args in args_per_process]
    started = time.time()
    for proc in procs:
        proc.start()
    results = [out.get(timeout=3600) for _ in procs]
    for proc in procs:
        proc.join()
    return results, started


def sign_in_fan_out(where: str, processes: int, small: int, big: int, scale: float) -> None:
    tenants = {"big": big, **{f"small-{i:02d}": 4 for i in range(small)}}
    share: list[dict[str, int]] = [{} for _ in range(processes)]
    for i, (tenant, pages) in enumerate(tenants.items()):
        share[i % processes][tenant] = pages
    window = DEFAULTS["app_sign_in_activity"].window / scale
    latency = window / 60  # a page's answer takes 1 s of Graph's minute
    app = f"bench-{time.time_ns()}"  # one app: every process draws on the same rows
    results, started = spawn(sign_in_worker, [(where, app, scale, s, latency) for s in share])
    sent = {t: s for r in results for t, s in r["sent"].items()}
    stamps = [t for s in sent.values() for t in s]
    pages = len(stamps)
    started = min(stamps)  # from the first page: the processes' start-up is not the ledger's
    wall = max(stamps) - started
    floor = (pages / 10 - 1) * window  # the first 10 at once, then 10 a window
    smalls = [max(s) - started for t, s in sent.items() if t != "big"]
    last_small = max(smalls)
    big_before = sum(1 for t in sent["big"] if t - started < last_small)
    round_trips = sum(r["requests"] for r in results)
    print(f"sign-in fan-out: {processes} processes, 1 tenant of {big} pages + {small} of 4, 10 pages per "
          f"{window:.2f} s (scale {scale:g})")
    print(f"  wall {wall:.1f} s against the floor {floor:.1f} s ({wall / floor:.3f}x); most in any window "
          f"{most_in_window(stamps, window)} (limit 10)")
    print(f"  small tenants: last done at {last_small:.1f} s ({last_small / window:.1f} windows; their "
          f"{4 * small} pages alone need {4 * small / 10:.0f}), median {statistics.median(smalls):.1f} s; "
          f"big tenant had {big_before} of its {big} pages by then, done at {max(sent['big']) - started:.1f} s")
    print(f"  Table round trips: {round_trips} for {pages} requests ({round_trips / pages:.1f} a request), "
          f"{sum(r['conflicts'] for r in results)} ETag conflicts retried, "
          f"{sum(r['expired'] for r in results)} leases expired unspent")


def bulk(where: str, processes: int, seconds: float) -> None:
    app = f"bulk-{time.time_ns()}"
    results, _ = spawn(bulk_worker, [(where, app, seconds, 16) for _ in range(processes)])
    count = sum(r["count"] for r in results)
    round_trips = sum(r["requests"] for r in results)
    print(f"bulk: {processes} processes x 16 senders for {seconds:g} s against 130,000 requests per 10 s: "
          f"{count} requests ({count / seconds:,.0f}/s), {round_trips} Table round trips "
          f"({round_trips / count:.3f} a request, {round_trips / seconds / processes:.1f}/s per process), "
          f"{sum(r['conflicts'] for r in results)} ETag conflicts retried")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--big", type=int, default=100)
    parser.add_argument("--scale", type=float, default=60.0)
    parser.add_argument("--bulk-seconds", type=float, default=5.0)
    args = parser.parse_args()
    storage = Azurite()
    try:
        sign_in_fan_out(storage.connection_string, args.processes, args.small, args.big, args.scale)
        bulk(storage.connection_string, args.processes, args.bulk_seconds)
    finally:
        storage.stop()


if __name__ == "__main__":
    main()
