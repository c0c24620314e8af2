"""Benchmark of the access and software-inventory datasets (issue 14) and group memberships.

    .venv/bin/python bench/access.py --users 100000 --devices 20000 --applications 2000 --groups 5000 --latency 0.2

Starts the simulated tenant in one process and the collector in another (as bench/run.py does), collects
`group_members` and the issue 14 datasets together in one run, and prints per dataset: records,
requests against the minimum, $batch requests, retries, 429s and seconds, then wall, CPU and peak RSS
of the whole run. The minimum for a $batch fan-out is its parent list pages plus one $batch per 20
parents (the extra pages of objects with more than 999 related objects, few, are not counted in it);
for `user_managers`, one $batch per 20 pages of 100 users plus the `/users/$count`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
# Throughput, not Graph's request-rate quotas (bench/quotas.py measures under them): see bench/run.py.
NO_QUOTAS = ["--quota-scale", "1000000"]
DATASETS = ("group_members", "group_owners", "app_owners", "app_role_assignments", "detected_app_devices",
            "user_managers", "applications", "service_principals", "oauth2_grants", "role_eligibilities",
            "role_assignment_schedules")


def worker(env: dict[str, str]) -> dict:
    """In the collector's own process: one run, its manifest's figures, CPU and peak RSS."""
    sys.path.insert(0, str(ROOT))
    from connector.collect.engine import collect
    from connector.config import load_settings
    from connector.store.local import LocalStore

    with tempfile.TemporaryDirectory() as out:
        settings = load_settings(env)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        manifest = asyncio.run(collect(settings, LocalStore(out), trigger="bench"))
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
    keep = ("status", "records", "requests", "retries", "throttled", "durationSeconds", "batches", "groups",
            "applications", "servicePrincipals", "detectedApps", "objectsRead", "credentialExpiry")
    return {"status": manifest["status"], "wall": wall, "maxrssMiB": ru1.ru_maxrss / 1024,
            "cpu": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
            "datasets": {n: {k: d.get(k) for k in keep} for n, d in manifest["datasets"].items()},
            "warnings": [w["code"] for w in manifest["warnings"]]}


def minimum(name: str, d: dict, sps: int) -> int | None:
    pages = lambda n: max(1, math.ceil(n / 999))  # noqa: E731 - list pages at $top=999
    if name in ("group_members", "group_owners"):  # groups, then service principals (memberOf / ownedObjects)
        return pages(d["groups"]) + pages(sps) + math.ceil((d["groups"] + sps) / 20)
    if name == "app_owners":
        return pages(d["applications"]) + pages(d["servicePrincipals"]) + math.ceil(
            (d["applications"] + d["servicePrincipals"]) / 20)
    if name == "app_role_assignments":
        return pages(d["servicePrincipals"]) + math.ceil(d["servicePrincipals"] / 20)
    if name == "detected_app_devices":
        return 1 + math.ceil(d["detectedApps"] / 20)  # Intune page size undocumented: one list page assumed
    if name == "user_managers":
        return math.ceil(math.ceil(d["objectsRead"] / 100) / 20) + 1
    if name in ("applications", "service_principals"):
        return pages(d["records"])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100000)
    parser.add_argument("--devices", type=int, default=20000)
    parser.add_argument("--applications", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--rate-limit", type=int, default=None, help="resource units per 10 s (token bucket)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        env = orjson.loads(sys.stdin.buffer.read())
        os.environ.update(env)  # CA bundle variables are read from the process environment
        sys.stdout.write(orjson.dumps(worker(env)).decode() + "\n")
        return 0
    extra = ["--rate-limit", str(args.rate_limit)] if args.rate_limit else []
    sim = subprocess.Popen([sys.executable, "-m", "simulator", "--users", str(args.users), "--devices",
                            str(args.devices), "--applications", str(args.applications), "--groups", str(args.groups),
                            "--latency", str(args.latency), *NO_QUOTAS, *extra], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
    try:
        env = orjson.loads(sim.stdout.readline())
        env["M365_DATASETS"] = ",".join(DATASETS)
        load = os.getloadavg()
        out = subprocess.run([sys.executable, __file__, "--worker"], input=orjson.dumps(env), capture_output=True,
                             cwd=ROOT, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if out.returncode:
            raise SystemExit(out.stderr.decode()[-3000:])
        r = orjson.loads(out.stdout.splitlines()[-1])
        fields = Path(f"/proc/{sim.pid}/stat").read_text().rsplit(")", 1)[1].split()
        sim_cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    finally:
        sim.terminate()
        sim.wait(30)
    sps = r["datasets"]["app_role_assignments"].get("servicePrincipals") or 0
    print(f"# bench/access.py --users {args.users} --devices {args.devices} --applications {args.applications} "
          f"--groups {args.groups} --latency {args.latency}" + (f" --rate-limit {args.rate_limit}" if extra else ""))
    print(f"\nload average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    print(f"run status **{r['status']}**, wall **{r['wall']:.1f} s**, CPU {r['cpu']:.1f} s, peak RSS "
          f"**{r['maxrssMiB']:.0f} MiB** (the simulator, in its own process, used {sim_cpu:.1f} s of CPU); warnings: "
          f"{', '.join(sorted(set(r['warnings']))) or 'none'}\n")
    print("| dataset | status | records | requests | minimum | $batch | retries | 429s | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, d in r["datasets"].items():
        low = minimum(name, d, sps) if d["status"] == "succeeded" else None
        print(f"| {name} | {d['status']} | {d['records']:,} | {d['requests']} | {low or 'n/a'} | "
              f"{d.get('batches') or ''} | {d['retries']} | {d['throttled']} | {d['durationSeconds']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
