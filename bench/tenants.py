"""Benchmark: many tenants from one deployment, through the queue, against Azurite and the simulator.

    .venv/bin/python bench/tenants.py --small 200 --small-users 2000 --large 2 --large-users 100000 \
        --workers 4 --scale 100 [--write-doc]

One simulator process serves every tenant behind one Entra and one Graph (simulator/fleet.py), with Graph's quotas
per app and tenant and per app across all tenants, windows divided by `--scale` (the collector paces by the same
scale). The tenants are registered in a tenant registry in Azurite's Blob Storage, one run per tenant is queued on
Azurite's queue (the large tenants first: the worst case for the small ones), and `--workers` worker processes
each take one message at a time and collect it exactly as the queue trigger does (connector.service.worker).

Printed: total wall against the app-wide sign-in floor (every tenant's signInActivity pages at 10 a minute per
app across all tenants), the longest wait of a small tenant (queued to finished), 429s against requests, peak
RSS per worker, and whether every tenant's snapshot holds every user (nothing lost).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATASETS = "organization,subscribed_skus,users,user_sign_in_activity"
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:tenants -->", "<!-- end bench:tenants -->"


def worker_loop() -> None:
    """A worker process: one message at a time from the runs queue, collected as the queue trigger does, until
    the queue stays empty. Prints one JSON line: runs collected, CPU and peak RSS."""
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy

    from connector.service import runs

    env = orjson.loads(sys.stdin.buffer.read())
    os.environ.update(env)
    queue = QueueClient.from_connection_string(env["AzureWebJobsStorage"], runs.RUNS_QUEUE,
                                               message_decode_policy=TextBase64DecodePolicy())
    done, idle_since = 0, time.monotonic()
    while time.monotonic() - idle_since < 5:
        # Longer than any run here: the Functions host keeps a message invisible while its invocation runs.
        messages = list(queue.receive_messages(max_messages=1, visibility_timeout=3600))
        if not messages:
            time.sleep(0.2)
            continue
        message = messages[0]
        began = time.monotonic()
        outcome = runs.process_message(message.content.encode(), message.dequeue_count or 1)
        queue.delete_message(message)
        done, idle_since = done + 1, time.monotonic()
        print(f"worker {os.getpid()}: run {done} {outcome} in {idle_since - began:.1f} s", file=sys.stderr, flush=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    sys.stdout.write(orjson.dumps({"runs": done, "cpu": usage.ru_utime + usage.ru_stime,
                                   "maxrssMiB": usage.ru_maxrss / 1024}).decode() + "\n")


def sign_in_floor(sizes: list[int], scale: float) -> float:
    """Seconds no client can beat: every tenant's signInActivity pages (500 users) at 10 a minute per app."""
    return sum(math.ceil(n / 500) for n in sizes) * 60 / 10 / scale


def run(args: argparse.Namespace) -> dict:
    from connector.service import runs
    from connector.service.appconfig import deployment_registry, registered_settings, store_for
    from connector.store.contract import read_json
    from connector.store.registry import TenantEntry
    from connector.store.status import parse_iso
    from simulator import TenantSpec
    from simulator.fleet import Fleet
    from tests.conftest import Azurite

    sizes = [args.large_users] * args.large + [args.small_users] * args.small
    # No render cache: it keeps every user's JSON (about 2.5 KB per user and $select), gigabytes for a fleet.
    specs = [TenantSpec(seed=1000 + i, users=n, domains=(f"t{i}.onmicrosoft.com",), quota_scale=args.scale)
             for i, n in enumerate(sizes)]
    azurite = Azurite()
    try:
        with Fleet(specs) as fleet:
            env = {**fleet.env(), "M365_DATASETS": DATASETS, "SNAPSHOT_CONNECTION_STRING": azurite.connection_string,
                   "SNAPSHOT_CONTAINER": f"b{uuid.uuid4().hex[:12]}", "AzureWebJobsStorage": azurite.connection_string,
                   "M365_INVOCATION_BUDGET": "100"}
            os.environ.update(env)
            registry = deployment_registry(env)
            for state in fleet.tenants[1:]:
                registry.add(TenantEntry(state.tenant.domains[0]))
            keys = [e.key for e in registry.entries()]
            started = time.monotonic()
            stamp = datetime.now(UTC)
            # The workers are up before the timer queues the runs, as the Function app's instances are: each takes
            # a message as soon as there is one (a worker waits 5 s on an empty queue before it stops).
            workers = [subprocess.Popen([sys.executable, __file__, "--worker"], cwd=ROOT, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE) for _ in range(args.workers)]
            for proc in workers:
                proc.stdin.write(orjson.dumps(env))
                proc.stdin.close()
            for key in keys:  # the large tenants first: the worst case for the small ones
                runs.request_run(registered_settings(env, key), "timer", None, env)
            queued = time.monotonic() - started
            results = [orjson.loads(proc.stdout.read() or b"{}") for proc in workers]
            for proc in workers:
                proc.wait()
            wall = time.monotonic() - started - 5  # the workers' idle wait before they stop
            rows = []
            for key, state, users in zip(keys, fleet.tenants, sizes, strict=True):
                store = store_for(registered_settings(env, key))
                record = runs.list_statuses(store, key, 1)[0]
                manifest = read_json(store, record["manifest"]) if record.get("manifest") else None
                counts = {n: d["records"] for n, d in (manifest or {}).get("datasets", {}).items()}
                finished = parse_iso(record.get("finishedAt"))
                rows.append({"users": users, "status": record["status"],
                             "complete": counts.get("users") == users == counts.get("user_sign_in_activity"),
                             "waitSeconds": (finished - stamp).total_seconds() if finished else None,
                             "requests": state.request_count(None), "throttled": state.throttled_count})
            app = fleet.app_limits.throttled if fleet.app_limits else {}
    finally:
        azurite.stop()
    small = [r["waitSeconds"] for r in rows if r["users"] == args.small_users and r["waitSeconds"] is not None]
    requests = sum(r["requests"] for r in rows)
    throttled = sum(r["throttled"] for r in rows)
    return {"tenants": len(rows), "sizes": {"small": [args.small, args.small_users], "large": [args.large,
                                                                                             args.large_users]},
            "workers": results, "scale": args.scale, "wall": wall, "queuedSeconds": queued,
            "signInFloor": sign_in_floor(sizes, args.scale),
            "longestSmallWait": max(small) if small else None, "requests": requests, "throttled": throttled,
            "appWideThrottled": app, "succeeded": sum(r["status"] == "succeeded" for r in rows),
            "complete": sum(r["complete"] for r in rows), "load": os.getloadavg()[0]}


def report(result: dict) -> str:
    rss = ", ".join(f"{w.get('maxrssMiB', 0):.0f}" for w in result["workers"])
    per_worker = ", ".join(str(w.get("runs")) for w in result["workers"])
    lines = [
        f"{result['tenants']} tenants ({result['sizes']['large'][0]} x {result['sizes']['large'][1]:,} users, "
        f"{result['sizes']['small'][0]} x {result['sizes']['small'][1]:,}), {len(result['workers'])} worker "
        f"processes, quotas scaled {result['scale']:g}x",
        f"- wall {result['wall']:.0f} s; app-wide sign-in floor {result['signInFloor']:.0f} s "
        f"({result['wall'] / result['signInFloor']:.2f}x the floor; from the timer's first message, queueing the "
        f"{result['tenants']} runs took {result.get('queuedSeconds', 0):.1f} s of it)",
        f"- longest wait of a small tenant (queued to finished): {result['longestSmallWait']:.0f} s",
        f"- 429s: {result['throttled']:,} of {result['requests']:,} Graph requests "
        f"({100 * result['throttled'] / max(1, result['requests']):.1f}%); refused by the per-app quotas across "
        f"tenants: {result['appWideThrottled']}",
        f"- peak RSS per worker: {rss} MiB; runs per worker: {per_worker}",
        f"- succeeded {result['succeeded']} of {result['tenants']}; every user and sign-in record in "
        f"{result['complete']} of {result['tenants']} snapshots; load average {result['load']:.1f}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--small-users", type=int, default=2000)
    parser.add_argument("--large", type=int, default=2)
    parser.add_argument("--large-users", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--scale", type=float, default=100.0)
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()
    if args.worker:
        worker_loop()
        return 0
    result = run(args)
    text = report(result)
    print(text)
    print(orjson.dumps(result).decode())
    if args.write_doc:
        doc = DOC.read_text()
        if BEGIN in doc:
            head, _, rest = doc.partition(BEGIN)
            doc = head + BEGIN + "\n" + text + "\n" + rest.partition(END)[1] + rest.partition(END)[2]
            DOC.write_text(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
