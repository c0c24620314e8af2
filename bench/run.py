"""Benchmark: the collector against a simulated tenant that enforces Graph's limits, each in its own process.

    .venv/bin/python bench/run.py --users 100000 200000 1000000 --throttled 100000 --write-doc

For every tenant size it runs all core datasets at the given latency and prints wall seconds, CPU,
peak RSS, Graph requests per dataset against the minimum (pages at Graph's size caps) and the plan.
Once (at the first size) it also measures the `users` dataset alone (CPU per user, end to end),
the same users fetched the straightforward msgraph-sdk way (model objects) and a cold start.
`--throttled N` adds a run at N users where listing users with signInActivity falls under the
identity-and-access-reports limit (5 requests per 10 s; an open question whether Graph does this).
Every figure carries the machine's load average before and after it, because a busy machine
distorts wall times. `--write-doc` puts the results into docs/performance.md between its markers.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
CORE = ("organization", "subscribed_skus", "users", "user_sign_in_activity")
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:results -->", "<!-- end bench:results -->"
# The budgets: (users, wall seconds) and peak RSS at the largest size.
WALL_BUDGET = {100_000: 30.0, 1_000_000: 300.0}
RSS_BUDGET_MIB = 300 * 1000 * 1000 / 2**20  # 300 MB
REQUEST_BUDGET = 0.05
# The collector's own throughput (CPU, memory, requests over the minimum), not Graph's request-rate quotas:
# the simulator and the collector divide every quota window by a million; bench/quotas.py measures under them.
NO_QUOTAS = ["--quota-scale", "1000000"]


def minimum_requests(name: str, entry: dict) -> int | None:
    """Fewest requests Graph allows for what the dataset returned: full pages at the size caps,
    one per report, one $batch per 20 groups plus the group list. None when it depends on a page
    size Graph does not document."""
    from connector.catalog.datasets import DATASETS

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


def load() -> float:
    return os.getloadavg()[0]


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
        self.proc.wait(30)


def worker(env: dict[str, str], *args: str) -> dict:
    before = load()
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "worker.py"), *args], cwd=ROOT,
                         input=orjson.dumps(env), capture_output=True, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr.decode()[-3000:]}")
    result = orjson.loads(out.stdout.splitlines()[-1])
    result["load"] = [round(before, 2), round(load(), 2)]
    return result


def measure(users: int, latency: float, extra: list[str], datasets: tuple[str, ...], *, once: bool,
            compare: int, warm: bool = False) -> dict:
    """One tenant size. `warm`: the simulator keeps users' JSON once built and an unmeasured run fills
    it first, so the measured run does not share this machine's cores with the stand-in's rendering
    (Graph's own CPU is not on the client's machine); every limit is enforced as before."""
    sim = SimulatorProcess(users, latency, [*NO_QUOTAS, *extra, *(["--render-cache"] if warm else [])])
    try:
        env = {**sim.env, "M365_DATASETS": ",".join(datasets)}
        warm_up = None
        if warm:
            before = sim.cpu()
            warm_up = worker(env, "collect")
            warm_up["simulatorCpu"] = sim.cpu() - before
        before = sim.cpu()
        full = worker(env, "collect")
        full["simulatorCpu"] = sim.cpu() - before
        result = {"users": users, "latency": latency, "simulator": extra, "full": full, "warmUp": warm_up}
        if once:
            result["usersOnly"] = worker({**sim.env, "M365_DATASETS": "users"}, "collect")
            result["model"] = worker(sim.env, "model", str(min(compare, users))) if compare else None
            result["coldStart"] = worker({**sim.env, "M365_DATASETS": "organization"}, "coldstart")
    finally:
        sim.stop()
    return result


def _load(entry: dict) -> str:
    return f"load average {entry['load'][0]:.2f} before, {entry['load'][1]:.2f} after"


def report(r: dict, title: str) -> str:
    n, full = r["users"], r["full"]
    lines = [f"#### {title}", "",
             f"- {'all core datasets' if set(full['datasets']) == set(CORE) else 'selected datasets'}: "
             f"status **{full['status']}**, wall **{full['wall']:.1f} s**, "
             f"CPU {full['cpu']:.1f} s ({full['cpu'] / n * 1e6:.0f} ms per 1,000 users), "
             f"peak RSS **{full['maxrssMiB']:.0f} MiB**; the simulator, in its own process, used "
             f"{full['simulatorCpu']:.1f} s of CPU meanwhile ({_load(full)})"]
    warm = r.get("warmUp")
    if warm:
        lines.append(f"- before it, an unmeasured run filled the simulator's render cache: status {warm['status']}, "
                     f"wall {warm['wall']:.1f} s, CPU {warm['cpu']:.1f} s, simulator CPU {warm['simulatorCpu']:.1f} s "
                     f"({_load(warm)}); the figures above are the second run's")
    only, model = r.get("usersOnly"), r.get("model")
    if only:
        lines.append(f"- `users` alone, end to end (request, parse, gzip, write): CPU {only['cpu']:.2f} s = "
                     f"**{only['cpu'] / n * 1000:.3f} ms per user**, wall {only['wall']:.1f} s, "
                     f"peak RSS {only['maxrssMiB']:.0f} MiB ({_load(only)})")
    if model and only:
        per_model, per_ours = model["cpu"] / model["users"], only["cpu"] / n
        lines.append(f"- msgraph-sdk model objects (`client.users.get()` + `odata_next_link`) on the first "
                     f"{model['users']:,} users of the same tenant: CPU {model['cpu']:.1f} s = "
                     f"{per_model * 1000:.2f} ms per user, wall {model['wall']:.1f} s; "
                     f"**{per_model / per_ours:.0f}x** the connector's CPU per user ({_load(model)})")
    cold = r.get("coldStart")
    if cold:
        lines.append(f"- cold start in a fresh process: `import function_app` {cold['importSeconds']:.2f} s, then "
                     f"invocation to the first Graph request {cold['firstRequestSeconds']:.2f} s (token "
                     f"included; {_load(cold)})")
    lines += ["",
              "| dataset | status | records | requests | minimum | over minimum | retries | 429s | waited s | "
              "seconds | plan |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, d in full["datasets"].items():
        low = minimum_requests(name, d)
        over = f"{(d['requests'] - low) / low * 100:.1f}%" if low else "n/a"
        plan = d.get("plan") or {}
        text = plan.get("strategy", "")
        if plan.get("partitions"):
            text += f" ({plan['partitions']} partitions + 1 recount)"
        if plan.get("fallback"):
            text += f", fell back to {plan['fallback']}"
        lines.append(f"| {name} | {d['status']} | {d['records']:,} | {d['requests']} | {low or 'n/a'} | {over} | "
                     f"{d['retries']} | {d['throttled']} | {d.get('retryWaitSeconds') or 0:.0f} | "
                     f"{d['durationSeconds']:.1f} | {text} |")
    if full["warnings"]:
        lines += ["", "Warnings: " + "; ".join(f"`{w['code']}` ({w.get('dataset', '')})" for w in full["warnings"])]
    return "\n".join(lines) + "\n"


def budgets(results: list[dict], throttled: dict | None) -> str:
    rows = ["| budget | measured | |", "|---|---|---|"]
    plain = [r for r in results if not r["simulator"]]
    for r in plain:
        limit = WALL_BUDGET.get(r["users"])
        if limit:
            wall = r["full"]["wall"]
            rows.append(f"| all core datasets, {r['users']:,} users, {r['latency'] * 1000:.0f} ms latency: wall "
                        f"≤ {limit:.0f} s | {wall:.1f} s ({_load(r['full'])}) | "
                        f"{'met' if wall <= limit else 'NOT met'} |")
    if plain:
        big = max(plain, key=lambda r: r["users"])
        rss = big["full"]["maxrssMiB"]
        rows.append(f"| peak RSS at {big['users']:,} users ≤ 300 MB ({RSS_BUDGET_MIB:.0f} MiB) | {rss:.0f} MiB | "
                    f"{'met' if rss <= RSS_BUDGET_MIB else 'NOT met'} |")
        rss_line = ", ".join(f"{r['users']:,}: {r['full']['maxrssMiB']:.0f} MiB" for r in plain)
        rows.append(f"| peak RSS flat from 100,000 users | {rss_line} | see figures |")
        for r in plain:
            d = r["full"]["datasets"].get("user_sign_in_activity")
            if d:
                low = minimum_requests("user_sign_in_activity", d)
                over = (d["requests"] - low) / low
                rows.append(f"| sign-in requests at {r['users']:,} users within 5% of the minimum | "
                            f"{d['requests']} vs {low} (+{over * 100:.1f}%) | "
                            f"{'met' if over <= REQUEST_BUDGET else 'NOT met'} |")
    if throttled:
        full = throttled["full"]
        complete = all(d["records"] == throttled["users"] for n, d in full["datasets"].items()
                       if n in ("users", "user_sign_in_activity"))
        d = full["datasets"].get("user_sign_in_activity", {})
        waited = d.get("retryWaitSeconds") or 0
        rows.append(f"| sign-in listing under 5 requests / 10 s at {throttled['users']:,} users: complete, "
                    f"how long | {full['status']}, {'every record' if complete else 'RECORDS MISSING'}, wall "
                    f"{full['wall']:.0f} s, {d.get('throttled', 0)} × 429, waited {waited:.0f} s "
                    f"({_load(full)}) | {'met' if complete and full['status'] == 'succeeded' else 'NOT met'} |")
    return "\n".join(rows) + "\n"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {load():.2f} at the start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 200_000, 1_000_000])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per Graph request (default 0.2)")
    parser.add_argument("--compare", type=int, default=5000,
                        help="users fetched the model-object way for the ratio (0: skip; default 5000)")
    parser.add_argument("--throttled", type=int, default=None, metavar="USERS",
                        help="also run at USERS users with sign-in listing under the identity-reports limit")
    parser.add_argument("--rate-limit", type=int, default=None, metavar="RU",
                        help="also run the first size under token-bucket throttling of RU resource units per 10 s")
    parser.add_argument("--datasets", nargs="+", default=list(CORE))
    parser.add_argument("--cold", action="store_true",
                        help="no warm-up: the simulator renders every user during the measured run (it then "
                             "needs about as much CPU as the collector, on the same machine)")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--write-doc", action="store_true", help=f"put the results into {DOC.name}")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    command = "bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = [f"Produced by `.venv/bin/python {command}` on {machine()}.", ""]
    print(out[0], flush=True)
    results: list[dict] = []
    datasets = tuple(args.datasets)
    for i, n in enumerate(args.users):
        try:
            r = measure(n, args.latency, [], datasets, once=i == 0, compare=args.compare, warm=not args.cold)
        except RuntimeError as exc:  # one size failing must not lose the others' figures
            text = f"#### {n:,} users: the run failed\n\n```\n{str(exc)[-2000:]}\n```\n"
            out.append(text)
            print(text, flush=True)
            continue
        results.append(r)
        text = report(r, f"{n:,} users, {args.latency * 1000:.0f} ms per Graph request")
        out.append(text)
        print(text, flush=True)
    if args.rate_limit:
        r = measure(args.users[0], args.latency, ["--rate-limit", str(args.rate_limit)], datasets, once=False,
                    compare=0)
        results.append(r)
        text = report(r, f"{r['users']:,} users under {args.rate_limit} resource units per 10 s")
        out.append(text)
        print(text, flush=True)
    throttled = None
    if args.throttled:
        throttled = measure(args.throttled, args.latency, ["--identity-reports-limit", "5",
                                                           "--sign-in-is-identity-report"], datasets, once=False,
                            compare=0)  # bound by the limit, not by CPU: no warm-up (it would take as long again)
        results.append(throttled)
        text = report(throttled, f"{args.throttled:,} users, sign-in listing limited to 5 requests per 10 s")
        out.append(text)
        print(text, flush=True)
    summary = budgets(results, throttled)
    out[1:1] = ["Budgets (the issue's acceptance figures):", "", summary]
    print(summary, flush=True)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    if args.write_doc:
        doc = DOC.read_text()
        start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
        DOC.write_text(doc[:start] + "\n" + "\n".join(out) + "\n" + doc[end:])
    return 0


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"(benchmark took {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    sys.exit(code)
