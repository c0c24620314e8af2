"""GET /api/tenants: each registered tenant's last run, status, next run and consent state, from the same status
records the runs API reads (tenants/<tenant>/runs/<runId>/status.json) and the registry."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.config import ConfigError
from connector.service.appconfig import deployment_registry, store_for
from connector.service.runs import current_view, list_statuses
from connector.service.schedule import next_fire, timer_schedule
from connector.store.registry import TenantEntry, consent_url, entry_settings, needs_consent

LAST_RUN_FIELDS = ("runId", "status", "trigger", "requestedAt", "notBefore", "startedAt", "finishedAt", "tenantId",
                   "manifest", "error")


def consent_state(record: Mapping[str, Any] | None) -> str:
    """`granted` (the last run had a token), `missing` (Entra said the app is not consented there) or `unknown`."""
    if record is None:
        return "unknown"
    if needs_consent(record.get("error")):
        return "missing"
    return "granted" if record.get("status") in ("succeeded", "partial") else "unknown"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tenant_row(entry: TenantEntry, position: int, env: Mapping[str, str], tick: datetime) -> dict[str, Any]:
    """One tenant as GET /api/tenants shows it."""
    row: dict[str, Any] = {"tenant": entry.key, "auth": entry.auth, "slot": entry.schedule_slot()}
    try:
        settings = entry_settings(entry, env, position)
    except ConfigError as exc:
        return {**row, "status": "misconfigured", "lastRun": None, "nextRun": None, "consent": "unknown",
                "problems": [{"setting": p.setting, "message": p.message} for p in exc.problems]}
    store = store_for(settings, interactive=True)
    records = list_statuses(store, entry.key, 1)
    record = current_view(store, entry.key, records[0]) if records else None
    waiting = record is not None and record.get("status") == "queued" and record.get("notBefore")
    row.update(
        tenantId=(record or {}).get("tenantId"),
        status=record["status"] if record else "never",
        lastRun={k: record.get(k) for k in LAST_RUN_FIELDS} if record else None,
        nextRun=record["notBefore"] if waiting else _iso(tick + timedelta(seconds=entry.delay_seconds())),
        consent=consent_state(record), consentUrl=consent_url(settings, env))
    return row


def tenants_view(env: Mapping[str, str] | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Every registered tenant, in the registry's order (RegistryError and ConfigError go to the caller)."""
    env = os.environ if env is None else env
    registry = deployment_registry(env, interactive=True)
    entries = registry.entries()
    schedule = timer_schedule(env)
    tick = next_fire(schedule, now or datetime.now(UTC))
    return {"registry": "stored" if registry.stored else "M365_TENANT_ID", "schedule": schedule,
            "tenants": [tenant_row(entry, i, env, tick) for i, entry in enumerate(entries, 1)]}
