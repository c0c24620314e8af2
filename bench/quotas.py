"""Benchmark on Graph's terms: each dataset's wall time against the floor its documented quota sets.

    .venv/bin/python bench/quotas.py --users 100000 200000 1000000 --scale 60 --real 100000 --kill 1000000 \
        --write-doc

The simulator (its own process) enforces every quota of connector/catalog/quotas.py's declaration by its own
code (simulator/graph/limits.py), with every window divided by `--scale`; the collector reads the same scale
from the simulator's environment, so a 1,000,000-user run takes minutes and every figure is a ratio to its
floor: sign-in activity ceil(users / 500) pages at 10 a minute, MFA registration its pages at what the
identity-and-access-reports bucket (5 per 10 s) leaves it beside sign-in activity. `--real N` runs N users
once at Graph's own quotas (scale 1: about 20 minutes of sign-in pages at 100,000 users). `--kill N` collects
N users again, killing the collector (SIGKILL) twice while sign-in pages are being read, resuming each time
(`run --resume`), and compares every file's hash with the uninterrupted run's. `--write-doc` puts the results
into docs/performance.md between its quota markers.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import SimulatorProcess, load, machine, worker  # noqa: E402
from connector.catalog.datasets import DATASETS as CATALOG  # noqa: E402
from connector.catalog.quotas import quotas  # noqa: E402
from connector.collect.estimate import estimates  # noqa: E402

DATASETS = ("organization", "subscribed_skus", "users", "user_sign_in_activity", "mfa_registration")
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:quotas -->", "<!-- end bench:quotas -->"


# How the simulator answers userRegistrationDetails' $top=999, which its API page does not document
# (simulator/tenant.py TenantSpec.registration_top): "ignore" pages of 100, "honour" pages of 999.
REGISTRATION_PAGE = {"ignore": 100, "honour": 999, "refuse": 100}


def floors(users: int, scale: float, datasets: tuple[str, ...], registration: str = "ignore") -> dict[str, float]:
    """Seconds no client can beat, per per-user dataset (connector/collect/estimate.py, the quotas scaled)."""
    sizes = {"mfa_registration": REGISTRATION_PAGE[registration]}
    return {n: e.seconds for n, e in estimates(datasets, users, quotas(scale=scale), sizes).items()}


def issue_floor(users: int, scale: float) -> float:
    """The floor the quota issue states its goals against: ceil(users / 500) sign-in pages at 10 a minute, every
    page a sixth of a minute (floors() lets the first window's ten go at once: the stricter of the two)."""
    return -(-users // 500) * 6.0 / scale


def _simulator(users: int, scale: float, latency: float, registration: str) -> SimulatorProcess:
    # Latency scaled with the quotas: a request takes the same share of the time between two requests the
    # quota allows as it does against Graph (else a chain would be bound by latency, not by its quota).
    # The sign-in pages' JSON is built before the run (--warm-select): the stand-in's CPU per page does not
    # scale with the quotas, and built during the run, under the users listing, it took up to 0.6 s a page;
    # each window's first page adds its answer time to the window (the pacer counts at the answer).
    sign_in = ",".join(CATALOG["user_sign_in_activity"].select)
    return SimulatorProcess(users, latency / scale, ["--quota-scale", str(scale), "--render-cache",
                                                     "--warm-select", sign_in, "--registration-top", registration])


def measure(users: int, scale: float, latency: float, datasets: tuple[str, ...], registration: str) -> dict:
    sim = _simulator(users, scale, latency, registration)
    try:
        env = {**sim.env, "M365_DATASETS": ",".join(datasets)}
        before = sim.cpu()
        full = worker(env, "collect")
        full["simulatorCpu"] = sim.cpu() - before
    finally:
        sim.stop()
    return {"users": users, "scale": scale, "latency": latency, "full": full, "registration": registration,
            "floors": floors(users, scale, datasets, registration)}


# `python -m connector run` that reports its own peak RSS on stderr when it exits (not when it is killed).
_RUN = ("import atexit, resource, runpy, sys\n"
        "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "atexit.register(lambda: print('maxrss', peak(), file=sys.stderr))\n"
        "sys.argv = ['connector', *sys.argv[1:]]\n"
        "runpy.run_module('connector', run_name='__main__')\n")


def _cli(env: dict[str, str], *args: str, kill_after: float | None = None) -> tuple[dict | None, float]:
    """`python -m connector run --json ...` in a process of its own; SIGKILLed after `kill_after` seconds.
    The manifest (None when killed) and the process's peak RSS in MiB."""
    proc = subprocess.Popen([sys.executable, "-c", _RUN, "run", "--json", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return None, 0.0
    rss = next((int(line.split()[1]) / 1024 for line in err.decode().splitlines() if line.startswith("maxrss")), 0.0)
    return (orjson.loads(out) if out.strip() else None), rss


def _content(folder: str, manifest: dict, name: str) -> tuple[str, int]:
    """The records of a dataset file whatever their order (partitioned `users` are listed by concurrent
    chains, so two uninterrupted runs order them differently): sha256 of the sorted records' sha256s."""
    entry = manifest["datasets"][name]
    path = Path(folder) / f"tenants/{manifest['tenantId']}/runs/{manifest['runId']}/{entry['file']}"
    with gzip.open(path, "rb") as fh:
        digests = sorted(hashlib.sha256(line.rstrip(b"\n")).digest() for line in fh)
    return hashlib.sha256(b"".join(digests)).hexdigest(), len(digests)


def killed_twice(users: int, scale: float, latency: float, datasets: tuple[str, ...], registration: str) -> dict:
    """A clean run, then one killed twice during sign-in paging and resumed: the same files, byte for byte."""
    sim = _simulator(users, scale, latency, registration)
    try:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("M365_", "SNAPSHOT_"))}
        env = {**base, **sim.env, "M365_DATASETS": ",".join(datasets), "PYTHONPATH": str(ROOT)}
        with tempfile.TemporaryDirectory() as clean_dir, tempfile.TemporaryDirectory() as killed_dir:
            t0 = time.perf_counter()
            clean, clean_rss = _cli({**env, "SNAPSHOT_DIR": clean_dir})
            clean_wall = time.perf_counter() - t0
            assert clean is not None
            sign_in = floors(users, scale, datasets, registration)["user_sign_in_activity"]
            t0 = time.perf_counter()
            first, _ = _cli({**env, "SNAPSHOT_DIR": killed_dir}, kill_after=sign_in * 0.35)
            second, _ = _cli({**env, "SNAPSHOT_DIR": killed_dir}, "--resume", kill_after=sign_in * 0.35)
            final, final_rss = _cli({**env, "SNAPSHOT_DIR": killed_dir}, "--resume")
            killed_wall = time.perf_counter() - t0
            assert final is not None
            content = {n: (_content(clean_dir, clean, n), _content(killed_dir, final, n)) for n in datasets}
    finally:
        sim.stop()
    bytes_same = {n: clean["datasets"][n]["sha256"] == final["datasets"][n]["sha256"] for n in datasets}
    return {"users": users, "scale": scale, "killsHappened": first is None and second is None,
            "cleanWall": clean_wall, "killedWall": killed_wall, "status": final["status"],
            "sameBytes": bytes_same, "sameRecords": {n: a == b for n, (a, b) in content.items()},
            "records": {n: (a[1], b[1]) for n, (a, b) in content.items()},
            "resumed": {n: final["datasets"][n].get("resumed") for n in datasets},
            "maxrssMiB": max(clean_rss, final_rss)}


def report(r: dict) -> list[str]:
    full, fl = r["full"], r["floors"]
    requests = sum(d["requests"] or 0 for d in full["datasets"].values())
    throttled = sum(d["throttled"] or 0 for d in full["datasets"].values())
    longest = max(fl.values())
    # The issue's floor for sign-in activity; the other datasets keep theirs.
    issue = {**fl, **({"user_sign_in_activity": issue_floor(r["users"], r["scale"])}
                      if "user_sign_in_activity" in fl else {})}
    longest_issue = max(issue.values())
    title = "Graph's own quotas" if r["scale"] == 1 else f"quotas scaled {r['scale']:g} times"
    if "mfa_registration" in full["datasets"]:
        said = {"ignore": "ignored (pages of 100)", "honour": "honoured (pages of 999)", "refuse": "refused"}
        title += f", userRegistrationDetails' $top=999 {said[r.get('registration', 'ignore')]}"
    lines = [f"#### {r['users']:,} users, {title}, {r['latency'] * 1000 / r['scale']:.1f} ms per request "
             f"({r['latency'] * 1000:.0f} ms scaled alike)", "",
             f"- run: status **{full['status']}**, wall **{full['wall']:.0f} s** against its longest floor "
             f"{longest:.0f} s (**{full['wall'] / longest:.3f}×**; against the issue's floor of sign-in pages at 10 a "
             f"minute, {longest_issue:.0f} s: **{full['wall'] / longest_issue:.3f}×**), {requests:,} requests, "
             f"**{throttled} × 429** "
             f"({throttled / max(1, requests) * 100:.2f}%), CPU {full['cpu']:.0f} s, peak RSS "
             f"**{full['maxrssMiB']:.0f} MiB** (load average {full['load'][0]:.2f} before, {full['load'][1]:.2f} "
             "after)", "",
             "| dataset | records | requests | 429s | wall s | floor s | wall / floor | issue's floor s | wall / it |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, d in full["datasets"].items():
        cells = []
        for floor in (fl.get(name), issue.get(name)):
            cells += [f"{floor:.0f}", f"{d['durationSeconds'] / floor:.3f}"] if floor else ["-", "-"]
        lines.append(f"| {name} | {d['records']:,} | {d['requests']:,} | {d['throttled']} | "
                     f"{d['durationSeconds']:.1f} | {' | '.join(cells)} |")
    return lines + [""]


def report_kill(k: dict) -> list[str]:
    rows = [f"| {n} | {a:,} / {b:,} | {'yes' if k['sameRecords'][n] else 'NO'} | "
            f"{'yes' if k['sameBytes'][n] else 'no'} |" for n, (a, b) in k["records"].items()]
    return [f"#### {k['users']:,} users, quotas scaled {k['scale']:g} times, the collector killed twice", "",
            f"- both kills happened: {k['killsHappened']}; final status **{k['status']}**; wall "
            f"{k['killedWall']:.0f} s in three invocations against {k['cleanWall']:.0f} s uninterrupted; peak RSS "
            f"of the collector {k['maxrssMiB']:.0f} MiB", "",
            "| dataset | records (uninterrupted / resumed) | same records | same bytes (sha256) |",
            "|---|---:|---|---|", *rows, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="*", default=[100_000, 200_000, 1_000_000])
    parser.add_argument("--scale", type=float, default=60.0)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--real", type=int, default=None, metavar="USERS", help="once at Graph's own quotas")
    parser.add_argument("--kill", type=int, default=None, metavar="USERS", help="killed twice and resumed")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--kill-datasets", nargs="+", default=[d for d in DATASETS if d != "mfa_registration"],
                        help="datasets of the killed run (default: all but mfa_registration, whose chain resumes "
                             "as sign-in activity's does and would double its time)")
    parser.add_argument("--registration-top", choices=sorted(REGISTRATION_PAGE), default="ignore",
                        help="how the simulator answers $top=999 on userRegistrationDetails (not documented)")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--write-doc", action="store_true")
    parser.add_argument("--report", metavar="JSON", help="print (and with --write-doc, write) the report of a run "
                        "saved with --json, measuring nothing; its command line and machine line are given as-is "
                        "by --produced")
    parser.add_argument("--produced", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    datasets = tuple(args.datasets)
    out = [f"Produced by `.venv/bin/python bench/quotas.py {' '.join(argv or sys.argv[1:])}` on {machine()}.", ""]
    results: list[dict] = []
    if args.report:
        out = [args.produced, ""] if args.produced else []
        for r in orjson.loads(Path(args.report).read_bytes()):
            out += report_kill(r) if "killsHappened" in r else report(r)
        args.users, args.real, args.kill = [], None, None
        print("\n".join(out))
    for n in args.users:
        r = measure(n, args.scale, args.latency, datasets, args.registration_top)
        results.append(r)
        out += report(r)
        print("\n".join(report(r)), flush=True)
    if args.real:
        # At pages of 100, MFA registrations would double the run (40 minutes at 100,000 users): left out.
        real = datasets if args.registration_top == "honour" else tuple(d for d in datasets if d != "mfa_registration")
        r = measure(args.real, 1.0, args.latency, real, args.registration_top)
        results.append(r)
        out += report(r)
        print("\n".join(report(r)), flush=True)
    if args.kill:
        k = killed_twice(args.kill, args.scale, args.latency, tuple(args.kill_datasets), args.registration_top)
        results.append(k)
        out += report_kill(k)
        print("\n".join(report_kill(k)), flush=True)
    if args.json and not args.report:
        Path(args.json).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    if args.write_doc:
        doc = DOC.read_text()
        if BEGIN not in doc:
            doc += f"\n{BEGIN}\n{END}\n"
        start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
        DOC.write_text(doc[:start] + "\n" + "\n".join(out) + "\n" + doc[end:])
    print(f"load average {load():.2f} at the end", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
