"""Publishing a run: nothing a reader can mistake for a snapshot until the whole run is there.

Order (a public contract, docs/snapshot-format.md):

1. `tenants/<id>/in-progress/<runId>.json` names the run's files and its lock before a byte is written;
   leftovers of runs that died are swept first (never those of a run whose lock is alive).
2. Data files are written invisibly (Blob: staged blocks; folder: `.partial`) while datasets run.
3. When every dataset has finished, they are committed together.
4. Derived files (computed from the committed files) are written: Run.derive() is the one hook.
5. `manifest.json` lists every file with bytes and sha256.
6. `latest.json` moves to the run, only if succeeded or partial and only forward (never to an older run).
7. `latest/` gets a copy of the run's files, then its manifest, and loses files the run does not have.
8. The in-progress marker is removed.

A run folder without a manifest is never published; the sweep of a later run removes its files.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from connector.store.contract import FileInfo, JsonlGzWriter, Store, read_json, write_json
from connector.store.status import now_iso, parse_iso, valid_run_id

log = logging.getLogger("m365_connector")

MANIFEST = "manifest.json"
UNLOCKED_STALE = timedelta(hours=6)  # a run that holds no lock and started this long ago is not running
RESUMABLE_FOR = timedelta(days=7)  # checkpoints of a run older than this are swept, not resumed


def run_prefix(tenant_id: str, run_id: str) -> str:
    return f"tenants/{tenant_id}/runs/{run_id}"


def _started(run_id: str) -> str:
    """The start second of a run id (ids of one second are not ordered by their random part)."""
    return run_id[:16]


def marker_path(tenant_id: str, run_id: str) -> str:
    return f"tenants/{tenant_id}/in-progress/{run_id}.json"


def checkpoint_prefix(tenant_id: str, run_id: str) -> str:
    """Where a run's checkpoints live (connector/collect/checkpoint.py): beside its run folder, never in it."""
    return f"tenants/{tenant_id}/checkpoints/{run_id}/"


def remove_checkpoints(store: Store, tenant_id: str, run_id: str) -> None:
    """A run's checkpoints and spooled records: removed once it is published, or once it is given up."""
    for path in store.list(checkpoint_prefix(tenant_id, run_id)):
        store.discard(path)


def sweep_checkpoints(store: Store, tenant_id: str, current: str | None, dead: Iterable[str]) -> None:
    """Checkpoints nobody will resume: of runs swept as dead, of runs already published, and older than
    RESUMABLE_FOR (a run re-queued that long ago was given up)."""
    dead = set(dead)
    oldest = f"{datetime.now(UTC) - RESUMABLE_FOR:%Y%m%dT%H%M%S}"
    prefix = f"tenants/{tenant_id}/checkpoints/"
    runs = {p[len(prefix):].split("/", 1)[0] for p in store.list(prefix)}
    for run_id in sorted(runs - {current}):
        if (not valid_run_id(run_id) or run_id in dead or run_id[:15] < oldest
                or store.read_bytes(f"{run_prefix(tenant_id, run_id)}/{MANIFEST}") is not None):
            remove_checkpoints(store, tenant_id, run_id)


def sweep(store: Store, tenant_id: str, *, current: str | None = None) -> list[str]:
    """Remove what runs that died left behind: their data files (committed or not) when they published no
    manifest, and their markers. A run whose lock is still held by its worker is left alone; so is the
    current run's marker (its own earlier attempt's files are removed, they are written again)."""
    swept: list[str] = []
    for path in store.list(f"tenants/{tenant_id}/in-progress/"):
        try:
            marker = read_json(store, path) or {}
        except ValueError:
            marker = {}
        run_id = marker.get("runId") if isinstance(marker, dict) else None
        if not valid_run_id(run_id):
            store.delete(path)
            continue
        if run_id != current and marker.get("lock"):
            holder = store.lease_holder(marker["lock"])
            if holder is not None and holder.get("runid") == run_id:
                continue  # alive: another worker is writing it
        elif run_id != current:  # a run without a lock (library use): only its age tells it is gone
            started = parse_iso(marker.get("startedAt"))
            if started is None or datetime.now(UTC) - started < UNLOCKED_STALE:
                continue
        prefix = run_prefix(tenant_id, run_id)
        if store.read_bytes(f"{prefix}/{MANIFEST}") is None:
            for name in marker.get("files") or []:
                if isinstance(name, str) and "/" not in name and name not in ("status.json", MANIFEST):
                    store.discard(f"{prefix}/{name}")
            swept.append(run_id)
            if run_id != current:
                log.warning("removed the unpublished files of run %s (its worker stopped before publishing)",
                            run_id)
        if run_id != current:
            store.delete(path)
    sweep_checkpoints(store, tenant_id, current, (r for r in swept if r != current))
    return swept


class Publication:
    """One run's files, held back until the run is complete and then published in order."""

    def __init__(self, store: Store, tenant_id: str, run_id: str, lock: str | None = None):
        self.store = store
        self.tenant_id = tenant_id
        self.run_id = run_id
        self.lock = lock
        self.prefix = run_prefix(tenant_id, run_id)
        self.marker = marker_path(tenant_id, run_id)
        self._writers: dict[str, JsonlGzWriter] = {}
        self.files: list[dict[str, Any]] = []  # committed files: {path, bytes, sha256, records?, dataset?}
        self.latest_moved = False

    # -- 1 and 2: before and while writing --------------------------------------------------------------
    def begin(self, names: Iterable[str]) -> None:
        sweep(self.store, self.tenant_id, current=self.run_id)
        write_json(self.store, self.marker, {"runId": self.run_id, "files": sorted(set(names)), "lock": self.lock,
                                             "startedAt": now_iso()})

    def writer(self, name: str, normalise: Callable[[list[dict[str, Any]]], int] | None = None) -> JsonlGzWriter:
        """A data file of the run, invisible until commit(); a new writer for the same name replaces one that
        was aborted (a strategy starting over)."""
        relpath = f"{self.prefix}/{name}"
        writer = JsonlGzWriter(self.store.sink(relpath), relpath, normalise)
        self._writers[name] = writer
        return writer

    # -- 3: commit -------------------------------------------------------------------------------------
    async def commit(self, names: Iterable[str], datasets: dict[str, str] | None = None) -> None:
        """Commit the finished files of `names` (each dataset that succeeded), all at once."""
        datasets = datasets or {}
        for name in names:
            writer = self._writers.get(name)
            if writer is None or writer.info is None:
                raise RuntimeError(f"{name} was not finished before commit")
            await asyncio.to_thread(writer.commit)
            info = writer.info
            entry: dict[str, Any] = {"path": name, "bytes": info.bytes, "sha256": info.sha256,
                                     "records": info.records}
            if name in datasets:
                entry["dataset"] = datasets[name]
            self.files.append(entry)

    async def rollback(self) -> None:
        """The run will not be published (cancelled, storage failed, disk full): remove every file it wrote,
        committed or not, then its marker. It runs to the end in a thread even if the run is cancelled again
        meanwhile; what cannot be removed now is left to a later run's sweep."""
        await asyncio.shield(asyncio.to_thread(self._rollback))

    def _rollback(self) -> None:
        if self.store.read_bytes(f"{self.prefix}/{MANIFEST}") is not None:
            return  # published after all: nothing to take back
        failed = False
        committed = {f["path"] for f in self.files}
        for name, writer in list(self._writers.items()):
            try:
                if name in committed:
                    self.store.discard(f"{self.prefix}/{name}")
                else:
                    writer.abort_now()
            except Exception:
                failed = True
        for name in committed - set(self._writers):
            try:
                self.store.discard(f"{self.prefix}/{name}")
            except Exception:
                failed = True
        self._writers.clear()
        self.files.clear()
        if not failed:
            try:
                self.store.delete(self.marker)
            except Exception:
                pass

    # -- 4: derived files ------------------------------------------------------------------------------
    def add_file(self, name: str, data: bytes, content_type: str = "application/json",
                 records: int | None = None) -> FileInfo:
        """A derived file, written after the data files are committed and listed in the manifest."""
        if "/" in name or name in (MANIFEST, "status.json"):
            raise ValueError(f"{name!r} cannot be a derived file name")
        self.store.write_bytes(f"{self.prefix}/{name}", data, content_type)
        info = FileInfo(f"{self.prefix}/{name}", records or 0, len(data), hashlib.sha256(data).hexdigest())
        entry: dict[str, Any] = {"path": name, "bytes": info.bytes, "sha256": info.sha256, "derived": True}
        if records is not None:
            entry["records"] = records
        self.files.append(entry)
        return info

    def adopt(self, name: str, info: dict[str, Any]) -> None:
        """A derived file its producer wrote to the run's folder itself (streamed): list it like add_file does."""
        entry: dict[str, Any] = {"path": name, "bytes": info["bytes"], "sha256": info["sha256"], "derived": True}
        if info.get("records") is not None:
            entry["records"] = info["records"]
        self.files.append(entry)

    def read_committed(self, name: str) -> bytes | None:
        """A committed file of this run, read back from the store (for derived files)."""
        return self.store.read_bytes(f"{self.prefix}/{name}")

    # -- 5 to 8 ----------------------------------------------------------------------------------------
    def newer_published(self) -> str | None:
        """The run latest.json points at, when it is newer than this one (it must not move back)."""
        current = read_json(self.store, f"tenants/{self.tenant_id}/latest.json")
        run_id = current.get("runId") if isinstance(current, dict) else None
        return run_id if valid_run_id(run_id) and _started(run_id) > _started(self.run_id) else None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.store, f"{self.prefix}/{MANIFEST}", manifest)

    def point_latest(self, manifest: dict[str, Any]) -> bool:
        """Move latest.json to this run unless it already names a newer one (compare-and-swap)."""
        path = f"tenants/{self.tenant_id}/latest.json"
        body = orjson.dumps({"runId": self.run_id, "manifest": f"{self.prefix}/{MANIFEST}",
                             "status": manifest["status"], "finishedAt": manifest["finishedAt"],
                             "latest": f"tenants/{self.tenant_id}/latest/"}, option=orjson.OPT_INDENT_2) + b"\n"
        for _ in range(10):
            current = self.store.read_tagged(path)
            if current is not None:
                try:
                    current_id = orjson.loads(current[0]).get("runId")
                except (ValueError, AttributeError):
                    current_id = None
                if valid_run_id(current_id) and _started(current_id) > _started(self.run_id):
                    log.warning("latest.json stays at run %s, which is newer than run %s", current_id, self.run_id)
                    return False
            if self.store.replace_if_unchanged(path, body, current[1] if current else None):
                self.latest_moved = True
                return True
        log.warning("latest.json kept changing while run %s tried to move it; left as it is", self.run_id)
        return False

    def copy_latest(self) -> None:
        """`latest/`: the run's files under fixed names, its manifest last (and removed first, so the folder never
        has a manifest that does not describe it); files the run does not have are removed."""
        base = f"tenants/{self.tenant_id}/latest"
        self.store.delete(f"{base}/{MANIFEST}")
        keep = {f"{base}/{MANIFEST}"}
        for entry in self.files:
            self.store.copy(f"{self.prefix}/{entry['path']}", f"{base}/{entry['path']}")
            keep.add(f"{base}/{entry['path']}")
        self.store.copy(f"{self.prefix}/{MANIFEST}", f"{base}/{MANIFEST}")
        for path in self.store.list(f"{base}/"):
            if path not in keep:
                self.store.discard(path)

    def end(self) -> None:
        remove_checkpoints(self.store, self.tenant_id, self.run_id)
        self.store.delete(self.marker)
