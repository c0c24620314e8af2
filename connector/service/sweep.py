"""A scheduled sweep's end: when the last registered tenant's run of a tick finishes, the worker that finished it
writes the cross-tenant summary (connector/insights/tenants.py). Nothing to coordinate: the sweep is complete when
no registered tenant has a run queued or running, read from the same status records as GET /api/tenants."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from connector.config import ConfigError
from connector.service.appconfig import deployment_registry, store_for
from connector.store.registry import entry_settings
from connector.store.status import ACTIVE, list_statuses

log = logging.getLogger("m365_connector")


def sweep_rows(env: Mapping[str, str]) -> list[dict[str, Any]] | None:
    """One row per registered tenant from its newest run, or None while any tenant's run is queued or running
    (or without a registry: a single tenant has no sweep)."""
    registry = deployment_registry(env)
    if not registry.stored:
        return None
    rows: list[dict[str, Any]] = []
    for position, entry in enumerate(registry.entries(), 1):
        try:
            settings = entry_settings(entry, env, position)
        except ConfigError as exc:
            rows.append({"tenant": entry.key, "status": "failed", "error": "; ".join(map(str, exc.problems))})
            continue
        records = list_statuses(store_for(settings), entry.key, 1)
        if not records:
            rows.append({"tenant": entry.key, "status": "never"})
            continue
        record = records[0]
        if record["status"] in ACTIVE:
            return None
        error = record.get("error") or {}
        rows.append({"tenant": entry.key, "tenantId": record.get("tenantId"), "status": record["status"],
                     "runId": record["runId"], "error": error.get("message") and
                     f"{error['message']}: {error.get('remedy') or ''}".rstrip(": ")})
    return rows


def finish_sweep(env: Mapping[str, str]) -> dict[str, Any] | None:
    """Write tenants/summary.json and summary.html when the sweep is complete; the summary, or None."""
    from connector.insights.tenants import write_summary
    from connector.service.appconfig import function_settings

    rows = sweep_rows(env)
    if rows is None:
        return None
    summary = write_summary(store_for(function_settings(env)), rows)
    log.info("sweep complete: %d tenants, summary written to tenants/summary.json", len(rows),
             extra={"event": "sweep_complete"})
    return summary
