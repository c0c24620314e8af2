"""Benchmark of the licence insights: what they add to a run's CPU, and their memory on their own.

    .venv/bin/python bench/insights.py --users 200000

For each tenant size: the simulated tenant runs in its own process; two collections go into one folder
(the second against the same tenant one round of licence changes later, so it also compares with the
first); for each, the collector's process CPU and peak RSS and the CPU the insights took inside it (the
manifest's `insights.cpuSeconds`, measured with process time while nothing else runs). Then
`python -m connector insights` recomputes the second run's insights in a fresh process: its CPU and peak RSS
are the insights' own cost (the budget: 300 MB at 200,000 users).

`--quota-scale` divides Graph's quota windows (default 1,000,000: throughput, not quotas). Until the app-wide
quota ledger (connector/graph/ledger.py) took a start within 2 ms as within reach, a collection at that scale
did not finish (2026-12-07: docs/performance.md, Licence insights).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
# Throughput, not Graph's request-rate quotas (bench/quotas.py measures under them): see bench/run.py.
NO_QUOTAS = ["--quota-scale", "1000000"]
DATASETS = "organization,subscribed_skus,users,user_sign_in_activity,groups,subscriptions"

WORKER = """
import asyncio, resource, sys, time, orjson
from connector.config import load_settings
from connector.collect.engine import collect
from connector.store.local import LocalStore
env = orjson.loads(sys.stdin.buffer.read())
import os; os.environ.update(env)
t0 = time.perf_counter(); c0 = time.process_time()
m = asyncio.run(collect(load_settings(env), LocalStore(env["SNAPSHOT_DIR"]), trigger="bench"))
ru = resource.getrusage(resource.RUSAGE_SELF)
print(orjson.dumps({"status": m["status"], "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                    "maxrssMiB": ru.ru_maxrss / 1024, "insights": m["insights"],
                    "records": {n: d["records"] for n, d in m["datasets"].items()}}).decode())
"""


def simulator(users: int, latency: float, changes: int, quotas: list[str] = NO_QUOTAS
              ) -> tuple[subprocess.Popen, dict[str, str]]:
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "--users", str(users), "--latency", str(latency),
                             "--licence-changes", str(changes), *quotas], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("the simulator did not start")
    return proc, orjson.loads(line)


def collect(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER], cwd=ROOT, input=orjson.dumps(env), capture_output=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    if out.returncode:
        raise RuntimeError(out.stderr.decode()[-3000:])
    return orjson.loads(out.stdout.splitlines()[-1])


ALONE = """
import contextlib, io, resource, sys, time, orjson
t0 = time.perf_counter()
from connector.cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["insights", "--out", sys.argv[1], "--json"])
ru = resource.getrusage(resource.RUSAGE_SELF)
print(orjson.dumps({"code": code, "wall": time.perf_counter() - t0, "cpu": ru.ru_utime + ru.ru_stime,
                    "maxrssMiB": ru.ru_maxrss / 1024, "entry": orjson.loads(out.getvalue())}).decode())
"""


def insights_alone(folder: str) -> dict:
    """`python -m connector insights` in a process of its own, which reports its own CPU and peak RSS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("M365_", "SNAPSHOT_"))}
    env.update(PYTHONPATH=str(ROOT), M365_PRODUCT_NAMES_URL="none")
    out = subprocess.run([sys.executable, "-c", ALONE, folder], cwd=ROOT, env=env, capture_output=True, check=False)
    if out.returncode:
        raise RuntimeError(out.stderr.decode()[-3000:])
    return orjson.loads(out.stdout.splitlines()[-1])


def measure(users: int, latency: float, datasets: str, keep: str | None, quotas: list[str] = NO_QUOTAS) -> dict:
    folder = keep or tempfile.mkdtemp(prefix="m365-bench-insights-")
    runs = []
    for changes in (0, 1):
        proc, env = simulator(users, latency, changes, quotas)
        try:
            runs.append(collect({**env, "SNAPSHOT_DIR": folder, "M365_DATASETS": datasets}))
            print(f"<!-- run {len(runs)}: {orjson.dumps(runs[-1]).decode()[:2000]} -->", flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(120)  # a large simulated tenant may take a while to stop
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    alone = insights_alone(folder)
    if not keep:
        subprocess.run(["rm", "-rf", folder], check=False)
    return {"users": users, "runs": runs, "alone": alone}


def report(r: dict) -> str:
    lines = [f"### {r['users']:,} users", "",
             "| run | collector CPU s | of which insights | insights share of the run | peak RSS MiB | findings |",
             "|---|---:|---:|---:|---:|---:|"]
    for i, run in enumerate(r["runs"], 1):
        ins = run["insights"]["cpuSeconds"]
        base = run["cpu"] - ins
        lines.append(f"| {i} ({'first' if i == 1 else 'compared with run 1'}) | {run['cpu']:.1f} | {ins:.2f} | "
                     f"+{ins / base * 100:.1f}% | {run['maxrssMiB']:.0f} | {run['insights']['findings']} |")
    a = r["alone"]
    lines += ["", f"`python -m connector insights` on run 2 in a fresh process (the insights alone, interpreter "
                  f"included): CPU {a['cpu']:.1f} s, wall {a['wall']:.1f} s, peak RSS **{a['maxrssMiB']:.0f} MiB**; "
                  f"findings file {a['entry']['files']['licence_findings.jsonl.gz']['records']:,} lines."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[200000])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per Graph request (default 0: CPU only)")
    parser.add_argument("--datasets", default=DATASETS,
                        help=f"M365_DATASETS of the runs: '*' for every dataset (default: {DATASETS})")
    parser.add_argument("--quota-scale", type=float, default=float(NO_QUOTAS[1]),
                        help="Graph's quota windows divided by this (default %(default)g: quotas out of the way)")
    parser.add_argument("--keep", metavar="DIR", help="collect into DIR and keep it (one tenant size only)")
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args(argv)
    results = []
    print(f"# bench/insights.py --users {' '.join(map(str, args.users))} --datasets '{args.datasets}'\n")
    for n in args.users:
        r = measure(n, args.latency, args.datasets, args.keep, ["--quota-scale", repr(args.quota_scale)])
        results.append(r)
        print(report(r), flush=True)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
