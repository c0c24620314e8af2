"""The queue worker: collects the run a message names, at most once at a time per tenant.

A message is only a pointer to a status record; the record (in our own storage) says what to
collect and may only move along the allowed transitions. A message that disagrees with the record
(other datasets, another request time or trigger) is refused and logged, never obeyed. A run whose
worker died (SIGKILL, host crash, scale-in) is `running` without a live lease: the next delivery
takes the lock and collects it again, resuming from its checkpoints (connector/collect/checkpoint.py);
what the dead attempt left unpublished is swept by the engine before writing. A delivery stops
collecting when its invocation budget (M365_INVOCATION_BUDGET, below functionTimeout) is spent and
queues the run again. A run whose manifest is written is published: a delivery of it, whatever its
record says, only finishes the publication (latest.json, latest/) and records the outcome; its folder
is never written again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from connector.collect.progress import rows as progress_rows
from connector.collect.progress import run_seconds_left
from connector.config import ConfigError
from connector.service.appconfig import invocation_budget, registered_settings, store_for, tenant_key
from connector.service.run_queue import (
    POISON_QUEUE,
    RUNS_QUEUE,
    TRIGGERS,
    BadMessage,
    RunMessage,
    encode_message,
    parse_message,
    send_message,
)
from connector.service.sweep import finish_sweep
from connector.store.contract import Store
from connector.store.locks import (
    LEASE_SECONDS,
    RENEW_SECONDS,
    Renewer,
    TenantBusy,
    TenantLock,
    busy_message,
    live_holder,
    lock_path,
)
from connector.store.publish import AlreadyPublished, Publication, read_manifest
from connector.store.registry import NotRegistered, consent_url, needs_consent
from connector.store.status import (
    GUID_RE,
    TERMINAL,
    clear_pointer,
    fail,
    now_iso,
    read_status,
    write_status,
)

log = logging.getLogger("m365_connector")


class _Reporter:
    """Writes the status record as the run goes; shared by the engine's callback and the lease renewer."""

    def __init__(self, store: Store, record: dict[str, Any]):
        self.store = store
        self.record = record
        self.run: Any = None
        self.lock = threading.Lock()

    def progress(self, run: Any) -> None:
        self.run = run
        if run.finished is None:
            self.save()

    def save(self) -> None:
        with self.lock:
            run = self.run
            if run is not None and self.record["status"] not in TERMINAL:
                if GUID_RE.fullmatch(run.tenant_id or ""):
                    self.record["tenantId"] = run.tenant_id
                current = {r.name: r for r in progress_rows(run)}
                self.record["datasets"] = {n: {"status": r.status, "records": r.records,
                                               "seconds": r.durationSeconds or None,
                                               "secondsLeft": current[n].seconds_left if n in current else None}
                                           for n, r in run.results.items()}
                self.record["expectedSecondsLeft"] = run_seconds_left(list(current.values()))
                self.record["warnings"] = list(run.warnings)
            write_status(self.store, self.record)


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


def _finish_from_manifest(store: Store, record: dict[str, Any], manifest: dict[str, Any]) -> None:
    prefix = f"tenants/{manifest['tenantId']}/runs/{manifest['runId']}"
    record.update(
        status=manifest["status"], tenantId=manifest["tenantId"], startedAt=manifest["startedAt"],
        finishedAt=manifest["finishedAt"], warnings=manifest["warnings"],
        manifest=f"{prefix}/manifest.json", manifestUrl=store.url(f"{prefix}/manifest.json"),
        error=_final_error(manifest),
        datasets={n: {"status": d["status"], "records": d["records"], "seconds": d["durationSeconds"]}
                  for n, d in manifest["datasets"].items()},
    )
    write_status(store, record)


def _published_manifest(store: Store, record: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of the run when it is written: the run is published, whatever its record says (a worker
    that stopped after the manifest, a failure after it that set the record back to queued)."""
    return read_manifest(store, record.get("tenantId") or record["tenant"], record["runId"])


def _finish_published(store: Store, record: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Recovery of a published run: finish its publication (latest.json, latest/, its in-progress marker; all
    safe to repeat) and record the outcome from the manifest. Nothing is written into the run's folder."""
    problems = Publication.published(store, manifest).finish(manifest)
    _finish_from_manifest(store, record, {**manifest, "warnings": [*manifest.get("warnings", ()), *problems]})


def _disagreement(record: dict[str, Any], msg: RunMessage) -> str | None:
    """Why a message does not describe the run its record describes, or None. The record (our own storage)
    decides what a run collects; a message is only a pointer to it."""
    if msg.datasets is not None and set(msg.datasets) != set(record.get("datasets") or ()):
        return "it names other datasets than the run's status record"
    if msg.requested_at is not None and msg.requested_at != record.get("requestedAt"):
        return "its request time is not the run's"
    if msg.trigger in TRIGGERS and msg.trigger != record.get("trigger"):
        return "its trigger is not the run's"
    return None


def _refused(record: dict[str, Any], msg: RunMessage, queue: str) -> bool:
    """True (and logged) when the message disagrees with the record: it is then consumed and not obeyed."""
    why = _disagreement(record, msg)
    if why is None:
        return False
    log.error("refusing a message on %s for run %s: %s. The status record decides what a run collects; the "
              "message is ignored and the run stays %s.", queue, msg.run_id, why, record.get("status"),
              extra={"run_id": msg.run_id, "event": "message_refused"})
    return True


def _datasets(settings: Any, record: dict[str, Any]) -> tuple[str, ...]:
    """What the run collects: the record's datasets that M365_DATASETS still selects. Nothing outside
    M365_DATASETS is ever collected."""
    wanted = set(record.get("datasets") or ())
    return tuple(d for d in settings.selected_datasets if d in wanted)


def process_message(body: str | bytes, dequeue_count: int = 1, env: Mapping[str, str] | None = None, *,
                    lease_seconds: int = LEASE_SECONDS, renew_seconds: float = RENEW_SECONDS,
                    budget_seconds: float | None = None) -> str:
    """Collect the run a queue message asks for, at most once at a time per tenant.

    Returns "collected", "duplicate" (already finished), "ignored" (not a run of ours) or "requeued" (the
    invocation budget was spent: the run saved its checkpoints and was queued again to resume).
    Raises TenantBusy while another worker holds the tenant's lock, so the queue delivers it again later.
    """
    env = os.environ if env is None else env
    try:
        msg = parse_message(body)
    except BadMessage as exc:
        log.error("ignoring a message on %s: %s", RUNS_QUEUE, exc)
        return "ignored"
    run_id = msg.run_id
    try:
        settings = registered_settings(env, msg.tenant)
        budget = invocation_budget(env) if budget_seconds is None else budget_seconds
    except NotRegistered:
        log.error("refusing run %s: its message names a tenant this deployment does not collect (not in its tenant "
                  "registry); nothing is collected", run_id, extra={"run_id": run_id, "event": "tenant_refused"})
        return "ignored"
    except ConfigError as exc:
        # Retried by the queue (the setting may be fixed meanwhile), then marked by the poison handler.
        log.error("run %s cannot start: configuration errors: %s", run_id, "; ".join(map(str, exc.problems)))
        raise
    key = tenant_key(settings)
    store = store_for(settings)
    record = read_status(store, key, run_id)
    if record is None:
        log.error("ignoring run %s: no status record exists for it, so it was not requested through this app",
                  run_id)
        return "ignored"
    if record["status"] in TERMINAL:
        log.info("run %s already %s; duplicate delivery ignored", run_id, record["status"])
        return "duplicate"
    if _refused(record, msg, RUNS_QUEUE):
        return "ignored"

    lock = TenantLock(store, key, lease_seconds)
    if not lock.acquire(run_id, record["trigger"]):
        holder = live_holder(store, key)
        record = read_status(store, key, run_id) or record  # as late as possible: another worker may have started it
        if record["status"] == "queued" and (holder or {}).get("runid") != run_id:
            record["error"] = {"message": f"waiting for the tenant's lock ({busy_message(key, holder)})",
                               "remedy": "Nothing to do: the queue delivers the run again in a few minutes."}
            write_status(store, record)
        raise TenantBusy(f"run {run_id}: {busy_message(key, holder)}", holder)
    try:
        outcome = _collect_locked(store, key, lock, msg, settings, dequeue_count, renew_seconds, (budget, env))
    finally:
        lock.release()
        try:
            latest = read_status(store, key, run_id)
            if latest is None or latest["status"] in TERMINAL:
                clear_pointer(store, key, run_id)
        except Exception as exc:  # storage gone: the original outcome matters more; a later request clears it
            log.warning("run %s: could not clear the active-run pointer (%s)", run_id, type(exc).__name__)
    if outcome == "collected" and record.get("trigger") == "timer":
        try:
            finish_sweep(env)  # the last tenant of a scheduled sweep writes the cross-tenant summary
        except Exception as exc:  # the run is collected; the next finished run writes the summary
            log.warning("run %s: the cross-tenant summary was not written (%s)", run_id, type(exc).__name__)
    return outcome


def _collect_locked(store: Store, key: str, lock: TenantLock, msg: RunMessage, settings: Any,
                    dequeue_count: int, renew_seconds: float, budget: tuple[float, Mapping[str, str]]) -> str:
    from connector.collect.engine import collect

    run_id = msg.run_id
    record = read_status(store, key, run_id)  # re-read under the lock: another worker may have finished it
    if record is None or record["status"] in TERMINAL:
        return "duplicate"
    manifest = _published_manifest(store, record)
    if manifest is not None:  # published: never collected into its folder again
        log.warning("run %s is %s but its manifest is written (an earlier attempt stopped after publishing it); "
                    "finishing its publication instead of collecting it again", run_id, record["status"])
        _finish_published(store, record, manifest)
        return "collected"
    if record["status"] == "running":  # we hold the lock, so its previous worker is gone
        log.warning("run %s: its previous worker stopped without finishing (%s); collecting it again, "
                    "resuming from its checkpoints", run_id, (record.get("worker") or {}).get("host", "unknown host"))
    datasets = _datasets(settings, record)
    if not datasets:
        fail(store, record, "none of the run's datasets is selected by M365_DATASETS any more",
             "Request the run again (POST /api/runs) with datasets that M365_DATASETS selects.")
        return "collected"
    settings = dataclasses.replace(settings, datasets=datasets, full=record.get("full") is True)
    record.update(status="running", startedAt=now_iso(), error=None,
                  attempts=max(int(record.get("attempts") or 0) + 1, dequeue_count),
                  worker={"lock": lock_path(key), **lock.holder})
    reporter = _Reporter(store, record)
    reporter.save()
    log.info("run %s started (trigger %s, attempt %d)", run_id, record["trigger"], record["attempts"],
             extra={"run_id": run_id, "trigger": record["trigger"], "event": "run_started"})
    renewer = Renewer(lock, reporter.save, renew_seconds)

    spent = threading.Event()

    async def _collect() -> dict[str, Any]:
        task = asyncio.ensure_future(collect(settings, store, trigger=record["trigger"], run_id=run_id,
                                             progress=reporter.progress, lock_path=lock_path(key),
                                             claim_tenant=lock.claim))
        renewer.watch(task)
        timer = asyncio.get_running_loop().call_later(budget[0], _spend_budget, task, reporter, spent)
        try:
            return await task
        finally:
            timer.cancel()

    try:
        manifest = asyncio.run(_collect())
    except AlreadyPublished as exc:  # published under the token's tenant id, which the record did not name yet
        renewer.finish()
        published = read_manifest(store, exc.tenant_id, run_id)
        if published is None:
            raise
        with reporter.lock:
            _finish_published(store, record, published)
        return "collected"
    except BaseException as exc:
        renewer.finish()
        if spent.is_set() and not renewer.lost:
            return _requeue(store, record, reporter, msg, budget)
        try:
            stored = read_status(store, key, run_id)
            if stored is not None and stored["status"] in TERMINAL:
                raise exc  # finished or given up elsewhere meanwhile: leave that record alone
            with reporter.lock:
                record.update(status="queued", startedAt=None)
                record["error"] = _stopped_error(exc, renewer.lost)
            reporter.save()
        except Exception as note:
            if note is not exc:  # storage gone too: the record is corrected by the next delivery
                log.warning("run %s: could not record the failed attempt (%s)", run_id, type(note).__name__)
        raise
    renewer.finish()
    with reporter.lock:
        _finish_from_manifest(store, record, manifest)
        if needs_consent(record.get("error")):  # the tenant's admin consents (again) at this URL
            record["error"]["consentUrl"] = consent_url(settings, budget[1])
            write_status(store, record)
    return "collected"


def _spend_budget(task: asyncio.Future[Any], reporter: _Reporter, spent: threading.Event) -> None:
    """The invocation budget is spent: stop collecting (chains save where they stand first), unless every
    dataset is done and the run is publishing, which is left to finish."""
    run = reporter.run
    if run is not None and not any(r.status in ("pending", "running") for r in run.results.values()):
        return
    if run is not None:
        run.pausing = True
    spent.set()
    task.cancel()


def _requeue(store: Store, record: dict[str, Any], reporter: _Reporter, msg: RunMessage,
             budget: tuple[float, Mapping[str, str]]) -> str:
    """Queue the run again under its run id: the next delivery resumes it from its checkpoints. Its status
    record stays `queued` with the progress so far; a queue that cannot be reached raises, so this delivery
    is retried and resumes all the same."""
    seconds, env = budget
    with reporter.lock:
        record.update(status="queued", error=None, resumes=int(record.get("resumes") or 0) + 1,
                      paused={"at": now_iso(), "reason": f"the invocation budget of {seconds / 60:g} minutes "
                              "(M365_INVOCATION_BUDGET) was spent; the run resumes from its checkpoints on the "
                              "next delivery"})
    reporter.save()
    # The record's own request time, datasets and trigger: a message that disagrees with it is refused.
    send_message(env, encode_message(msg.run_id, msg.tenant, record["trigger"],
                                     list(msg.datasets) if msg.datasets else None, record["requestedAt"]))
    log.info("run %s paused after %.0f s (M365_INVOCATION_BUDGET) and queued again to resume", msg.run_id, seconds,
             extra={"run_id": msg.run_id, "event": "run_requeued"})
    return "requeued"


def _stopped_error(exc: BaseException, lease_lost: bool) -> dict[str, str]:
    """The record's error for an attempt that stopped and will be delivered again."""
    if isinstance(exc, TenantBusy):  # the same tenant under another spelling of M365_TENANT_ID is collecting
        return {"message": f"waiting for the tenant's lock ({exc})",
                "remedy": "Nothing to do: the queue delivers the run again in a few minutes."}
    return {"message": "the tenant lock was lost" if lease_lost else f"the collection stopped: {type(exc).__name__}",
            "remedy": "It is retried automatically; after repeated failures the run is marked failed. See the "
                      "Function's logs for this run id."}


def process_poison(body: str | bytes, env: Mapping[str, str] | None = None) -> str:
    """A message that failed every delivery: mark its run failed so callers stop waiting. Only a run that
    shows a failed delivery (an error or an attempt) and has no live worker can be failed this way."""
    env = os.environ if env is None else env
    try:
        msg = parse_message(body)
    except BadMessage as exc:
        log.error("ignoring a message on %s: %s", POISON_QUEUE, exc)
        return "ignored"
    try:
        settings = registered_settings(env, msg.tenant)
    except NotRegistered:
        log.error("ignoring poison message for run %s: it names a tenant this deployment does not collect",
                  msg.run_id, extra={"run_id": msg.run_id, "event": "tenant_refused"})
        return "ignored"
    except ConfigError as exc:
        log.error("poison message for run %s; configuration errors: %s", msg.run_id,
                  "; ".join(map(str, exc.problems)))
        return "ignored"
    key = tenant_key(settings)
    store = store_for(settings)
    record = read_status(store, key, msg.run_id)
    if record is None:
        log.error("ignoring poison message for run %s: no status record exists for it", msg.run_id)
        return "ignored"
    if record["status"] in TERMINAL:
        log.info("poison message for run %s ignored: the run is %s", msg.run_id, record["status"])
        return "ignored"
    if _refused(record, msg, POISON_QUEUE):
        return "ignored"
    holder = live_holder(store, key)
    if holder is not None and holder.get("runid") == msg.run_id:
        log.info("poison message for run %s ignored: a worker is collecting it", msg.run_id)
        return "ignored"
    manifest = _published_manifest(store, record)
    if manifest is not None:  # published: its record follows the manifest (a later run's sweep finishes latest/)
        log.warning("poison message for run %s: the run is published; its status is taken from its manifest",
                    msg.run_id)
        _finish_from_manifest(store, record, manifest)
        clear_pointer(store, key, msg.run_id)
        return "collected"
    if record["status"] == "queued" and not (record.get("attempts") or record.get("error")):
        log.error("poison message for run %s ignored: no delivery of that run has failed yet", msg.run_id)
        return "ignored"
    earlier = (record.get("error") or {}).get("message")
    fail(store, record, "the run failed on every delivery attempt" + (f"; last: {earlier}" if earlier else ""),
         f"Look up run {msg.run_id} in the Function's logs (Application Insights traces), fix the cause, "
         "then POST /api/runs again.")
    clear_pointer(store, key, msg.run_id)
    log.error("run %s failed: its message went to %s", msg.run_id, POISON_QUEUE,
              extra={"run_id": msg.run_id, "trigger": record.get("trigger"), "status": "failed",
                     "event": "run_poisoned"})
    return "failed"
