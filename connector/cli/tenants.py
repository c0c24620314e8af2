"""Many tenants from the command line: `tenants add|list|remove|consent-url`, `run --tenant X`, and `run` of every
registered tenant (a sweep, several tenants at once) with the cross-tenant summary written after it.

The registry lives in the deployment's snapshot store (connector/store/registry.py), so the same commands
manage a local folder and the Function app's storage account alike.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from connector.config import CLOUDS, ConfigError, Problem, Settings, load_offline_settings, require_destination
from connector.store.registry import (
    DEFAULT_REDIRECT_URI,
    MAX_SLOT,
    NotRegistered,
    Registry,
    RegistryError,
    TenantEntry,
    consent_url,
    entry_settings,
    needs_consent,
    valid_tenant,
)

SWEEP_PARALLEL = 4


def _env(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> dict[str, str]:
    out = dict(os.environ if env is None else env)
    if getattr(args, "out", None):
        out["SNAPSHOT_DIR"] = args.out
    return out


def open_registry(env: Mapping[str, str]) -> Registry:
    """The deployment's registry, in the store its settings name (SNAPSHOT_DIR or Blob)."""
    from connector.store.destination import open_store

    settings = load_offline_settings(env)
    require_destination(settings)
    return Registry(open_store(settings), env)


def _registry_problem(exc: RegistryError) -> ConfigError:
    return ConfigError([Problem("tenant registry", str(exc))])


def tenant_settings(env: Mapping[str, str], tenant: str, extra: Mapping[str, str] | None = None) -> Settings:
    """Settings of one registered tenant; ConfigError naming --tenant when it is not registered."""
    registry = open_registry(env)
    try:
        position, entry = registry.find(tenant)
    except NotRegistered:
        raise ConfigError([Problem("--tenant", "names a tenant this deployment's registry does not list; register "
                                               "it with `m365-connector tenants add TENANT` (see `tenants list`)")])
    except RegistryError as exc:
        raise _registry_problem(exc) from None
    return entry_settings(entry, env, position, extra)


def _consent_line(entry: TenantEntry, env: Mapping[str, str], redirect: str | None = None) -> str:
    settings = entry_settings(entry, {**env, "M365_CLIENT_SECRET": env.get("M365_CLIENT_SECRET") or "-"})
    return consent_url(settings, env, redirect)


def _entry_from_args(args: argparse.Namespace) -> TenantEntry:
    if not valid_tenant(args.tenant):
        raise ConfigError([Problem("TENANT", "is neither a Directory (tenant) ID (GUID) nor a domain such as "
                                             "contoso.onmicrosoft.com")])
    if (args.secret_name or args.certificate_name) and not args.client_id:
        raise ConfigError([Problem("--client-id", "is required with --secret-name or --certificate-name: the app "
                                                  "registration in the customer's tenant they belong to")])
    from connector.store.status import now_iso

    return TenantEntry(tenant=args.tenant.strip(), cloud=args.cloud, slot=args.slot,
                       datasets=tuple(args.datasets) if args.datasets else None,
                       domains=tuple(args.domains.split(",")) if args.domains else None,
                       client_id=args.client_id, secret_name=args.secret_name,
                       certificate_name=args.certificate_name, added_at=now_iso())


def cmd_tenants(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """`tenants add|list|remove|consent-url`."""
    env = _env(args, env)
    registry = open_registry(env)

    def say(text: str) -> None:
        if not args.quiet:
            print(text)

    try:
        if args.action == "add":
            entry = _entry_from_args(args)
            entry_settings(entry, {**env, "M365_CLIENT_SECRET": env.get("M365_CLIENT_SECRET") or "-"})  # checks
            changed = registry.add(entry)
            say(f"{'registered' if changed else 'already registered'}: {entry.key} (auth: {entry.auth}, slot "
                f"{entry.schedule_slot()} min after each scheduled run)")
            say("An administrator of the tenant grants the app's permissions once, at this URL (the v2.0 "
                "admin-consent endpoint):")
            say(f"  {_consent_line(entry, env, args.redirect_uri)}")
            return 0
        if args.action == "remove":
            if not registry.remove(args.tenant):
                print(f"error: {args.tenant.strip().lower()} is not registered", file=sys.stderr)
                return 1
            say(f"removed: {args.tenant.strip().lower()} (its snapshots are kept)")
            return 0
        entries = registry.entries()
        if args.action == "consent-url":
            _, entry = registry.find(args.tenant)
            print(_consent_line(entry, env, args.redirect_uri))
            return 0
        rows = [{**e.to_json(), "auth": e.auth, "slot": e.schedule_slot()} for e in entries]
        if args.json:
            sys.stdout.write(orjson.dumps({"stored": registry.stored, "tenants": rows},
                                          option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            if not registry.stored:
                print("no registry yet: the one tenant of M365_TENANT_ID is collected", file=sys.stderr)
            for row in rows:
                print(f"{row['tenant']:<40} {row.get('cloud') or '-':<9} auth {row['auth']:<12} slot {row['slot']:>2}"
                      f"  datasets {_shown(row.get('datasets'))}  domains {_shown(row.get('domains'))}")
        return 0
    except NotRegistered:
        print(f"error: {args.tenant.strip().lower()} is not registered (see `tenants list`)", file=sys.stderr)
        return 1
    except RegistryError as exc:
        raise _registry_problem(exc) from None


def _shown(value: Any) -> str:
    return "(deployment's)" if value is None else value if isinstance(value, str) else ",".join(value)


def sweep(env: Mapping[str, str], collect_one: Callable[[Settings], dict[str, Any]],
          parallel: int = SWEEP_PARALLEL) -> list[dict[str, Any]]:
    """Collect every registered tenant, `parallel` at once; one row per tenant (status, run, manifest or the
    error), in the registry's order. A tenant that fails (no consent, a malformed entry) fails alone."""
    registry = open_registry(env)
    try:
        entries = list(enumerate(registry.entries(), 1))
    except RegistryError as exc:
        raise _registry_problem(exc) from None

    def one(item: tuple[int, TenantEntry]) -> dict[str, Any]:
        position, entry = item
        row: dict[str, Any] = {"tenant": entry.key}
        try:
            settings = entry_settings(entry, env, position)
        except ConfigError as exc:
            return {**row, "status": "failed", "error": "; ".join(map(str, exc.problems))}
        try:
            manifest = collect_one(settings)
        except Exception as exc:  # one tenant's failure is that tenant's
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            return {**row, "status": "failed", "error": f"{type(exc).__name__}: {first}"}
        row.update(status=manifest["status"], tenantId=manifest.get("tenantId"), runId=manifest.get("runId"),
                   manifest=manifest)
        if manifest["status"] == "failed":
            row["error"] = ((manifest.get("error") or {}).get("remedy") or "no dataset could be collected")
            if needs_consent(manifest.get("error")):
                row["consentUrl"] = _consent_line(entry, env)
        return row

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="sweep") as pool:
        return list(pool.map(one, entries))


def sweep_exit_code(rows: list[dict[str, Any]]) -> int:
    """0 when every tenant succeeded, 1 when none was collected, else 3 (partial: the table says which)."""
    if rows and all(r["status"] == "succeeded" for r in rows):
        return 0
    if all(r["status"] == "failed" for r in rows):
        return 1
    return 3


def add_parser(command: Callable[[str, str], argparse.ArgumentParser], dataset_names: Callable[[str], list[str]],
               flatten: type[argparse.Action], common: Callable[[argparse.ArgumentParser], None]) -> None:
    """The `tenants` command and its actions (`dataset_names` and `flatten` parse --datasets as `run` does,
    `common` adds the options of every command)."""
    tenants = command("tenants", "manage the deployment's tenant registry (which tenants `run` collects)")
    actions = tenants.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="register a tenant and print its admin-consent URL")
    add.add_argument("tenant", metavar="TENANT", help="the tenant's Directory (tenant) ID or domain")
    add.add_argument("--cloud", choices=tuple(CLOUDS), help="its cloud (default: M365_CLOUD)")
    add.add_argument("--datasets", nargs="+", type=dataset_names, action=flatten, metavar="NAME",
                     help="its datasets (default: M365_DATASETS)")
    add.add_argument("--domains", metavar="D1,D2", help="only users of these domains (default: M365_DOMAINS)")
    add.add_argument("--slot", type=int, choices=range(MAX_SLOT), metavar=f"0-{MAX_SLOT - 1}",
                     help="minutes after each scheduled run at which it is collected (default: from its id)")
    add.add_argument("--client-id", help="an app registration of its own instead of the multi-tenant app")
    add.add_argument("--secret-name", help="with --client-id: the Key Vault secret holding that app's secret")
    add.add_argument("--certificate-name", help="with --client-id: the Key Vault certificate of that app")
    add.add_argument("--redirect-uri", help=f"redirect URI of the consent URL (default: M365_CONSENT_REDIRECT_URI, "
                                            f"else {DEFAULT_REDIRECT_URI})")
    remove = actions.add_parser("remove", help="stop collecting a tenant (its snapshots are kept)")
    remove.add_argument("tenant", metavar="TENANT", help="the registered tenant's id or domain")
    listing = actions.add_parser("list", help="the registered tenants")
    listing.add_argument("--json", action="store_true", help="print the registry as JSON")
    url = actions.add_parser("consent-url", help="print a registered tenant's admin-consent URL")
    url.add_argument("tenant", metavar="TENANT", help="the registered tenant's id or domain")
    url.add_argument("--redirect-uri", help="redirect URI of the consent URL")
    for sub in (add, remove, listing, url):
        common(sub)
        sub.add_argument("--out", metavar="FOLDER", help="the local snapshot folder (overrides SNAPSHOT_DIR)")
