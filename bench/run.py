"""Benchmark: the collector against a simulated tenant, each in its own process.

    .venv/bin/python bench/run.py --users 10000 100000 200000 --latency 0.2

For every tenant size it prints wall seconds, CPU seconds, CPU ms per 1,000 users, peak RSS,
Graph requests per dataset against the minimum (pages at Graph's size caps), the CPU of the
`users` dataset alone, and the same users fetched the straightforward msgraph-sdk way (model
objects, odata_next_link) with the ratio of the two. `--throttle` adds a run under the
simulator's token-bucket throttling at Graph's documented per-app limit.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
CORE = ("organization", "subscribed_skus", "users", "user_sign_in_activity")


def minimum_requests(name: str, entry: dict) -> int | None:
    """Fewest requests Graph allows for what the dataset returned: full pages at the size caps,
    one per report, one $batch per 20 groups plus the group list. None when it depends on a page
    size Graph does not document."""
    from connector.datasets import DATASETS

    ds = DATASETS[name]
    if ds.report:
        return 1
    if name == "group_members":
        groups = entry.get("groups", 0)
        return math.ceil(groups / 999) + math.ceil(groups / 20)
    if ds.top:
        return max(1, math.ceil(entry["records"] / ds.top))
    if name in ("organization", "subscribed_skus"):
        return 1
    return None


class SimulatorProcess:
    def __init__(self, users: int, latency: float, extra: list[str]):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulator", "--users", str(users), "--latency", str(latency), *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the simulator did not start")
        self.env = orjson.loads(line)

    def cpu(self) -> float:
        """CPU seconds the simulator has used (to tell our cost from the stand-in's)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def worker(env: dict[str, str], *args: str) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "worker.py"), *args], cwd=ROOT,
                         input=orjson.dumps(env), capture_output=True, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr.decode()[-3000:]}")
    return orjson.loads(out.stdout.splitlines()[-1])


def measure(users: int, latency: float, compare: int, extra: list[str], datasets: tuple[str, ...]) -> dict:
    sim = SimulatorProcess(users, latency, extra)
    try:
        env = {**sim.env, "M365_DATASETS": ",".join(datasets)}
        before = sim.cpu()
        full = worker(env, "collect")
        full["simulatorCpu"] = sim.cpu() - before
        only_users = worker({**sim.env, "M365_DATASETS": "users"}, "collect")
        model = worker(sim.env, "model", str(min(compare, users))) if compare else None
        cold = worker({**sim.env, "M365_DATASETS": "organization"}, "coldstart")
    finally:
        sim.stop()
    return {"users": users, "full": full, "usersOnly": only_users, "model": model, "coldStart": cold}


def report(r: dict, latency: float) -> str:
    n = r["users"]
    full, only, model = r["full"], r["usersOnly"], r["model"]
    lines = [f"### {n:,} users, {latency * 1000:.0f} ms per Graph request",
             "",
             f"- {'all core datasets' if set(full['datasets']) == set(CORE) else 'selected datasets'}: "
             f"status **{full['status']}**, wall **{full['wall']:.1f} s**, "
             f"CPU {full['cpu']:.1f} s ({full['cpu'] / n * 1e6:.0f} ms per 1,000 users), "
             f"peak RSS **{full['maxrssMiB']:.0f} MiB** (the simulator, in its own process, used "
             f"{full['simulatorCpu']:.1f} s of CPU meanwhile)",
             f"- `users` alone, end to end (request, parse, gzip, write): CPU {only['cpu']:.2f} s = "
             f"**{only['cpu'] / n * 1000:.3f} ms per user**, wall {only['wall']:.1f} s, "
             f"peak RSS {only['maxrssMiB']:.0f} MiB"]
    if model:
        per_model = model["cpu"] / model["users"]
        per_ours = only["cpu"] / n
        lines.append(f"- msgraph-sdk model objects (`client.users.get()` + `odata_next_link`) on the first "
                     f"{model['users']:,} users of the same tenant: CPU {model['cpu']:.1f} s = "
                     f"{per_model * 1000:.2f} ms per user, wall {model['wall']:.1f} s; "
                     f"**{per_model / per_ours:.0f}x** the connector's CPU per user")
    cold = r["coldStart"]
    lines.append(f"- cold start in a fresh process: `import function_app` {cold['importSeconds']:.2f} s, then "
                 f"invocation to the first Graph request {cold['firstRequestSeconds']:.2f} s (token included)")
    lines += ["",
              "| dataset | status | records | requests | minimum | over minimum | retries | 429s | seconds | plan |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, d in full["datasets"].items():
        low = minimum_requests(name, d)
        over = f"{(d['requests'] - low) / low * 100:.1f}%" if low else "n/a"
        plan = (d.get("plan") or {}).get("strategy", "")
        if (d.get("plan") or {}).get("partitions"):
            plan += f" ({d['plan']['partitions']} partitions + 1 count)"
        lines.append(f"| {name} | {d['status']} | {d['records']:,} | {d['requests']} | {low or 'n/a'} | {over} | "
                     f"{d['retries']} | {d['throttled']} | {d['durationSeconds']:.1f} | {plan} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[10000])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per Graph request (default 0.2)")
    parser.add_argument("--compare", type=int, default=5000,
                        help="users fetched the model-object way for the ratio (0: skip; default 5000)")
    parser.add_argument("--throttle", type=int, default=None, metavar="RU",
                        help="also run under token-bucket throttling of RU resource units per 10 s "
                             "(Graph's per-app limit for a large tenant is 8000)")
    parser.add_argument("--datasets", nargs="+", default=list(CORE))
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    results = []
    print(f"# bench/run.py --users {' '.join(map(str, args.users))} --latency {args.latency}\n")
    for n in args.users:
        r = measure(n, args.latency, args.compare, [], tuple(args.datasets))
        results.append(r)
        print(report(r, args.latency), flush=True)
        if args.throttle:
            t = measure(n, args.latency, 0, ["--rate-limit", str(args.throttle)], tuple(args.datasets))
            t["throttle"] = args.throttle
            results.append(t)
            print(f"Under throttling at {args.throttle} resource units per 10 s:\n", flush=True)
            print(report(t, args.latency), flush=True)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
