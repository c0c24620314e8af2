"""Benchmark of change feeds: a run after a day of changes against a full read of the same changed tenant.

    .venv/bin/python bench/delta.py --case 100000:10000:users,groups,group_members --case 20000:100000:groups \
        --share 0.01 --scale 60 --write-doc

The simulator runs in this process (so the tenant can be changed between runs: simulator/changes.py), the
collector in its own (`python -m connector run --json`), with Graph's quotas divided by `--scale` on both
sides and each request taking `--latency` seconds divided by the same factor. Per `--case` (a tenant size and the
datasets collected), three runs:
1. a full first run (it stores the delta links);
2. after `--share` of the users changed (renamed, relicensed, new job titles, created, deleted) and as many
   group memberships added and removed, and a few groups renamed: the run under test (delta where the
   dataset allows it, a full read elsewhere);
3. `run --full` of the changed tenant into another folder: the truth, and the full run to compare with.
Every file of run 2 must equal run 3's record for record (compared by key and a hash of each record). The
figures: requests and wall time per dataset and in total, and the peak memory of each run. `--write-doc`
puts them into docs/performance.md between its bench:delta markers.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import load, machine  # noqa: E402
from connector.catalog.datasets import DATASETS  # noqa: E402
from simulator import Simulator, TenantSpec  # noqa: E402

DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:delta -->", "<!-- end bench:delta -->"
# `python -m connector run` reporting its peak RSS on stderr when it exits.
_RUN = ("import atexit, resource, runpy, sys\n"
        "atexit.register(lambda: print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
        "file=sys.stderr))\n"
        "sys.argv = ['connector', *sys.argv[1:]]\n"
        "runpy.run_module('connector', run_name='__main__')\n")


def collect(env: dict[str, str], out: Path, *extra: str) -> dict:
    """One run in its own process: the manifest, its wall time and peak RSS (MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RUN, "run", "--json", "--out", str(out), *extra], cwd=ROOT,
                          env=env, capture_output=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"run failed ({proc.returncode}):\n{proc.stderr.decode()[-3000:]}")
    rss = next((int(line.split()[1]) for line in proc.stderr.decode().splitlines() if line.startswith("maxrss")), 0)
    return {"manifest": orjson.loads(proc.stdout), "wall": wall, "rssMiB": rss / 1024, "load": load()}


def fingerprint(out: Path, manifest: dict, name: str) -> tuple[int, int]:
    """(records, an order-independent sum of each record's hash) of a dataset's file: equal files, equal sums."""
    path = out / "tenants" / manifest["tenantId"] / "runs" / manifest["runId"] / DATASETS[name].file
    total, count = 0, 0
    with gzip.open(path, "rb") as f:
        for line in f:
            record = orjson.loads(line)
            digest = hashlib.blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
            total = (total + int.from_bytes(digest, "big")) % (1 << 128)
            count += 1
    return count, total


def measure(args: argparse.Namespace, users: int, groups: int, datasets: str, scale: float) -> dict:
    spec = TenantSpec(seed=21, users=users, groups=groups, quota_scale=scale,
                      pending_users=max(10, int(users * args.share)), latency=args.latency / scale)
    work = Path(tempfile.mkdtemp(prefix="bench-delta-"))
    with Simulator(spec) as sim:
        env = {**os.environ, **sim.env(), "M365_DATASETS": datasets}
        first = collect(env, work / "a")
        t0 = time.perf_counter()
        made = sim.changes.day_of_changes(share=args.share, seed=5)
        listed = sim.inventory.groups()
        for g in listed[12:12 + max(1, len(listed) // 1000)]:
            sim.changes.rename_group(g["id"], f"{g['displayName']} (renamed)")
            made["groupsRenamed"] = made.get("groupsRenamed", 0) + 1
        changing = time.perf_counter() - t0
        delta = collect(env, work / "a")
        full = collect(env, work / "b", "--full")
    identical = {}
    for name in datasets.split(","):
        identical[name] = fingerprint(work / "a", delta["manifest"], name) == \
            fingerprint(work / "b", full["manifest"], name)
    return {"users": users, "groups": groups, "share": args.share, "scale": scale,
            "latency": args.latency, "changes": made, "changeSeconds": changing, "first": first, "delta": delta,
            "full": full, "identical": identical, "machine": machine()}


def table(result: dict) -> list[str]:
    d, f = result["delta"]["manifest"]["datasets"], result["full"]["manifest"]["datasets"]
    rows = ["| dataset | mode | records | changes (+/~/-) | requests: this run / full | seconds: this run / full |",
            "|---|---|---|---|---|---|"]
    for name in d:
        e = d[name].get("delta") or {}
        counts = f"{e.get('added', '-')}/{e.get('changed', '-')}/{e.get('removed', '-')}"
        rows.append(f"| {name} | {e.get('mode', 'full')} | {d[name]['records']:,} | {counts} | "
                    f"{d[name]['requests']:,} / {f[name]['requests']:,} | "
                    f"{d[name]['durationSeconds']:.1f} / {f[name]['durationSeconds']:.1f} |")
    req_d, req_f = sum(x["requests"] for x in d.values()), sum(x["requests"] for x in f.values())
    rows.append(f"| **run** | | | | **{req_d:,} / {req_f:,}** ({req_d / max(req_f, 1):.1%}) | "
                f"**{result['delta']['wall']:.1f} / {result['full']['wall']:.1f}** "
                f"({result['delta']['wall'] / result['full']['wall']:.1%}) |")
    return rows


def report(result: dict) -> str:
    d, f = result["delta"]["manifest"]["datasets"], result["full"]["manifest"]["datasets"]
    tracked = [n for n in d if (d[n].get("delta") or {}).get("mode") == "delta"]
    lines = [f"#### {result['users']:,} users, {result['groups']:,} groups, {result['share']:.0%} changed, quotas "
             f"scaled {result['scale']:g} times, {result['latency'] * 1000 / result['scale']:.1f} ms per request: "
             f"`{','.join(d)}`", "", f"Measured on {result['machine']}.", "",
             "Changes made between the runs: " + ", ".join(f"{k} {v:,}" for k, v in result["changes"].items()) + ".",
             "", *table(result), ""]
    for name in tracked:
        lines.append(f"- `{name}` by delta: {d[name]['requests']:,} requests against {f[name]['requests']:,} "
                     f"({d[name]['requests'] / max(f[name]['requests'], 1):.1%}), "
                     f"{d[name]['durationSeconds']:.2f} s against {f[name]['durationSeconds']:.2f} s "
                     f"({d[name]['durationSeconds'] / max(f[name]['durationSeconds'], 1e-9):.1%}).")
    same = all(result["identical"].values())
    lines.append(f"- Content: every file of the run {'equals' if same else 'DIFFERS FROM'} the full read of the "
                 "changed tenant, record for record (" + ", ".join(f"{n}: {'same' if ok else 'different'}" for n, ok
                                                             in result["identical"].items()) + ").")
    lines.append(f"- Peak memory: first run {result['first']['rssMiB']:.0f} MiB, this run "
                 f"{result['delta']['rssMiB']:.0f} MiB, full run {result['full']['rssMiB']:.0f} MiB; load average "
                 f"{result['first']['load']:.2f}, {result['delta']['load']:.2f}, {result['full']['load']:.2f} after "
                 "each.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", action="append", metavar="USERS:GROUPS:DATASETS[:SCALE]",
                   help="a tenant, the datasets collected and optionally its own --scale (repeatable); default "
                        "100000:10000:users,groups,group_members")
    p.add_argument("--share", type=float, default=0.01, help="share of users (and as many memberships) changed")
    p.add_argument("--scale", type=float, default=60, help="quota windows and the latency divided by this, on both "
                                                          "sides (1: Graph's own quotas and latency)")
    p.add_argument("--latency", type=float, default=0.2, help="seconds per request before scaling")
    p.add_argument("--write-doc", action="store_true")
    p.add_argument("--json", help="also write the raw results to this file")
    args = p.parse_args()
    results, parts = [], [f"Produced by `python bench/delta.py {' '.join(sys.argv[1:])}`.", ""]
    for case in args.case or ["100000:10000:users,groups,group_members"]:
        users, groups, datasets, *scale = case.split(":")
        results.append(measure(args, int(users), int(groups), datasets, float(scale[0]) if scale else args.scale))
        parts.append(report(results[-1]))
        print(parts[-1], flush=True)
        parts.append("")
    text = "\n".join(parts).rstrip()
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    if args.write_doc:
        doc = DOC.read_text()
        if BEGIN in doc:
            head, rest = doc.split(BEGIN, 1)
            doc = f"{head}{BEGIN}\n{text}\n{END}{rest.split(END, 1)[1]}"
        else:
            doc += f"\n## Change feeds: a delta run against a full read\n\n{BEGIN}\n{text}\n{END}\n"
        DOC.write_text(doc)


if __name__ == "__main__":
    main()
