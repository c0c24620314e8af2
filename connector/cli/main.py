"""Command line: `m365-connector run | check | demo | insights | docs` (or `python -m connector ...`).

Conventions users know from az, azd and func: options that apply to every command (-v, -q,
--version) work before or after the command's name; `--json` prints a command's result as JSON
(nothing else on stdout); lists take commas or spaces (`--datasets users,groups`). Exit codes are
listed per command in EXIT_CODES (README, `--help`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from typing import Any

import orjson

from connector import __version__
from connector.catalog.datasets import DATASETS
from connector.cli.exit_codes import EXIT, EXIT_BUSY, EXIT_CODES, EXIT_CONFIG, EXIT_LATEST
from connector.cli.tenants import add_parser as tenants_parser
from connector.cli.tenants import cmd_tenants
from connector.config import ConfigError, Problem, load_offline_settings, load_settings, require_destination

PROG = "m365-connector"
_UNREACHABLE = frozenset({"graph_unreachable", "graph_tls", "authority_unreachable", "authority_tls"})
PROGRESS_EVERY = 30.0  # seconds between progress lines when stderr is not a terminal
GRANT_STEPS = ("Entra admin center: App registrations, the app, API permissions, Add a permission, Microsoft Graph, "
               "Application permissions; then Grant admin consent")


# -- output ------------------------------------------------------------------------------------------------------

def _json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def _strip_portal_step(text: str) -> str:
    from connector.collect.failures import PORTAL_STEP

    cut = text.find(PORTAL_STEP.split("{perm}")[0])
    return text[:cut].rstrip() if cut >= 0 else text


def _warning_lines(warnings: list[dict[str, str]]) -> list[str]:
    """One line per distinct warning: the same advice for several datasets is printed once. Missing
    permissions lose their portal steps here: one grant line after them says what to do."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for w in warnings:
        name, text = w.get("dataset"), w["message"]
        if w["code"] == "missing_permission":
            text = _strip_portal_step(text)
        for prefix in (f"{name}: ", f"{name} "):
            if name and text.startswith(prefix):
                text = text[len(prefix):]
                break
        grouped.setdefault((w["code"], text), []).append(name or "")
    lines = []
    for (code, text), names in grouped.items():
        names = [n for n in names if n]
        where = f" ({', '.join(names)})" if names else ""
        lines.append(f"warning [{code}]{where}: {text}")
    return lines


def grant_line(permissions: list[str] | set[str]) -> str | None:
    """The one remedy for every missing permission of a run or check."""
    if not permissions:
        return None
    return f"grant these permissions, then run again: {', '.join(sorted(permissions))} ({GRANT_STEPS})"


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
    grant = grant_line({p for ds in manifest["datasets"].values() for p in ds.get("missingPermissions") or []})
    if grant:
        print(grant, file=out)
    print(f"manifest: {location}", file=out)


def _print_report(report: dict[str, Any]) -> None:
    token = report["token"]
    if not token["ok"]:
        err = token["error"]
        print(f"token: FAILED {err['code']} ({err['reason']})\n  fix: {err['remedy']}")
        if err.get("detail"):
            print(f"  detail: {err['detail']}")
        return
    print(f"token: ok (tenant {token.get('tenantId')}, app {token.get('appId')})")
    graph = report.get("graph") or {}
    if graph and not graph.get("ok"):
        err = graph["error"]
        print(f"graph: FAILED {err['reason']}\n  fix: {err['setting']}: {err['remedy']}")
        return
    print(f"granted: {', '.join(report['grantedPermissions']) or '(none)'}")
    for w in report["warnings"]:
        print(f"warning: {w['message']}")
    width = max(len(n) for n in report["datasets"]) if report["datasets"] else 10
    missing: set[str] = set()
    for name, entry in report["datasets"].items():
        line = f"  {name.ljust(width)}  {entry['status']}"
        if entry["status"] == "missing_permission" and entry.get("missing"):
            missing.update(entry["missing"])
            line += f" ({' and '.join(entry['missing'])})"
        elif entry.get("remedy"):
            line += f"\n  {' ' * width}  fix: {entry['remedy']}"
        print(line)
    grant = grant_line(missing)
    if grant:
        print(grant)
    for entry in (report.get("estimates") or {}).values():
        print(f"expected: {entry['text']}")
    print("all datasets can be collected" if report["ok"] else "some datasets cannot be collected (see above)")


# -- progress ----------------------------------------------------------------------------------------------------

def _progress_mode(args: argparse.Namespace) -> str | None:
    """live (a table on a terminal), log (a line every --progress-every seconds) or None."""
    if getattr(args, "json", False) or args.quiet:
        return None
    return "live" if sys.stderr.isatty() else "log"


class _ProgressLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from connector.collect.progress import PROGRESS_EVENT

        facts = getattr(record, "m365", None)  # progress lines, and each dataset's expected duration at the start
        return isinstance(facts, dict) and facts.get("event") in (PROGRESS_EVENT, "expected_duration")


def _configure_logging(args: argparse.Namespace) -> None:
    """-v: every connector log line on stderr; otherwise warnings only, plus progress lines when asked for."""
    from connector.service.telemetry import SummaryFilter

    level = logging.INFO if args.verbose else logging.WARNING
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_m365_cli", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(fmt)
    handler.setLevel(level)
    handler._m365_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "azure", "msal", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from connector.config import keep_secrets_out_of_library_logs

    keep_secrets_out_of_library_logs()
    connector_log = logging.getLogger("m365_connector")
    for item in [f for f in connector_log.filters if isinstance(f, SummaryFilter)]:
        connector_log.removeFilter(item)
    for h in [h for h in connector_log.handlers if getattr(h, "_m365_cli", False)]:
        connector_log.removeHandler(h)
    connector_log.addFilter(SummaryFilter())  # facts of the run's events in the text
    if _progress_mode(args) == "log":
        connector_log.setLevel(logging.INFO)
        if not args.verbose:
            progress = logging.StreamHandler(sys.stderr)
            progress.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            progress.addFilter(_ProgressLines())
            progress._m365_cli = True  # type: ignore[attr-defined]
            connector_log.addHandler(progress)


# -- commands ----------------------------------------------------------------------------------------------------

def _settings(args: argparse.Namespace, env: dict[str, str] | None = None):
    """Settings from the environment; with --tenant, that registered tenant's (connector/cli/tenants.py)."""
    env = dict(os.environ if env is None else env)
    extra = {}
    if getattr(args, "out", None):
        env["SNAPSHOT_DIR"] = args.out
    if getattr(args, "datasets", None):
        extra["M365_DATASETS"] = ",".join(args.datasets)
    if getattr(args, "tenant", None):
        from connector.cli.tenants import tenant_settings

        return tenant_settings(env, args.tenant, extra)
    return load_settings({**env, **extra})


def _unreachable_line(manifest: dict[str, Any]) -> str | None:
    """The one line for a run that never reached Graph or the token endpoint."""
    err = manifest.get("error") or {}
    if err.get("code") not in _UNREACHABLE:
        return None
    if err.get("stage") == "graph":
        return f"{err['setting']}: {err['reason']}. {err['remedy']}"
    return err.get("remedy")


def _collect_locked(settings: Any, store: Any, trigger: str, resume: str | None = None,
                    **options: Any) -> dict[str, Any]:
    """One collection under the tenant's lock, as the Function's worker takes it: two runs into one destination
    never overlap, and the lock is renewed (a lost lock stops the collection). `resume`: collect that
    unfinished run again under its id, continuing from its checkpoints."""
    from connector.collect.engine import collect, new_run_id
    from connector.service.appconfig import tenant_key
    from connector.store.locks import lock_path, tenant_lock

    key, run_id = tenant_key(settings), resume or new_run_id()
    with tenant_lock(store, key, run_id, trigger) as renewer:
        async def go() -> dict[str, Any]:
            task = asyncio.ensure_future(collect(settings, store, trigger=trigger, run_id=run_id,
                                                 lock_path=lock_path(key), claim_tenant=renewer.lock.claim,
                                                 **options))
            renewer.watch(task)
            return await task

        return asyncio.run(go())


def _azure_error() -> type[BaseException]:
    from azure.core.exceptions import AzureError

    return AzureError


def cmd_run(args: argparse.Namespace, env: dict[str, str] | None = None, trigger: str = "cli") -> int:
    from connector.collect.progress import LiveTable
    from connector.store.contract import DestinationError
    from connector.store.destination import open_store
    from connector.store.publish import run_prefix

    if not getattr(args, "tenant", None) and _registered(args, env):
        return cmd_sweep(args, env, trigger)
    settings = _settings(args, env)
    if getattr(args, "full", False):
        settings = dataclasses.replace(settings, full=True)
    require_destination(settings)
    store = open_store(settings)
    mode = _progress_mode(args)
    every = args.progress_every if mode == "log" else None
    try:
        store.prepare()  # an unusable destination is found before the lock and before any Graph request
        resume = _run_to_resume(args, settings, store)
        if mode == "live":
            with LiveTable(sys.stderr) as table:
                manifest = _collect_locked(settings, store, trigger, resume, progress=table.attach,
                                           progress_every=None)
        else:
            manifest = _collect_locked(settings, store, trigger, resume, progress_every=every)
    except DestinationError:
        raise
    except (OSError, _azure_error()) as exc:
        raise store.explain(exc) from exc
    location = store.url(f"{run_prefix(manifest['tenantId'], manifest['runId'])}/manifest.json")
    line = _unreachable_line(manifest)
    if args.json:
        _json({**manifest, "manifestLocation": location})
    elif line:
        print(f"error: {line} (-v shows details)", file=sys.stderr)
        if not args.quiet:
            print(f"run {manifest['runId']}: {manifest['status']}\nmanifest: {location}")
    elif not args.quiet:
        _print_summary(manifest, location)
    return run_exit_code(manifest)


def _registered(args: argparse.Namespace, env: dict[str, str] | None) -> bool:
    """Whether the destination holds a tenant registry (then `run` without --tenant collects every tenant in it)."""
    from connector.cli.tenants import open_registry

    merged = dict(os.environ if env is None else env)
    if getattr(args, "out", None):
        merged["SNAPSHOT_DIR"] = args.out
    try:
        registry = open_registry(merged)
    except ConfigError:
        return False  # no destination: the single-tenant path names the missing setting
    from connector.store.contract import DestinationError

    try:
        registry.store.prepare()  # an unusable destination is named before anything else
        return registry.stored
    except DestinationError:
        raise
    except (OSError, _azure_error()) as exc:
        raise registry.store.explain(exc) from exc


def cmd_sweep(args: argparse.Namespace, env: dict[str, str] | None, trigger: str) -> int:
    """`run` of every registered tenant, several at once (--parallel); one line per tenant, then the summary."""
    from connector.cli.tenants import sweep, sweep_exit_code
    from connector.store.destination import open_store

    merged = dict(os.environ if env is None else env)
    if getattr(args, "out", None):
        merged["SNAPSHOT_DIR"] = args.out
    if getattr(args, "datasets", None):
        merged["M365_DATASETS"] = ",".join(args.datasets)

    def one(settings: Any) -> dict[str, Any]:
        if getattr(args, "full", False):
            settings = dataclasses.replace(settings, full=True)
        store = open_store(settings)
        store.prepare()
        return _collect_locked(settings, store, trigger, progress_every=None)

    rows = sweep(merged, one, args.parallel)
    summary = _sweep_summary(merged, rows)
    if args.json:
        _json({"tenants": [{k: v for k, v in r.items() if k != "manifest"} for r in rows], "summary": summary})
    elif not args.quiet:
        for r in rows:
            print(f"{r['tenant']:<40} {r['status']:<9} {r.get('runId') or '-':<24} {r.get('error') or ''}"
                  + (f" Admin consent: {r['consentUrl']}" if r.get("consentUrl") else ""))
        if summary:
            print(f"summary: {summary}")
    return sweep_exit_code(rows)


def _sweep_summary(env: dict[str, str], rows: list[dict[str, Any]]) -> str:
    """Write the cross-tenant summary of the completed sweep (tenants/summary.json and .html); its location."""
    from connector.insights.tenants import PAGE_PATH, write_summary
    from connector.store.destination import open_store

    store = open_store(load_offline_settings(env))
    write_summary(store, [{k: r.get(k) for k in ("tenant", "tenantId", "status", "runId", "error")} for r in rows])
    return store.url(PAGE_PATH)


def run_exit_code(result: dict[str, Any]) -> int:
    """The exit code of a run from its result (the manifest, with what failed after it was written)."""
    from connector.store.publish import LATEST_NOT_UPDATED

    if result["status"] != "failed" and any(w.get("code") == LATEST_NOT_UPDATED for w in result["warnings"]):
        return EXIT_LATEST
    return EXIT[result["status"]]


def _run_to_resume(args: argparse.Namespace, settings: Any, store: Any) -> str | None:
    """`run --resume [RUN_ID]`: the given run, or the tenant's newest run that left checkpoints (an unfinished
    run: publishing removes them); None (a new run) when there is none, said on stderr."""
    from connector.collect.checkpoint import latest_resumable
    from connector.store.publish import checkpoint_prefix
    from connector.store.status import GUID_RE

    wanted = getattr(args, "resume", None)
    if wanted is None:
        return None
    tenant = settings.tenant_id.lower()
    tenants = {tenant} if GUID_RE.fullmatch(tenant) else \
        {p.split("/")[1] for p in store.list("tenants/") if "/checkpoints/" in p}
    if wanted != "latest":
        if not any(store.list(f"{checkpoint_prefix(t, wanted)}") for t in tenants):
            raise ConfigError([Problem("--resume", f"run {wanted} left no checkpoints in this destination (it "
                                                   "finished, or never started): run without --resume")])
        return wanted
    found = max((r for r in (latest_resumable(store, t) for t in sorted(tenants)) if r), default=None)
    if found is None and not args.quiet:
        print("nothing to resume: no unfinished run left checkpoints in this destination; starting a new run",
              file=sys.stderr)
    elif not args.quiet:
        print(f"resuming run {found} from its checkpoints", file=sys.stderr)
    return found


def _run_id(value: str) -> str:
    from connector.store.status import valid_run_id

    if value != "latest" and not valid_run_id(value):
        raise argparse.ArgumentTypeError("is not a run id (such as 20261122T020000Z-3f9a1c)")
    return value


def cmd_check(args: argparse.Namespace) -> int:
    from connector.collect.permissions import permission_report

    if args.json:  # JSON whatever happens: a script reading it must never get a traceback or prose
        try:
            settings = _settings(args)
            report = asyncio.run(permission_report(settings))
        except ConfigError as exc:
            report, code = {"ok": False, "error": {"code": "configuration", "problems": [
                {"setting": p.setting, "message": p.message} for p in exc.problems]}}, EXIT_CONFIG
        except Exception as exc:
            logging.getLogger("m365_connector").debug("check failed", exc_info=exc)
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            report, code = {"ok": False, "error": {"code": type(exc).__name__, "message": first}}, 1
        else:
            code = _check_exit(report)
        _json(report)
        return code
    settings = _settings(args)
    report = asyncio.run(permission_report(settings))
    if not args.quiet:
        _print_report(report)
    return _check_exit(report)


def _check_exit(report: dict[str, Any]) -> int:
    if not report["token"]["ok"] or not (report.get("graph") or {"ok": True})["ok"]:
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
    talk = not (args.json or args.quiet)
    if talk:
        print(f"Starting a simulated tenant with {args.users} users (local HTTPS simulator of Entra ID and Graph)...")
    if not args.quota_scale > 0:
        print("error: --quota-scale must be a positive number (1 = Graph's own quotas).", file=sys.stderr)
        return EXIT_CONFIG
    spec = TenantSpec(seed=args.seed, users=args.users, report_names_concealed=args.report_names == "concealed",
                      quota_scale=args.quota_scale)
    with Simulator(spec) as sim:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("M365_", "SNAPSHOT_", "KEY_VAULT"))}
        env.update(sim.env())
        # Clients read the CA bundle from the process environment.
        os.environ["SSL_CERT_FILE"] = env["SSL_CERT_FILE"]
        os.environ["REQUESTS_CA_BUNDLE"] = env["REQUESTS_CA_BUNDLE"]
        env["SNAPSHOT_DIR"] = out
        run_args = argparse.Namespace(**{**vars(args), "out": None})
        code = cmd_run(run_args, env, trigger="demo")
    if talk:
        _demo_insights(out)
        print(f"\nSnapshot files are under {out}/tenants/ ; read one with:\n"
              f"  zcat {out}/tenants/*/latest/users.jsonl.gz | head -n 2")
    return code


def _demo_insights(out: str) -> None:
    from connector.cli.insights import print_summary
    from connector.store.contract import read_json
    from connector.store.local import LocalStore

    store = LocalStore(out)
    for pointer in sorted(store.list("tenants/")):
        if pointer.endswith("/latest.json"):
            manifest = read_json(store, (read_json(store, pointer) or {}).get("manifest", ""))
            if manifest:
                print_summary(store, manifest)


def cmd_insights(args: argparse.Namespace) -> int:
    from connector.cli.insights import NotFound, run
    from connector.store.destination import open_store

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
    from connector.cli.docgen import stale_files, write

    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"{name} is out of date with the code: run {PROG} docs", file=sys.stderr)
        return 1 if stale else 0
    for name in write():
        if not args.quiet:
            print(f"updated {name}")
    return 0


COMMANDS = {"run": cmd_run, "check": cmd_check, "demo": cmd_demo, "insights": cmd_insights, "docs": cmd_docs,
            "tenants": cmd_tenants}


# -- the parser --------------------------------------------------------------------------------------------------

def _dataset_names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown dataset {', '.join(unknown) or repr(value)}; valid names: "
                                         f"{', '.join(DATASETS)}")
    return names


class _Flatten(argparse.Action):
    """`--datasets a,b c` -> [a, b, c]; repeated options add up."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[no-untyped-def]
        current = list(getattr(namespace, self.dest, None) or [])
        for chunk in values:
            current.extend(n for n in chunk if n not in current)
        setattr(namespace, self.dest, current)


def _common(parser: argparse.ArgumentParser, *, sub: bool) -> None:
    """Options of every command, accepted before and after the command's name. In a subcommand their
    default is SUPPRESS, so a value given before the name is not reset by the subparser."""
    default: Any = argparse.SUPPRESS if sub else False
    group = parser.add_argument_group("options of every command")
    group.add_argument("-v", "--verbose", action="store_true", default=default,
                       help="log what the connector does to stderr (requests, retries, the run summary)")
    group.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="print nothing but errors: no progress, no summary (the exit code tells the outcome)")
    group.add_argument("--version", action="version", version=f"{PROG} {__version__}",
                       help="print the version and exit")


def _epilog(command: str) -> str | None:
    codes = EXIT_CODES.get(command)
    return "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in codes) if codes else None


def _collection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", nargs="+", type=_dataset_names, action=_Flatten, metavar="NAME",
                        help="datasets to collect, separated by commas or spaces (default: M365_DATASETS, else all): "
                             + ", ".join(DATASETS))
    parser.add_argument("--json", action="store_true",
                        help="print the run's manifest (with manifestLocation) as JSON on stdout instead of the "
                             "summary table; no progress display")
    parser.add_argument("--progress-every", type=float, default=PROGRESS_EVERY, metavar="SECONDS",
                        help="when stderr is not a terminal, print a progress line this often "
                             f"(default {PROGRESS_EVERY:g}); on a terminal a live table is shown instead")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(parser, sub=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=_epilog(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _common(p, sub=True)
        return p

    run = command("run", "collect one snapshot with the settings from the environment")
    run.add_argument("--out", metavar="FOLDER", help="write to this local folder (overrides SNAPSHOT_DIR)")
    run.add_argument("--resume", nargs="?", const="latest", type=_run_id, metavar="RUN_ID",
                     help="continue an unfinished run from its checkpoints: the given one, or the newest one in "
                          "the destination (a new run when there is none)")
    run.add_argument("--full", action="store_true",
                     help="read every dataset in full, instead of only the changes since the last run where Graph "
                          "tracks them (delta queries; M365_DELTA)")
    run.add_argument("--tenant", metavar="TENANT", help="collect this registered tenant only (default: every "
                                                        "tenant of the registry, or M365_TENANT_ID without one)")
    run.add_argument("--parallel", type=int, default=4, choices=range(1, 33), metavar="N",
                     help="tenants collected at once when collecting every registered tenant (default 4)")
    _collection_options(run)
    check = command("check", "report the token and, per dataset, whether the app may collect it")
    check.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    check.add_argument("--tenant", metavar="TENANT", help="check this registered tenant (consent and permissions)")
    check.add_argument("--datasets", nargs="+", type=_dataset_names, action=_Flatten, metavar="NAME",
                       help="datasets to check, separated by commas or spaces (default: M365_DATASETS, else all)")
    demo = command("demo", "collect a simulated tenant (local simulator of Entra ID and Graph) into a folder")
    demo.add_argument("--out", default="demo-output", metavar="FOLDER",
                      help="folder for the snapshot (default: ./demo-output)")
    demo.add_argument("--users", type=int, default=2000, help="users in the simulated tenant (default 2000)")
    demo.add_argument("--seed", type=int, default=1, help="seed of the simulated tenant: the same seed gives the "
                                                          "same tenant (default 1)")
    _collection_options(demo)
    docs = command("docs", "regenerate the generated parts of README.md and docs/ (tables, lists, JSON Schemas)")
    docs.add_argument("--check", action="store_true", help="only report out-of-date files (exit 1), change nothing")
    demo.add_argument("--report-names", choices=("concealed", "visible"), default="concealed",
                      help="user names in the simulated usage reports (default: concealed, Microsoft's default)")
    demo.add_argument("--quota-scale", type=float, default=1.0, metavar="N",
                      help="Graph's quotas N times faster in the simulator and the collector alike (default 1: "
                           "Graph's own, so the demo shows how they pace a run)")
    insights = command("insights", "compute the licence insights (insights.json, licence_findings.jsonl.gz, "
                                   "report.html) of a collected run again, without calling Graph")
    insights.add_argument("--out", metavar="FOLDER", help="the local snapshot folder (overrides SNAPSHOT_DIR; "
                                                          "default: SNAPSHOT_DIR or the Blob settings)")
    insights.add_argument("--run", default="latest", metavar="ID|latest",
                          help="the run to compute them for (default: latest, the newest published run)")
    insights.add_argument("--json", action="store_true", help="print the manifest's insights entry as JSON")
    tenants_parser(command, _dataset_names, _Flatten, lambda p: _common(p, sub=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    if not args.verbose:  # a failed token request is reported once, as one line naming the setting
        logging.getLogger("azure.identity").setLevel(logging.ERROR)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print("Configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # say what, not a traceback (that is behind -v)
        from connector.store.contract import DestinationError
        from connector.store.locks import TenantBusy

        logging.getLogger("m365_connector").info("command failed", exc_info=exc)
        if isinstance(exc, TenantBusy):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BUSY
        if isinstance(exc, DestinationError):
            print(f"error: {exc} (-v shows details)", file=sys.stderr)
            return 1
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"error: {type(exc).__name__}: {first} (-v shows details)", file=sys.stderr)
        return 1
