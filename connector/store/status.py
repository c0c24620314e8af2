"""Status records of runs requested through the Function app, and the index that lists them.

`tenants/<tenant>/runs/<runId>/status.json` says where a run is: queued, running (with the lease
holder that collects it), succeeded, partial or failed. `tenants/<tenant>/run-index/<key>` holds one
empty entry per run whose name sorts newest first, so the recent runs are one List Blobs request of
`limit` names plus `limit` reads, whatever the length of the history.

A record is only ever moved along ALLOWED transitions: a forged or late message can neither revive
a finished run nor fail one that is still queued.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from connector.store.contract import Store, read_json, write_json

log = logging.getLogger("m365_connector")

STATUS_SCHEMA = 1
TERMINAL = frozenset({"succeeded", "partial", "failed"})
ACTIVE = frozenset({"queued", "running"})
QUEUED_STALE = timedelta(hours=1)  # a queued run not started by then is given up (superseded)
# ASCII digits only, used with fullmatch: no Unicode digits and no trailing newline get through.
RUN_ID_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")
GUID_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
ALLOWED = {
    "queued": frozenset({"running", "failed"}),
    "running": frozenset({"queued", "running", "succeeded", "partial", "failed"}),
}


def valid_run_id(value: object) -> bool:
    return isinstance(value, str) and RUN_ID_RE.fullmatch(value) is not None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def status_path(key: str, run_id: str) -> str:
    return f"tenants/{key}/runs/{run_id}/status.json"


def pointer_path(key: str) -> str:
    """`active-run.json`: the run that is queued or running, created only if absent."""
    return f"tenants/{key}/active-run.json"


def clear_pointer(store: Store, key: str, run_id: str) -> None:
    current = store.read_tagged(pointer_path(key))
    if current is None:
        return
    try:
        active = orjson.loads(current[0]).get("runId")
    except (ValueError, AttributeError):
        active = None
    if active in (run_id, None):
        store.delete_if_unchanged(pointer_path(key), current[1])


def index_prefix(key: str) -> str:
    return f"tenants/{key}/run-index"


def index_name(key: str, run_id: str, requested_at: str) -> str:
    """Names sort newest first: every digit of the request time (to the millisecond) is inverted."""
    digits = re.sub(r"[^0-9]", "", requested_at)[:17].ljust(17, "0")
    inverted = "".join(str(9 - int(d)) for d in digits)
    return f"{index_prefix(key)}/{inverted}-{run_id}"


def new_record(run_id: str, key: str, trigger: str, datasets: Iterable[str], requested_at: str,
               full: bool = False) -> dict[str, Any]:
    """`full`: the request asked for a full read of every dataset (no delta: connector/collect/delta.py)."""
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
        "worker": None,
        "datasets": {n: {"status": "pending", "records": 0, "seconds": None} for n in datasets},
        "full": full,
        "warnings": [],
        "manifest": None,
        "manifestUrl": None,
        "error": None,
    }


def read_status(store: Store, key: str, run_id: str) -> dict[str, Any] | None:
    try:
        record = read_json(store, status_path(key, run_id))
    except ValueError:
        log.error("the status record of run %s is not JSON; it is treated as missing", run_id)
        return None
    return record if isinstance(record, dict) and record.get("runId") == run_id else None


def write_status(store: Store, record: dict[str, Any]) -> None:
    record["updatedAt"] = now_iso()
    write_json(store, status_path(record["tenant"], record["runId"]), record)


def create_status(store: Store, record: dict[str, Any]) -> None:
    """A new run: its record, then its index entry (a record without an entry is found by the
    one-time backfill; an entry without a record is skipped when listing)."""
    write_status(store, record)
    store.write_bytes(index_name(record["tenant"], record["runId"], record["requestedAt"]), b"", "text/plain")


def can_move(record: dict[str, Any], new: str) -> bool:
    return new in ALLOWED.get(record.get("status") or "", frozenset())


def fail(store: Store, record: dict[str, Any], message: str, remedy: str) -> dict[str, Any]:
    record["status"] = "failed"
    record["finishedAt"] = record.get("finishedAt") or now_iso()
    record["error"] = {"message": message, "remedy": remedy}
    for entry in record["datasets"].values():
        if entry.get("status") in ("pending", "running"):
            entry["status"] = "failed"
    write_status(store, record)
    return record


def queued_too_long(record: dict[str, Any], now: datetime | None = None) -> bool:
    if record.get("status") != "queued":
        return False
    requested = parse_iso(record.get("requestedAt"))
    return requested is not None and (now or datetime.now(UTC)) - requested > QUEUED_STALE


# -- listing ------------------------------------------------------------------------------------------------

INDEX_COMPLETE = "index-complete"


def _backfill(store: Store, key: str) -> None:
    """Runs recorded before the index existed get their entries, once (one full listing)."""
    prefix = f"tenants/{key}/runs/"
    for path in store.list(prefix):
        if path.endswith("/status.json"):
            run_id = path[len(prefix):].split("/", 1)[0]
            record = read_status(store, key, run_id)
            if record is not None:
                store.write_bytes(index_name(key, run_id, record.get("requestedAt") or run_id), b"", "text/plain")
    store.write_bytes(f"tenants/{key}/{INDEX_COMPLETE}", b"", "text/plain")


def list_statuses(store: Store, key: str, limit: int) -> list[dict[str, Any]]:
    """The `limit` most recently requested runs, newest first: one listing of `limit` index names and
    `limit` record reads, independent of how many runs the tenant has had."""
    names = store.list_first(index_prefix(key), limit)
    if len(names) < limit and store.read_bytes(f"tenants/{key}/{INDEX_COMPLETE}") is None:
        _backfill(store, key)
        names = store.list_first(index_prefix(key), limit)
    run_ids = [name.rsplit("-", 2)[-2] + "-" + name.rsplit("-", 1)[-1] for name in names]
    run_ids = [r for r in run_ids if valid_run_id(r)]
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(run_ids)))) as pool:
        records = list(pool.map(lambda r: read_status(store, key, r), run_ids))
    return [r for r in records if r is not None]
