"""Runs of the Function app: requests through a Storage queue, status records, one run per tenant.

A run is requested (HTTP run-now or the timer), recorded as `queued` in
`tenants/<tenant>/runs/<runId>/status.json` beside the snapshots, and sent as a message to the
`m365-runs` queue; a queue-triggered worker collects it. Three pieces of Storage keep a tenant to one
collection at a time:

* `tenants/<tenant>/active-run.json`, created only if absent (If-None-Match: *), names the run that is
  queued or running, so concurrent requests all get that run instead of starting another;
* `tenants/<tenant>/run.lock`, a blob whose 60-second lease the worker holds and renews while it
  collects, so duplicate deliveries and scaled-out instances cannot collect in parallel, and a crashed
  worker's lease simply expires;
* the status record, whose `updatedAt` heartbeat tells a live run from an abandoned one.

`<tenant>` is the configured M365_TENANT_ID (lower-case). When that is a GUID, status and snapshot
share a folder; when it is a domain, the status record names the manifest under the tenant GUID.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from .config import ConfigError, Problem, Settings, load_settings, require_destination
from .store import Store, read_json, write_json

log = logging.getLogger("m365_connector")

RUNS_QUEUE = "m365-runs"
POISON_QUEUE = f"{RUNS_QUEUE}-poison"
STORAGE_CONNECTION = "AzureWebJobsStorage"
DEFAULT_SCHEDULE = "0 0 2 * * *"
LEASE_SECONDS = 60
RENEW_SECONDS = 20
QUEUED_STALE = timedelta(hours=1)  # a queued run not started by then is given up (superseded)
RUNNING_STALE = timedelta(minutes=5)  # a running run whose heartbeat is older than this has died
STATUS_SCHEMA = 1
TERMINAL = frozenset({"succeeded", "partial", "failed"})
ACTIVE = frozenset({"queued", "running"})
RUN_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")

# Settings read by the Function app on top of connector.config.SETTING_NAMES.
FUNCTION_SETTING_NAMES: tuple[str, ...] = (
    "M365_SCHEDULE",
    "AzureWebJobsStorage",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
)

# Azurite's documented development account, for "UseDevelopmentStorage=true" (public, not a secret).
_DEV_STORAGE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
                "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;")


class TenantBusy(Exception):
    """Another collection holds the tenant's lock; the queue delivers the message again later."""


class QueueUnavailable(Exception):
    """The run could not be enqueued; carries the fix."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# -- schedule -------------------------------------------------------------------------------------------

_NCRONTAB_FIELD = re.compile(r"^[0-9A-Za-z*/,\-]+$")


def schedule_problem(value: str) -> str | None:
    """Why an M365_SCHEDULE value is not a six-field NCRONTAB expression, or None."""
    fields = value.split()
    if len(fields) != 6 or not all(_NCRONTAB_FIELD.match(f) for f in fields):
        return (f"{value!r} is not a six-field NCRONTAB expression ({{second}} {{minute}} {{hour}} {{day}} "
                f"{{month}} {{day-of-week}}, UTC), such as {DEFAULT_SCHEDULE!r} for 02:00 UTC daily.")
    return None


def timer_schedule(env: Mapping[str, str] | None = None) -> str:
    """The timer's schedule. Read when function_app is imported (indexing), so a missing setting gets the
    default; an invalid one also falls back to the default and /api/health reports it."""
    env = os.environ if env is None else env
    value = (env.get("M365_SCHEDULE") or "").strip()
    if not value:
        return DEFAULT_SCHEDULE
    if schedule_problem(value):
        log.error("M365_SCHEDULE: %s The timer uses %s until it is fixed.", schedule_problem(value),
                  DEFAULT_SCHEDULE)
        return DEFAULT_SCHEDULE
    return value


# -- settings and clients ---------------------------------------------------------------------------------

def function_settings(env: Mapping[str, str] | None = None, *, destination: bool = True) -> Settings:
    """Connector settings for the Function app; raises ConfigError naming every problem."""
    env = os.environ if env is None else env
    settings = load_settings(env)
    if destination:
        require_destination(settings)
    return settings


def function_problems(env: Mapping[str, str] | None = None) -> list[Problem]:
    """Every configuration problem the Function app would hit, for /api/health."""
    env = os.environ if env is None else env
    problems: list[Problem] = []
    try:
        function_settings(env)
    except ConfigError as exc:
        problems.extend(exc.problems)
    schedule = (env.get("M365_SCHEDULE") or "").strip()
    if schedule and schedule_problem(schedule):
        problems.append(Problem("M365_SCHEDULE", schedule_problem(schedule) or ""))
    if not _queue_endpoint(env):
        problems.append(_queue_problem())
    return problems


def _queue_problem() -> Problem:
    return Problem(STORAGE_CONNECTION, "is not set, so runs cannot be queued. Locally set it to an Azurite "
                                       "connection string or UseDevelopmentStorage=true; in Azure set "
                                       "AzureWebJobsStorage__queueServiceUri (or __accountName) with "
                                       "__credential=managedidentity and __clientId.")


def _queue_endpoint(env: Mapping[str, str]) -> str | None:
    if (env.get("AzureWebJobsStorage") or "").strip():
        return "connection-string"
    if (env.get("AzureWebJobsStorage__queueServiceUri") or "").strip():
        return env["AzureWebJobsStorage__queueServiceUri"].strip()
    account = (env.get("AzureWebJobsStorage__accountName") or "").strip()
    if account:
        return f"https://{account}.queue.core.windows.net"
    return None


def queue_client(env: Mapping[str, str] | None = None, queue: str = RUNS_QUEUE) -> Any:
    """A QueueClient on the AzureWebJobsStorage connection, encoding messages as the trigger expects.

    The queue trigger decodes Base64 by default (host.json extensions.queues.messageEncoding), so
    messages are sent with TextBase64EncodePolicy.
    """
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

    env = os.environ if env is None else env
    policies = {"message_encode_policy": TextBase64EncodePolicy(),
                "message_decode_policy": TextBase64DecodePolicy()}
    conn = (env.get("AzureWebJobsStorage") or "").strip()
    if conn:
        if conn.replace(" ", "").lower() == "usedevelopmentstorage=true":
            conn = _DEV_STORAGE
        return QueueClient.from_connection_string(conn, queue, **policies)
    endpoint = _queue_endpoint(env)
    if not endpoint:
        raise ConfigError([_queue_problem()])
    credential_kind = (env.get("AzureWebJobsStorage__credential") or "").strip().lower()
    client_id = (env.get("AzureWebJobsStorage__clientId") or "").strip() or None
    if credential_kind == "managedidentity":
        from azure.identity import ManagedIdentityCredential

        credential: Any = ManagedIdentityCredential(client_id=client_id)
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(managed_identity_client_id=client_id)
    return QueueClient(endpoint, queue, credential=credential, **policies)


def send_message(env: Mapping[str, str], message: dict[str, Any]) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    with queue_client(env) as client:
        body = orjson.dumps(message).decode()
        try:
            client.send_message(body)
        except ResourceNotFoundError:  # first run on a fresh account: the host may not have created it yet
            try:
                client.create_queue()
            except Exception:
                pass
            client.send_message(body)


_stores: dict[Settings, Store] = {}
_stores_lock = threading.Lock()


def store_for(settings: Settings) -> Store:
    """One store per settings per process: keeps the credential's token cache across invocations."""
    from .store import open_store

    with _stores_lock:
        store = _stores.get(settings)
        if store is None:
            store = _stores[settings] = open_store(settings)
        return store


def tenant_key(settings: Settings) -> str:
    return settings.tenant_id.strip().lower()


def status_path(key: str, run_id: str) -> str:
    return f"tenants/{key}/runs/{run_id}/status.json"


def _pointer_path(key: str) -> str:
    return f"tenants/{key}/active-run.json"


def _lock_path(key: str) -> str:
    return f"tenants/{key}/run.lock"


# -- conditional blobs and the lock --------------------------------------------------------------------------

class TenantLock:
    """A lease on `tenants/<tenant>/run.lock`: held while collecting, renewed, and expiring if the holder dies."""

    def __init__(self, store: Store, key: str, seconds: int = LEASE_SECONDS):
        self.store = store
        self.path = _lock_path(key)
        self.seconds = seconds
        self._lease: Any = None

    def acquire(self) -> bool:
        self._lease = self.store.lease(self.path, self.seconds)
        return self._lease is not None

    def renew(self) -> None:
        if self._lease is not None:
            self._lease.renew()

    def release(self) -> None:
        if self._lease is not None:
            try:
                self._lease.release()
            except Exception:
                log.warning("could not release the tenant lock; it expires within %d s", self.seconds)
            self._lease = None


# -- status records ----------------------------------------------------------------------------------------

def new_record(run_id: str, key: str, trigger: str, datasets: Iterable[str], requested_at: str) -> dict[str, Any]:
    return {
        "schemaVersion": STATUS_SCHEMA,
        "runId": run_id,
        "tenant": key,
        "tenantId": None,
        "status": "queued",
        "trigger": trigger,
        "requestedAt": requested_at,
        "startedAt": None,
        "finishedAt": None,
        "updatedAt": requested_at,
        "attempts": 0,
        "datasets": {n: {"status": "pending", "records": 0, "seconds": None} for n in datasets},
        "warnings": [],
        "manifest": None,
        "manifestUrl": None,
        "error": None,
    }


def read_status(store: Store, key: str, run_id: str) -> dict[str, Any] | None:
    return read_json(store, status_path(key, run_id))


def _write_status(store: Store, record: dict[str, Any]) -> None:
    record["updatedAt"] = now_iso()
    write_json(store, status_path(record["tenant"], record["runId"]), record)


def is_stale(record: dict[str, Any] | None, now: datetime | None = None) -> bool:
    """An active record nobody is working on any more (lost message, dead worker)."""
    if record is None or record.get("status") not in ACTIVE:
        return False
    now = now or datetime.now(UTC)
    if record["status"] == "queued":
        requested = _parse_iso(record.get("requestedAt"))
        return requested is not None and now - requested > QUEUED_STALE
    updated = _parse_iso(record.get("updatedAt"))
    return updated is not None and now - updated > RUNNING_STALE


def _fail(store: Store, record: dict[str, Any], message: str, remedy: str) -> dict[str, Any]:
    record["status"] = "failed"
    record["finishedAt"] = record.get("finishedAt") or now_iso()
    record["error"] = {"message": message, "remedy": remedy}
    for entry in record["datasets"].values():
        if entry.get("status") in ("pending", "running"):
            entry["status"] = "failed"
    _write_status(store, record)
    return record


def list_statuses(store: Store, key: str, limit: int) -> list[dict[str, Any]]:
    """Newest first. Run ids sort by their second; runs requested in the same second by requestedAt."""
    prefix = f"tenants/{key}/runs/"
    ids = sorted({p[len(prefix):].split("/", 1)[0] for p in store.list(prefix) if p.endswith("/status.json")},
                 reverse=True)
    out: list[dict[str, Any]] = []
    for run_id in ids:
        if len(out) >= limit and run_id[:16] != out[-1]["runId"][:16]:
            break
        record = read_status(store, key, run_id)
        if record is not None:
            out.append(record)
    out.sort(key=lambda r: (r["runId"][:16], r.get("requestedAt") or ""), reverse=True)
    return out[:limit]


# -- requesting a run -----------------------------------------------------------------------------------------

@dataclass
class RunRequest:
    record: dict[str, Any]
    created: bool  # False: an active run of the tenant was returned instead


def request_run(settings: Settings, trigger: str, datasets: list[str] | None = None,
                env: Mapping[str, str] | None = None) -> RunRequest:
    """Queue a run of the tenant, or return the one already queued or running.

    Many concurrent callers race to create the active-run pointer; exactly one wins and enqueues.
    """
    from .engine import new_run_id

    env = os.environ if env is None else env
    store = store_for(settings)
    key = tenant_key(settings)
    pointer = _pointer_path(key)
    wanted = list(datasets) if datasets else list(settings.selected_datasets)
    for _ in range(5):
        run_id = new_run_id()
        requested_at = now_iso()
        claim = {"runId": run_id, "trigger": trigger, "requestedAt": requested_at}
        if store.create(pointer, orjson.dumps(claim)):
            record = new_record(run_id, key, trigger, wanted, requested_at)
            _write_status(store, record)
            message = {"v": 1, "runId": run_id, "tenant": key, "trigger": trigger,
                       "datasets": datasets or None, "requestedAt": requested_at}
            try:
                send_message(env, message)
            except Exception as exc:
                remedy = ("Check the AzureWebJobsStorage connection (queue endpoint and the identity's "
                          "'Storage Queue Data Contributor' role), then request the run again.")
                _fail(store, record, f"the run could not be queued ({type(exc).__name__})", remedy)
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
        except (ValueError, KeyError, TypeError):
            store.delete_if_unchanged(pointer, etag)
            continue
        record = read_status(store, key, active_id)
        if record is None:
            # The winner has not written its status yet, or died before it did.
            claimed = _parse_iso(active.get("requestedAt"))
            if claimed is not None and datetime.now(UTC) - claimed > timedelta(minutes=5):
                store.delete_if_unchanged(pointer, etag)
                continue
            record = new_record(active_id, key, active.get("trigger", trigger), wanted,
                                active.get("requestedAt") or now_iso())
            return RunRequest(record, False)
        if record["status"] in ACTIVE and not is_stale(record):
            log.info("run %s is already %s; trigger %s starts nothing", active_id, record["status"], trigger,
                     extra={"run_id": active_id, "trigger": trigger, "event": "run_deduplicated"})
            return RunRequest(record, False)
        if record["status"] in ACTIVE:
            _fail(store, record, f"the run was abandoned (still {record['status']} with no progress)",
                  "A newer run was requested in its place; check the Function's logs for why this one stopped.")
        store.delete_if_unchanged(pointer, etag)
    raise RuntimeError("could not claim the tenant's active run after 5 attempts")


def timer_fired(past_due: bool = False, env: Mapping[str, str] | None = None) -> RunRequest:
    """The schedule requests a run exactly as POST /api/runs does (deduplicated the same way)."""
    env = os.environ if env is None else env
    if past_due:
        log.warning("the schedule fired late (past due); requesting the run now")
    try:
        settings = function_settings(env)
    except ConfigError as exc:
        log.error("scheduled run not requested: configuration errors: %s", "; ".join(map(str, exc.problems)))
        raise
    return request_run(settings, "timer", None, env)


# -- the worker -----------------------------------------------------------------------------------------------

def parse_message(body: str | bytes) -> dict[str, Any] | None:
    try:
        msg = orjson.loads(body)
    except ValueError:
        return None
    if not isinstance(msg, dict) or not isinstance(msg.get("runId"), str) or not RUN_ID_RE.match(msg["runId"]):
        return None
    if not isinstance(msg.get("tenant"), str):
        return None
    datasets = msg.get("datasets")
    if datasets is not None and not (isinstance(datasets, list) and all(isinstance(d, str) for d in datasets)):
        return None
    return msg


class _Reporter:
    """Writes the status record as the run goes; shared by the engine's callback and the lease renewer."""

    def __init__(self, store: Store, record: dict[str, Any]):
        self.store = store
        self.record = record
        self.run: Any = None
        self._lock = threading.Lock()

    def progress(self, run: Any) -> None:
        self.run = run
        if run.finished is None:
            self.save()

    def save(self) -> None:
        with self._lock:
            run = self.run
            if run is not None and self.record["status"] not in TERMINAL:
                if _GUID_RE.match(run.tenant_id or ""):
                    self.record["tenantId"] = run.tenant_id
                self.record["datasets"] = {n: {"status": r.status, "records": r.records,
                                               "seconds": r.durationSeconds or None}
                                           for n, r in run.results.items()}
                self.record["warnings"] = list(run.warnings)
            _write_status(self.store, self.record)


class _Renewer(threading.Thread):
    """Renews the lease and beats the status heartbeat; cancels the collection if the lease is lost."""

    def __init__(self, lock: TenantLock, reporter: _Reporter, interval: float):
        super().__init__(name="m365-lease-renewer", daemon=True)
        self.lock, self.reporter, self.interval = lock, reporter, interval
        self.stop = threading.Event()
        self.lost = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Future[Any] | None = None

    def run(self) -> None:
        failures = 0
        while not self.stop.wait(self.interval):
            try:
                self.lock.renew()
                failures = 0
            except Exception as exc:
                failures += 1
                log.warning("renewing the tenant lock failed (%s)", type(exc).__name__)
                if failures >= 2:
                    self.lost = True
                    if self.loop is not None and self.task is not None:
                        self.loop.call_soon_threadsafe(self.task.cancel)
                    return
                continue
            try:
                self.reporter.save()
            except Exception as exc:
                log.warning("writing the status heartbeat failed (%s)", type(exc).__name__)


def _clear_pointer(store: Store, key: str, run_id: str) -> None:
    current = store.read_tagged(_pointer_path(key))
    if current is None:
        return
    try:
        active = orjson.loads(current[0]).get("runId")
    except (ValueError, AttributeError):
        active = None
    if active in (run_id, None):
        store.delete_if_unchanged(_pointer_path(key), current[1])


def _final_error(manifest: dict[str, Any]) -> dict[str, Any] | None:
    if manifest["status"] != "failed":
        return None
    err = manifest.get("error")
    if err:
        return {"message": f"{err.get('code')} ({err.get('reason')})", "remedy": err.get("remedy"),
                "code": err.get("code")}
    messages = [w["message"] for w in manifest.get("warnings") or []]
    return {"message": "no dataset could be collected",
            "remedy": " ".join(messages[:3]) or "See the warnings and the Function's logs."}


def process_message(body: str | bytes, dequeue_count: int = 1, env: Mapping[str, str] | None = None, *,
                    lease_seconds: int = LEASE_SECONDS, renew_seconds: float = RENEW_SECONDS) -> str:
    """Collect the run a queue message asks for, at most once at a time per tenant.

    Returns "collected", "duplicate" (already finished or being collected) or "ignored" (not ours).
    Raises TenantBusy when another collection holds the lock, so the queue retries it later.
    """
    from .engine import collect

    env = os.environ if env is None else env
    msg = parse_message(body)
    if msg is None:
        log.error("ignoring a malformed message on %s (expected JSON with runId, tenant, datasets)", RUNS_QUEUE)
        return "ignored"
    run_id = msg["runId"]
    try:
        settings = function_settings(env)
    except ConfigError as exc:
        # Retried by the queue (the setting may be fixed meanwhile), then marked by the poison handler.
        log.error("run %s cannot start: configuration errors: %s", run_id, "; ".join(map(str, exc.problems)))
        raise
    key = tenant_key(settings)
    if msg["tenant"] != key:
        log.error("ignoring run %s: it is for tenant %s but this app collects %s (M365_TENANT_ID)", run_id,
                  msg["tenant"], key)
        return "ignored"
    store = store_for(settings)
    record = read_status(store, key, run_id)
    if record is not None and record["status"] in TERMINAL:
        log.info("run %s already %s; duplicate delivery ignored", run_id, record["status"])
        return "duplicate"

    lock = TenantLock(store, key, lease_seconds)
    if not lock.acquire():
        record = read_status(store, key, run_id)
        if record is not None and (record["status"] in TERMINAL or
                                   (record["status"] == "running" and not is_stale(record))):
            log.info("run %s is being collected elsewhere; duplicate delivery ignored", run_id)
            return "duplicate"
        raise TenantBusy(f"another collection of tenant {key} holds {_lock_path(key)}; run {run_id} is retried "
                         "when the queue delivers it again")
    try:
        record = read_status(store, key, run_id)  # re-read under the lock: another worker may have finished it
        if record is not None and record["status"] in TERMINAL:
            return "duplicate"
        datasets = msg.get("datasets") or None
        if datasets:
            from .datasets import DATASETS

            datasets = [d for d in datasets if d in DATASETS]
            settings = load_settings(env, datasets=tuple(datasets))
        if record is None:
            record = new_record(run_id, key, msg.get("trigger", "queue"), settings.selected_datasets,
                                msg.get("requestedAt") or now_iso())
        record.update(status="running", startedAt=now_iso(), error=None,
                      attempts=max(int(record.get("attempts") or 0) + 1, dequeue_count))
        reporter = _Reporter(store, record)
        reporter.save()
        log.info("run %s started (trigger %s, attempt %d)", run_id, record["trigger"], record["attempts"],
                 extra={"run_id": run_id, "trigger": record["trigger"], "event": "run_started"})
        renewer = _Renewer(lock, reporter, renew_seconds)

        async def _collect() -> dict[str, Any]:
            task = asyncio.ensure_future(collect(settings, store, trigger=record["trigger"], run_id=run_id,
                                                 progress=reporter.progress))
            renewer.loop, renewer.task = asyncio.get_running_loop(), task
            renewer.start()
            return await task

        try:
            manifest = asyncio.run(_collect())
        except BaseException as exc:
            renewer.stop.set()
            lost = renewer.lost
            record.update(status="queued", startedAt=None)
            record["error"] = {"message": ("the tenant lock was lost" if lost else
                                           f"the collection stopped: {type(exc).__name__}"),
                               "remedy": "It is retried automatically; after repeated failures the run is marked "
                                         "failed. See the Function's logs for this run id."}
            reporter.save()
            raise
        finally:
            renewer.stop.set()
        if renewer.is_alive():
            renewer.join(timeout=30)  # no heartbeat may land after the final record
        prefix = f"tenants/{manifest['tenantId']}/runs/{run_id}"
        with reporter._lock:
            record.update(
                status=manifest["status"], tenantId=manifest["tenantId"], startedAt=manifest["startedAt"],
                finishedAt=manifest["finishedAt"], warnings=manifest["warnings"],
                manifest=f"{prefix}/manifest.json", manifestUrl=store.url(f"{prefix}/manifest.json"),
                error=_final_error(manifest),
                datasets={n: {"status": d["status"], "records": d["records"], "seconds": d["durationSeconds"]}
                          for n, d in manifest["datasets"].items()},
            )
            _write_status(store, record)
        return "collected"
    finally:
        lock.release()
        latest = read_status(store, key, run_id)
        if latest is None or latest["status"] in TERMINAL:
            _clear_pointer(store, key, run_id)


def process_poison(body: str | bytes, env: Mapping[str, str] | None = None) -> str:
    """A message that failed every delivery: mark its run failed so callers stop waiting."""
    env = os.environ if env is None else env
    msg = parse_message(body)
    if msg is None:
        log.error("ignoring a malformed message on %s", POISON_QUEUE)
        return "ignored"
    try:
        settings = function_settings(env)
    except ConfigError as exc:
        log.error("poison message for run %s; configuration errors: %s", msg["runId"],
                  "; ".join(map(str, exc.problems)))
        return "ignored"
    store = store_for(settings)
    key = msg["tenant"]
    record = read_status(store, key, msg["runId"])
    if record is None:
        record = new_record(msg["runId"], key, msg.get("trigger", "queue"), msg.get("datasets") or [],
                            msg.get("requestedAt") or now_iso())
    elif record["status"] in TERMINAL or (record["status"] == "running" and not is_stale(record)):
        log.info("poison message for run %s ignored: the run is %s", msg["runId"], record["status"])
        return "ignored"
    earlier = (record.get("error") or {}).get("message")
    _fail(store, record, "the run failed on every delivery attempt" + (f"; last: {earlier}" if earlier else ""),
          f"Look up run {msg['runId']} in the Function's logs (Application Insights traces), fix the cause, "
          "then POST /api/runs again.")
    _clear_pointer(store, key, msg["runId"])
    log.error("run %s failed: its message went to %s", msg["runId"], POISON_QUEUE,
              extra={"run_id": msg["runId"], "trigger": record.get("trigger"), "status": "failed",
                     "event": "run_poisoned"})
    return "failed"
