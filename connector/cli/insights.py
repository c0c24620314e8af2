"""`python -m connector insights`: the insights of a run already in the store (local folder or Blob), computed
again without calling Graph, e.g. for runs collected before insights existed or with another price sheet.

The files are written beside the run's data and the run's manifest is updated to list them (with bytes and
sha256), exactly as a run would have; the summary names the top findings and where the report is.
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

import orjson

from connector.config import ConfigError, Problem, Settings
from connector.insights.derive import INSIGHTS_FILE, REPORT_FILE, derive, run_prefix
from connector.insights.prices import load as load_prices
from connector.store.contract import Store, read_json, write_json

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


class NotFound(Exception):
    """The tenant or run asked for is not in the store."""


def resolve_tenant(store: Store, settings: Settings) -> str:
    """M365_TENANT_ID when it is a GUID; else the one tenant in the store."""
    if _GUID.match(settings.tenant_id or ""):
        return settings.tenant_id.lower()
    tenants = sorted({n.split("/")[1] for n in store.list("tenants/") if n.count("/") >= 2})
    if len(tenants) == 1:
        return tenants[0]
    if not tenants:
        raise NotFound(f"no snapshots in {store.location} (tenants/<id>/...): run a collection first, or point "
                       "SNAPSHOT_DIR / --out or the Blob settings at the snapshots")
    raise ConfigError([Problem("M365_TENANT_ID", f"the store holds several tenants ({', '.join(tenants)}): set "
                                                 "M365_TENANT_ID to the Directory (tenant) ID of one of them.")])


def resolve_run(store: Store, tenant: str, run: str) -> dict[str, Any]:
    if run == "latest":
        pointer = read_json(store, f"tenants/{tenant}/latest.json")
        if not pointer:
            raise NotFound(f"tenant {tenant} has no published run (tenants/{tenant}/latest.json is missing)")
        run = pointer["runId"]
    elif not _RUN_ID.match(run):
        raise NotFound(f"{run!r} is not a run id (like 20261122T020000Z-3f9a1c) or 'latest'")
    manifest = read_json(store, f"{run_prefix(tenant, run)}/manifest.json")
    if not manifest:
        raise NotFound(f"run {run} of tenant {tenant} has no manifest.json: it was never published")
    return manifest


def update_manifest(store: Store, manifest: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """List the new files in the run's manifest; replace earlier insights warnings with this computation's."""
    codes = {"insights_failed", "price_sheet_unknown_sku"}
    manifest["warnings"] = [w for w in manifest.get("warnings") or [] if w.get("code") not in codes]
    manifest["warnings"] += entry.get("warnings", [])
    manifest["insights"] = entry
    write_json(store, f"{run_prefix(manifest['tenantId'], manifest['runId'])}/manifest.json", manifest)
    return manifest


def top_findings(doc: dict[str, Any], limit: int = 5) -> list[str]:
    lines = []
    for f in doc["findings"][:limit]:
        money = f" ({f['monthlyWaste']:,.2f} {f['currency']}/month)" if f.get("monthlyWaste") is not None else ""
        lines.append(f"  [{f['severity']}] {f['message']}{money}")
    return lines


def print_summary(store: Store, manifest: dict[str, Any], out: TextIO = sys.stdout) -> None:
    """Top findings and where the report is, after a run or an insights command."""
    entry = manifest.get("insights") or {}
    prefix = run_prefix(manifest["tenantId"], manifest["runId"])
    if entry.get("status") != "succeeded":
        print(f"\nlicence insights: {entry.get('status', 'not computed')} "
              f"({entry.get('reason') or entry.get('error') or 'no insights entry in the manifest'})", file=out)
        return
    doc = read_json(store, f"{prefix}/{INSIGHTS_FILE}") or {"findings": [], "totals": {}}
    t = doc["totals"]
    money = t.get("monthlyWaste")
    waste = " + ".join(f"{v:,.2f} {c}" for c, v in sorted(money.items())) + "/month, " if money else ""
    print(f"\nlicence insights: {t.get('assigned', 0):,} licences on {t.get('licensedUsers', 0):,} users; "
          f"{waste}{t.get('wasteSeats', 0):,} wasted seats; {len(doc['findings'])} findings. Top findings:", file=out)
    for line in top_findings(doc) or ["  (none)"]:
        print(line, file=out)
    print(f"report: {store.url(f'{prefix}/{REPORT_FILE}')}", file=out)


def run(settings: Settings, store: Store, run: str = "latest", as_json: bool = False) -> int:
    tenant = resolve_tenant(store, settings)
    manifest = resolve_run(store, tenant, run)
    prices = load_prices(settings, store)
    entry = derive(store, manifest, settings, prices)
    manifest = update_manifest(store, manifest, entry)
    if as_json:
        sys.stdout.write(orjson.dumps(entry, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for w in entry.get("warnings", []):
            print(f"warning [{w['code']}]: {w['message']}")
        print_summary(store, manifest)
    return 0 if entry["status"] == "succeeded" else 1
