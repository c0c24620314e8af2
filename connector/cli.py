"""Command line: `python -m connector run | check | demo | insights`.

Exit codes: 0 succeeded, 3 partial, 1 failed, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

import orjson

from .config import ConfigError, load_offline_settings, load_settings, require_destination
from .datasets import DATASETS

EXIT = {"succeeded": 0, "partial": 3, "failed": 1}
EXIT_CONFIG = 2


def _warning_lines(warnings: list[dict[str, str]]) -> list[str]:
    """One line per distinct warning: the same advice for several datasets is printed once."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for w in warnings:
        name, text = w.get("dataset"), w["message"]
        if name and text.startswith(f"{name}: "):
            text = text[len(name) + 2:]
        grouped.setdefault((w["code"], text), []).append(name or "")
    lines = []
    for (code, text), names in grouped.items():
        names = [n for n in names if n]
        where = f" ({', '.join(names)})" if names else ""
        lines.append(f"warning [{code}]{where}: {text}")
    return lines


def _print_summary(manifest: dict[str, Any], location: str, out=sys.stdout) -> None:
    rows = [("dataset", "status", "records", "seconds")]
    for name, ds in manifest["datasets"].items():
        rows.append((name, ds["status"], str(ds["records"]), f"{ds['durationSeconds']:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, row in enumerate(rows):
        cells = (c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True)))
        print("  ".join(cells), file=out)
        if i == 0:
            print("  ".join("-" * w for w in widths), file=out)
    print(f"\nrun {manifest['runId']}: {manifest['status']}", file=out)
    for line in _warning_lines(manifest["warnings"]):
        print(line, file=out)
    print(f"manifest: {location}", file=out)


def _settings(args: argparse.Namespace, env: dict[str, str] | None = None):
    env = dict(os.environ if env is None else env)
    if getattr(args, "out", None):
        env["SNAPSHOT_DIR"] = args.out
    if getattr(args, "datasets", None):
        env["M365_DATASETS"] = ",".join(args.datasets)
    return load_settings(env)


def cmd_run(args: argparse.Namespace, env: dict[str, str] | None = None, trigger: str = "cli") -> int:
    from .engine import collect, run_prefix
    from .store import open_store

    settings = _settings(args, env)
    require_destination(settings)
    store = open_store(settings)
    manifest = asyncio.run(collect(settings, store, trigger=trigger))
    location = store.url(f"{run_prefix(manifest['tenantId'], manifest['runId'])}/manifest.json")
    _print_summary(manifest, location)
    return EXIT[manifest["status"]]


def _print_report(report: dict[str, Any]) -> None:
    token = report["token"]
    if not token["ok"]:
        err = token["error"]
        print(f"token: FAILED {err['code']} ({err['reason']})\n  fix: {err['remedy']}")
        if err.get("detail"):
            print(f"  detail: {err['detail']}")
        return
    print(f"token: ok (tenant {token.get('tenantId')}, app {token.get('appId')})")
    print(f"granted: {', '.join(report['grantedPermissions']) or '(none)'}")
    for w in report["warnings"]:
        print(f"warning: {w['message']}")
    width = max(len(n) for n in report["datasets"]) if report["datasets"] else 10
    for name, entry in report["datasets"].items():
        line = f"  {name.ljust(width)}  {entry['status']}"
        if entry.get("remedy"):
            line += f"\n  {' ' * width}  fix: {entry['remedy']}"
        print(line)
    print("all datasets can be collected" if report["ok"] else "some datasets cannot be collected (see fixes)")


def cmd_check(args: argparse.Namespace) -> int:
    from .permissions import permission_report

    settings = _settings(args)
    report = asyncio.run(permission_report(settings))
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_report(report)
    if not report["token"]["ok"]:
        return 1
    return 0 if report["ok"] else 3


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from simulator import Simulator, TenantSpec
    except ImportError:
        print("The demo needs the development simulator (the `simulator` package of the repository); it is not "
              "part of a deployment.", file=sys.stderr)
        return 1
    out = os.path.abspath(args.out)
    print(f"Starting a simulated tenant with {args.users} users (local HTTPS simulator of Entra ID and Graph)...")
    spec = TenantSpec(seed=args.seed, users=args.users, report_names_concealed=args.report_names == "concealed")
    with Simulator(spec) as sim:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("M365_", "SNAPSHOT_", "KEY_VAULT"))}
        env.update(sim.env())
        # Clients read the CA bundle from the process environment.
        os.environ["SSL_CERT_FILE"] = env["SSL_CERT_FILE"]
        os.environ["REQUESTS_CA_BUNDLE"] = env["REQUESTS_CA_BUNDLE"]
        env["SNAPSHOT_DIR"] = out
        code = cmd_run(argparse.Namespace(out=None, datasets=args.datasets), env, trigger="demo")
    _demo_insights(out)
    print(f"\nSnapshot files are under {out}/tenants/ ; read one with:\n"
          f"  zcat {out}/tenants/*/runs/*/users.jsonl.gz | head -n 2")
    return code


def _demo_insights(out: str) -> None:
    from .insights_cli import print_summary
    from .store import LocalStore, read_json

    store = LocalStore(out)
    for pointer in sorted(store.list("tenants/")):
        if pointer.endswith("/latest.json"):
            manifest = read_json(store, (read_json(store, pointer) or {}).get("manifest", ""))
            if manifest:
                print_summary(store, manifest)


def cmd_insights(args: argparse.Namespace) -> int:
    from .insights_cli import NotFound, run
    from .store import open_store

    env = dict(os.environ)
    if args.out:
        env["SNAPSHOT_DIR"] = args.out
    settings = load_offline_settings(env)
    require_destination(settings)
    try:
        return run(settings, open_store(settings), args.run, args.json)
    except NotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_docs(args: argparse.Namespace) -> int:
    from .docgen import stale_files, write

    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"{name} is out of date with the dataset registry: run python -m connector docs", file=sys.stderr)
        return 1 if stale else 0
    for name in write():
        print(f"updated {name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m connector", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="collect one snapshot with the settings from the environment")
    run.add_argument("--out", help="write to this local folder (overrides SNAPSHOT_DIR)")
    run.add_argument("--datasets", nargs="+", choices=list(DATASETS), metavar="NAME",
                     help=f"datasets to collect (default: M365_DATASETS or all): {', '.join(DATASETS)}")
    check = sub.add_parser("check", help="report the token and the permissions each dataset needs")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    demo = sub.add_parser("demo", help="collect a simulated tenant into a local folder")
    demo.add_argument("--out", default="demo-output", help="folder for the snapshot (default: ./demo-output)")
    demo.add_argument("--users", type=int, default=2000, help="users in the simulated tenant (default 2000)")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--datasets", nargs="+", choices=list(DATASETS), metavar="NAME")
    demo.add_argument("--report-names", choices=("concealed", "visible"), default="concealed",
                      help="user names in the simulated usage reports (default: concealed, Microsoft's default)")
    insights = sub.add_parser("insights", help="compute the licence insights (insights.json, "
                                               "licence_findings.jsonl.gz, report.html) of a collected run again, "
                                               "without calling Graph")
    insights.add_argument("--out", help="the local snapshot folder (overrides SNAPSHOT_DIR; default: SNAPSHOT_DIR or "
                                        "the Blob settings)")
    insights.add_argument("--run", default="latest", metavar="ID|latest",
                          help="the run to compute them for (default: latest, the newest published run)")
    insights.add_argument("--json", action="store_true", help="print the manifest's insights entry as JSON")
    docs = sub.add_parser("docs", help="regenerate the permission tables in README.md and docs/ from the registry")
    docs.add_argument("--check", action="store_true", help="only report out-of-date files (exit 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "azure", "msal", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return {"run": cmd_run, "check": cmd_check, "demo": cmd_demo, "docs": cmd_docs,
                "insights": cmd_insights}[args.command](args)
    except ConfigError as exc:
        print("Configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # e.g. the snapshot destination refused the manifest: say what, not a traceback
        logging.getLogger("m365_connector").debug("command failed", exc_info=exc)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"error: {type(exc).__name__}: {first}", file=sys.stderr)
        print("  (check SNAPSHOT_DIR / SNAPSHOT_ACCOUNT_URL / SNAPSHOT_CONNECTION_STRING and network access; "
              "-v shows details)", file=sys.stderr)
        return 1
