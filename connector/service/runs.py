"""Runs of the Function app: requesting one, and what a caller is told about it.

A run is requested (HTTP run-now or the timer), recorded as `queued` in
`tenants/<tenant>/runs/<runId>/status.json` (connector.store.status), and sent as a message to the
`m365-runs` queue (connector.service.run_queue); the queue worker (connector.service.worker) collects it under the
tenant's lock (connector.store.locks). Concurrent requests race to create `tenants/<tenant>/active-run.json`
only if absent, so they all get the one run that won instead of starting others.

`<tenant>` is the configured M365_TENANT_ID (lower-case). When that is a GUID, status and snapshot
share a folder; when it is a domain, the status record names the manifest under the tenant GUID.

This module also re-exports the names function_app.py and the tests use, so each concern can live
in its own module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from connector.config import ConfigError, Problem, Settings
from connector.service.appconfig import (
    FUNCTION_SETTING_NAMES,
    STORAGE_CONNECTION,
    deployment_registry,
    function_problems,
    function_settings,
    store_for,
    tenant_key,
)
from connector.service.run_queue import POISON_QUEUE, RUNS_QUEUE, encode_message, queue_client, send_message
from connector.service.schedule import DEFAULT_SCHEDULE, schedule_problem, timer_schedule
from connector.service.worker import process_message, process_poison
from connector.store.contract import Store
from connector.store.locks import LEASE_SECONDS, RENEW_SECONDS, TenantBusy, TenantLock, is_collecting, lock_path
from connector.store.publish import RESUMABLE_FOR
from connector.store.registry import Registry, RegistryError, entry_settings
from connector.store.status import (
    ACTIVE,
    QUEUED_STALE,
    RUN_ID_RE,
    TERMINAL,
    create_status,
    fail,
    list_statuses,
    new_record,
    now_iso,
    parse_iso,
    pointer_path,
    read_status,
    status_path,
    valid_run_id,
)

log = logging.getLogger("m365_connector")

__all__ = [
    "ACTIVE", "DEFAULT_SCHEDULE", "FUNCTION_SETTING_NAMES", "LEASE_SECONDS", "POISON_QUEUE", "RENEW_SECONDS",
    "RUNS_QUEUE", "RUN_ID_RE", "STORAGE_CONNECTION", "TERMINAL", "QueueUnavailable", "RunRequest", "TenantBusy",
    "TenantLock", "current_view", "function_problems", "function_settings", "list_statuses", "lock_path",
    "process_message", "process_poison", "queue_client", "read_status", "request_run", "schedule_problem",
    "status_path", "store_for", "tenant_key", "timer_fired", "timer_schedule", "valid_run_id",
]


class QueueUnavailable(Exception):
    """The run could not be enqueued; carries the fix."""


def is_stale(store: Store, key: str, record: dict[str, Any] | None, now: datetime | None = None) -> bool:
    """An active record nobody is working on any more: running without a live lease naming it (its
    worker died), or queued for longer than QUEUED_STALE (its message was lost)."""
    if record is None or record.get("status") not in ACTIVE:
        return False
    if record["status"] == "queued":
        requested = parse_iso(record.get("requestedAt"))
        return requested is not None and (now or datetime.now(UTC)) - requested > QUEUED_STALE
    return not is_collecting(store, key, record["runId"])


def current_view(store: Store, key: str, record: dict[str, Any]) -> dict[str, Any]:
    """The record as a caller should see it: a `running` run whose worker is gone is not running."""
    if record.get("status") != "running" or is_collecting(store, key, record["runId"]):
        return record
    view = dict(record)
    view.update(status="queued", stale=True, error={
        "message": f"the worker collecting this run stopped (no live lease on {lock_path(key)})",
        "remedy": "Nothing to do: the queue delivers the run again and it is collected from the start; if that "
                  "does not happen, POST /api/runs starts a new run in its place."})
    return view


@dataclass
class RunRequest:
    record: dict[str, Any]
    created: bool  # False: an active run of the tenant was returned instead


def request_run(settings: Settings, trigger: str, datasets: list[str] | None = None,
                env: Mapping[str, str] | None = None, *, store: Store | None = None, full: bool = False,
                delay: int = 0) -> RunRequest:
    """Queue a run of the tenant, or return the one already queued or running. `full`: every dataset is read in
    full (no delta), as the status record says; the worker believes the record.

    Many concurrent callers race to create the active-run pointer; exactly one wins and enqueues. `delay`: seconds
    before the message is delivered (the tenant's slot after the schedule's tick); the record says when.
    """
    from connector.collect.engine import new_run_id

    env = os.environ if env is None else env
    store = store or store_for(settings)
    key = tenant_key(settings)
    pointer = pointer_path(key)
    wanted = list(datasets) if datasets else list(settings.selected_datasets)
    for _ in range(5):
        run_id = new_run_id()
        requested_at = now_iso()
        claim = {"runId": run_id, "trigger": trigger, "requestedAt": requested_at}
        if store.create(pointer, orjson.dumps(claim)):
            record = new_record(run_id, key, trigger, wanted, requested_at, full)
            if delay > 0:
                moment = (parse_iso(requested_at) or datetime.now(UTC)) + timedelta(seconds=delay)
                record["notBefore"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            create_status(store, record)
            try:
                send_message(env, encode_message(run_id, key, trigger, datasets, requested_at), delay)
            except Exception as exc:
                remedy = ("Check the AzureWebJobsStorage connection (queue endpoint and the identity's "
                          "'Storage Queue Data Contributor' role), then request the run again.")
                fail(store, record, f"the run could not be queued ({type(exc).__name__})", remedy)
                current = store.read_tagged(pointer)
                if current is not None:
                    store.delete_if_unchanged(pointer, current[1])
                raise QueueUnavailable(remedy) from exc
            log.info("run %s queued (trigger %s, datasets %s)", run_id, trigger, ",".join(wanted),
                     extra={"run_id": run_id, "trigger": trigger, "event": "run_queued"})
            return RunRequest(record, True)
        current = store.read_tagged(pointer)
        if current is None:
            continue  # finished and cleared in between: try again
        data, etag = current
        try:
            active = orjson.loads(data)
            active_id = active["runId"]
            if not valid_run_id(active_id):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            store.delete_if_unchanged(pointer, etag)
            continue
        record = read_status(store, key, active_id)
        if record is None:
            # The winner has not written its status yet, or died before it did.
            claimed = parse_iso(active.get("requestedAt"))
            if claimed is not None and datetime.now(UTC) - claimed > timedelta(minutes=5):
                store.delete_if_unchanged(pointer, etag)
                continue
            record = new_record(active_id, key, active.get("trigger", trigger), wanted,
                                active.get("requestedAt") or now_iso())
            return RunRequest(record, False)
        if record["status"] in ACTIVE and not is_stale(store, key, record):
            log.info("run %s is already %s; trigger %s starts nothing", active_id, record["status"], trigger,
                     extra={"run_id": active_id, "trigger": trigger, "event": "run_deduplicated"})
            return RunRequest(record, False)
        if record["status"] in ACTIVE and _resume_stale(store, key, record, env):
            return RunRequest(record, False)
        if record["status"] in ACTIVE:
            fail(store, record, f"the run was abandoned ({record['status']} with no worker collecting it)",
                 "A newer run was requested in its place; check the Function's logs for why this one stopped.")
        store.delete_if_unchanged(pointer, etag)
    raise RuntimeError("could not claim the tenant's active run after 5 attempts")


def _resume_stale(store: Store, key: str, record: dict[str, Any], env: Mapping[str, str]) -> bool:
    """A run nobody is collecting (its worker died, or its message was lost) that can still be resumed
    from its checkpoints is queued again under its own run id, instead of being failed and replaced by a
    new run: the schedule never starts a second run of a tenant while one can be resumed. Past
    RESUMABLE_FOR it is given up (its checkpoints are swept)."""
    requested = parse_iso(record.get("requestedAt"))
    if requested is None or datetime.now(UTC) - requested > RESUMABLE_FOR:
        return False
    if not _claim_requeue(store, key, record):
        return True  # another request queued it again a moment ago: one message is enough
    try:
        # No datasets in the message: the worker collects what the record names (and M365_DATASETS selects).
        # Its own request time and trigger: the worker refuses a message that disagrees with the record.
        send_message(env, encode_message(record["runId"], key, record.get("trigger") or "timer", None,
                                         record.get("requestedAt") or now_iso()))
    except Exception as exc:
        log.warning("run %s could not be queued again to resume (%s)", record["runId"], type(exc).__name__)
        return False
    log.info("run %s had no worker; queued again to resume", record["runId"],
             extra={"run_id": record["runId"], "event": "run_requeued"})
    return True


REQUEUE_QUIET = timedelta(minutes=5)  # the queue's visibilityTimeout: a message sent since is still on its way


def _claim_requeue(store: Store, key: str, record: dict[str, Any]) -> bool:
    """Mark the record `queued` again (requeuedAt) under its ETag, so that of many concurrent requests for a
    dead run exactly one queues its message; a run queued again within REQUEUE_QUIET is not queued twice."""
    path = status_path(key, record["runId"])
    current = store.read_tagged(path)
    if current is None:
        return False
    data, tag = current
    try:
        fresh = orjson.loads(data)
    except ValueError:
        return False
    again = parse_iso(fresh.get("requeuedAt"))
    if again is not None and datetime.now(UTC) - again < REQUEUE_QUIET:
        record.update(fresh)
        return False
    fresh.update(status="queued", requeuedAt=now_iso(), updatedAt=now_iso())
    if fresh.get("worker") or record.get("status") == "running":
        fresh["error"] = {"message": "its worker stopped without finishing; queued again to resume from its "
                                    "checkpoints", "remedy": "Nothing to do."}
    if not store.replace_if_unchanged(path, orjson.dumps(fresh, option=orjson.OPT_INDENT_2) + b"\n", tag):
        record.update(read_status(store, key, record["runId"]) or {})
        return False
    record.update(fresh)
    return True


def timer_fired(past_due: bool = False, env: Mapping[str, str] | None = None) -> RunRequest | list[RunRequest]:
    """The schedule requests a run exactly as POST /api/runs does (deduplicated the same way): of the one
    tenant, or with a tenant registry one message per registered tenant (timer_sweep)."""
    env = os.environ if env is None else env
    if past_due:
        log.warning("the schedule fired late (past due); requesting the run now")
    try:
        settings = function_settings(env)
        registry = deployment_registry(env)
        stored = registry.stored
    except ConfigError as exc:
        log.error("scheduled run not requested: configuration errors: %s", "; ".join(map(str, exc.problems)))
        raise
    if stored:
        return timer_sweep(registry, env)
    return request_run(settings, "timer", None, env)


def timer_sweep(registry: Registry, env: Mapping[str, str]) -> list[RunRequest]:
    """One queued run per registered tenant, each delivered at its slot after the tick; one tenant whose entry
    or queueing fails is logged (naming the entry and the field) and the others are queued all the same."""
    try:
        entries = registry.entries()
    except RegistryError as exc:
        log.error("scheduled runs not requested: %s", exc)
        raise ConfigError([Problem("tenant registry", str(exc))]) from None
    requested: list[RunRequest] = []
    for position, entry in enumerate(entries, 1):
        try:
            settings = entry_settings(entry, env, position)
            requested.append(request_run(settings, "timer", None, env, delay=entry.delay_seconds()))
        except (ConfigError, QueueUnavailable) as exc:
            log.error("scheduled run of tenant %s not requested: %s", entry.key, exc,
                      extra={"tenant": entry.key, "event": "tenant_not_queued"})
    return requested
