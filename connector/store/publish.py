"""Publishing a run: nothing a reader can mistake for a snapshot until the whole run is there.

Order (a public contract, docs/snapshot-format.md):

1. `tenants/<id>/in-progress/<runId>.json` names the run's files and its lock before a byte is written;
   leftovers of runs that died are swept first (never those of a run whose lock is alive).
2. Data files are written invisibly (Blob: staged blocks; folder: `.partial`) while datasets run.
3. When every dataset has finished, they are committed together.
4. Derived files (computed from the committed files) are written: Run.derive() is the one hook.
5. `manifest.json` lists every file with bytes and sha256.
6. `latest.json` moves to the run, only if succeeded or partial and only forward (never to an older run).
7. `latest/` gets the run's files, per dataset: every copy is staged (invisible) first, and only when all are
   staged is `latest/manifest.json` removed, the copies committed and a new `latest/manifest.json` written,
   naming for each file the run it comes from. A dataset the run did not collect keeps its earlier copy; a copy
   that cannot be staged (disk full) leaves `latest/` as it was.
8. The in-progress marker is removed (kept when 6 or 7 failed, so a later run's sweep finishes them).

A run folder without a manifest is never published; the sweep of a later run removes its files. A run folder
with a manifest is never written again: recovering such a run (a worker killed after its manifest, a queue
message delivered again) only finishes steps 6 to 8 (Publication.published(...).finish()).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
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

PUBLISHED = ("succeeded", "partial")  # the statuses latest.json and latest/ may name
LATEST_NOT_UPDATED = "latest_not_updated"  # the warning of a published run whose latest.json or latest/ lags
LATEST_KIND = "latest"  # latest/manifest.json: which run each file of latest/ comes from


class AlreadyPublished(RuntimeError):
    """The run's folder has a manifest: it is published, and nothing may be written into it again."""

    def __init__(self, tenant_id: str, run_id: str):
        super().__init__(f"run {run_id} is already published ({run_prefix(tenant_id, run_id)}/{MANIFEST} exists); "
                         "its folder is never written again")
        self.tenant_id, self.run_id = tenant_id, run_id


def run_prefix(tenant_id: str, run_id: str) -> str:
    return f"tenants/{tenant_id}/runs/{run_id}"


def _started(run_id: str) -> str:
    """The start second of a run id (ids of one second are not ordered by their random part)."""
    return run_id[:16]


def file_name(name: Any) -> bool:
    """A name a run's file may have: a plain name, or one in `changes/` (the changes files)."""
    if not isinstance(name, str) or not name or name.startswith("."):
        return False
    folder, _, rest = name.rpartition("/")
    return folder in ("", "changes") and bool(rest) and not rest.startswith(".")


def marker_path(tenant_id: str, run_id: str) -> str:
    return f"tenants/{tenant_id}/in-progress/{run_id}.json"


def checkpoint_prefix(tenant_id: str, run_id: str) -> str:
    """Where a run's checkpoints live (connector/collect/checkpoint.py): beside its run folder, never in it."""
    return f"tenants/{tenant_id}/checkpoints/{run_id}/"


def remove_checkpoints(store: Store, tenant_id: str, run_id: str) -> None:
    """A run's checkpoints and spooled records: removed once it is published, or once it is given up."""
    store.discard_folder(checkpoint_prefix(tenant_id, run_id))


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


def latest_folder(tenant_id: str) -> str:
    return f"tenants/{tenant_id}/latest"


def read_manifest(store: Store, tenant_id: str, run_id: str) -> dict[str, Any] | None:
    """The run's manifest when it is published (written whole and naming this run), else None."""
    try:
        manifest = read_json(store, f"{run_prefix(tenant_id, run_id)}/{MANIFEST}")
    except ValueError:
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("runId") == run_id else None


def sweep(store: Store, tenant_id: str, *, current: str | None = None) -> list[str]:
    """Clear up after runs that died: a run that wrote no manifest loses its data files (committed or not) and its
    marker; a run that wrote its manifest is published, so its publication is finished instead (latest.json,
    latest/, then its marker) and nothing in its folder is touched. A run whose lock is still held by its worker
    is left alone; so is the current run's marker (its own earlier attempt's files are removed, they are written
    again)."""
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
        manifest = read_manifest(store, tenant_id, run_id) if run_id != current else None
        if manifest is not None:  # published, but its worker stopped before the end: finish it, write nothing else
            problems = Publication.published(store, manifest).finish(manifest)
            log.warning("run %s: its worker stopped after writing its manifest; its publication (latest.json, "
                        "latest/) was finished now%s", run_id,
                        "" if not problems else " in part: " + "; ".join(w["message"] for w in problems))
            continue
        if store.read_bytes(f"{prefix}/{MANIFEST}") is None:
            for name in marker.get("files") or []:
                if file_name(name) and name not in ("status.json", MANIFEST):
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
        # publish() and rollback run in threads; the guard orders them, so a rollback never removes the files of
        # a run whose manifest is being written, and a manifest is never written after a rollback.
        self._guard = threading.Lock()
        self._state = "open"  # open, then published or rolled back

    @classmethod
    def published(cls, store: Store, manifest: dict[str, Any], lock: str | None = None) -> Publication:
        """The publication of a run whose manifest is written (recovery): only finish() is left to do."""
        pub = cls(store, manifest["tenantId"], manifest["runId"], lock)
        pub.files = [dict(e) for e in manifest.get("files") or [] if isinstance(e, dict)]
        pub._state = "published"
        return pub

    # -- 1 and 2: before and while writing --------------------------------------------------------------
    def begin(self, names: Iterable[str]) -> None:
        if self.store.read_bytes(f"{self.prefix}/{MANIFEST}") is not None:
            raise AlreadyPublished(self.tenant_id, self.run_id)
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
        with self._guard:  # waits for a publish() under way: its manifest decides
            if self._state == "published" or self.store.read_bytes(f"{self.prefix}/{MANIFEST}") is not None:
                return  # published after all: nothing to take back
            self._state = "rolled back"
            self._remove_files()

    def _remove_files(self) -> None:
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

    def publish(self, manifest: dict[str, Any]) -> list[dict[str, str]]:
        """Steps 5 to 8, in one call (a thread that runs to its end even if the run is cancelled meanwhile):
        the manifest, then finish(). Returns the warnings of what could not be done after the manifest."""
        with self._guard:
            if self._state != "open":
                raise RuntimeError(f"run {self.run_id} was rolled back; it cannot be published")
            write_json(self.store, f"{self.prefix}/{MANIFEST}", manifest)
            self._state = "published"
            return self.finish(manifest)

    def finish(self, manifest: dict[str, Any]) -> list[dict[str, str]]:
        """Steps 6 to 8 for a run whose manifest is written; safe to repeat (recovery runs it again). Failures are
        returned as `latest_not_updated` warnings, never raised: the run is published whatever happens here. The
        in-progress marker stays when a step failed, so the sweep of a later run finishes them."""
        problems: list[dict[str, str]] = []
        if manifest.get("status") in PUBLISHED:
            try:
                names_this_run = self.point_latest(manifest)
            except Exception as exc:
                log.error("moving latest.json to run %s failed (%s)", self.run_id, type(exc).__name__)
                problems.append(_latest_warning(
                    f"latest.json could not be moved to this run ({_why(exc)}); it still names the earlier run. The "
                    f"run is complete under {self.prefix}/; the next run of the tenant moves latest.json."))
                names_this_run = False
            if names_this_run:
                try:
                    self.update_latest_folder(manifest)
                except Exception as exc:
                    log.error("updating latest/ with run %s failed (%s)", self.run_id, type(exc).__name__)
                    problems.append(_latest_warning(
                        f"latest/ could not be updated with this run's files ({_why(exc)}): it still holds the "
                        "earlier copies, as latest/manifest.json says. latest.json names this run, which is complete "
                        f"under {self.prefix}/; the next run of the tenant updates latest/."))
        if not problems:
            try:
                self.end()
            except Exception as exc:  # harmless: the next run's sweep removes it
                log.warning("run %s: its in-progress marker could not be removed (%s)", self.run_id,
                            type(exc).__name__)
        return problems

    def point_latest(self, manifest: dict[str, Any]) -> bool:
        """Move latest.json to this run unless it already names a newer one (compare-and-swap); True when it
        names this run afterwards."""
        path = f"tenants/{self.tenant_id}/latest.json"
        body = orjson.dumps({"runId": self.run_id, "manifest": f"{self.prefix}/{MANIFEST}",
                             "status": manifest["status"], "finishedAt": manifest["finishedAt"],
                             "latest": f"{latest_folder(self.tenant_id)}/"}, option=orjson.OPT_INDENT_2) + b"\n"
        for _ in range(10):
            current = self.store.read_tagged(path)
            if current is not None:
                if current[0] == body:
                    return True  # moved already (an earlier attempt of this run)
                try:
                    current_id = orjson.loads(current[0]).get("runId")
                except (ValueError, AttributeError):
                    current_id = None
                if valid_run_id(current_id) and _started(current_id) > _started(self.run_id):
                    log.warning("latest.json stays at run %s, which is newer than run %s", current_id, self.run_id)
                    return False
            if self.store.replace_if_unchanged(path, body, current[1] if current else None):
                return True
        log.warning("latest.json kept changing while run %s tried to move it; left as it is", self.run_id)
        return False

    def update_latest_folder(self, manifest: dict[str, Any]) -> None:
        """`latest/`, per dataset: this run's files replace their earlier copies, and every other file stays with
        the run it came from (a run of some datasets does not empty latest/ of the others). All copies are staged
        before anything a reader sees changes: if one cannot be staged (a full disk), latest/ stays as it was.
        Then latest/manifest.json goes, the copies are committed, and the new latest/manifest.json names every
        file with its bytes, sha256 and the run it comes from."""
        base = latest_folder(self.tenant_id)
        self.store.clear_temporaries(f"{base}/")  # copies a killed process had staged
        present = set(self.store.list(f"{base}/"))
        earlier = {e["path"]: e for e in _latest_entries(self.store, self.tenant_id)
                   if f"{base}/{e['path']}" in present}
        origin = {"runId": self.run_id, "manifest": f"{self.prefix}/{MANIFEST}", "finishedAt": manifest["finishedAt"]}
        staged: list[tuple[dict[str, Any], Any]] = []
        try:
            for entry in self.files:
                staged.append(({**entry, **origin}, self.store.stage_copy(f"{self.prefix}/{entry['path']}",
                                                                          f"{base}/{entry['path']}")))
        except BaseException:
            for _entry, copy in staged:
                _quietly(copy.abort)
            raise
        try:
            self.store.delete(f"{base}/{MANIFEST}")  # from here until the new one, readers know latest/ is changing
        except BaseException:
            for _entry, copy in staged:
                _quietly(copy.abort)
            raise
        entries, failure = dict(earlier), None
        for entry, copy in staged:
            try:
                copy.commit()
            except Exception as exc:  # that file keeps its earlier copy, and the manifest says so
                failure = failure or exc
                _quietly(copy.abort)
            else:
                entries[entry["path"]] = entry
        write_json(self.store, f"{base}/{MANIFEST}", {
            "schemaVersion": 1, "kind": LATEST_KIND, "tenantId": self.tenant_id, "runId": self.run_id,
            "updatedAt": now_iso(), "files": [entries[p] for p in sorted(entries)]})
        for path in present - {f"{base}/{p}" for p in entries} - {f"{base}/{MANIFEST}"}:
            self.store.discard(path)  # a file no manifest of latest/ lists (left by a failed copy)
        if failure is not None:
            raise failure

    def end(self) -> None:
        remove_checkpoints(self.store, self.tenant_id, self.run_id)
        self.store.delete(self.marker)


def _latest_entries(store: Store, tenant_id: str) -> list[dict[str, Any]]:
    """The files latest/manifest.json lists, each with the run it comes from. A latest/manifest.json written
    before latest/ was kept per dataset is a copy of one run's manifest: all its files come from that run."""
    try:
        current = read_json(store, f"{latest_folder(tenant_id)}/{MANIFEST}")
    except ValueError:
        return []
    if not isinstance(current, dict) or not isinstance(current.get("files"), list):
        return []
    run_id = current.get("runId")
    entries = []
    for entry in current["files"]:
        if not isinstance(entry, dict) or not file_name(entry.get("path")):
            continue
        if current.get("kind") != LATEST_KIND and valid_run_id(run_id):
            entry = {**entry, "runId": run_id, "manifest": f"{run_prefix(tenant_id, run_id)}/{MANIFEST}",
                     "finishedAt": current.get("finishedAt")}
        if valid_run_id(entry.get("runId")):
            entries.append(entry)
    return entries


def _latest_warning(message: str) -> dict[str, str]:
    return {"code": LATEST_NOT_UPDATED, "message": message}


def _why(exc: BaseException) -> str:
    """The failure in a few words (no path, no URL): the OS's reason, or the exception's kind."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return type(exc).__name__


def _quietly(step: Callable[[], Any]) -> None:
    try:
        step()
    except Exception:
        pass
