"""Checkpoints: a listing that outlasts its invocation resumes where it stood instead of starting over.

Every dataset the engine writes spools its JSON Lines (exactly the bytes its data file gets) to
`tenants/<tenantId>/checkpoints/<runId>/<dataset>.NNNNNN.spool.gz` chunks (gzip), and
`tenants/<tenantId>/checkpoints/<runId>/<dataset>.json` says how far it got: the chunks (bytes,
sha256), records written, the plan, warnings and, for a listing paged as one @odata.nextLink chain,
the next link. A chain saves after every page when its declaration is quota-paced (`paced`: pages come
at most 10 a minute) and at least every CHECKPOINT_SECONDS otherwise; any other dataset saves once,
when it is complete. A run collected again under the same run id replays the spool into a fresh
writer (the writer compresses fixed-size pieces, so the file and its sha256 equal an uninterrupted
run's), then a complete dataset is done without a Graph request and a chain continues from its next
link. Checkpoints are not data: never in a run folder nor a manifest, removed when the run publishes.

A checkpoint that cannot be trusted (not JSON, another tenant's or run's, an older format, a chunk
whose hash differs) is set aside under `tenants/<tenantId>/checkpoints-set-aside/` with a warning
naming it and the fix, and that dataset starts again from the beginning: it never fails the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

import orjson

from connector.store.contract import Store, gzip_compressor, gzip_inflater, write_json
from connector.store.publish import checkpoint_prefix
from connector.store.status import now_iso, valid_run_id

log = logging.getLogger("m365_connector")

FORMAT = 1  # raised whenever the checkpoint's meaning changes; older ones are set aside, not misread
CHECKPOINT_SECONDS = 30.0  # a chain that is not quota-paced saves at least this often
CHUNK_BYTES = 4 * 1024 * 1024  # a spool chunk is written once its compressed bytes reach this


class Refused(Exception):
    """A checkpoint that must not be used; the message says why (never its content)."""


def checkpoint_path(tenant_id: str, run_id: str, dataset: str) -> str:
    return f"{checkpoint_prefix(tenant_id, run_id)}{dataset}.json"


def set_aside_path(tenant_id: str, run_id: str, dataset: str) -> str:
    stamp = now_iso().replace(":", "").replace("-", "").replace(".", "")
    return f"tenants/{tenant_id}/checkpoints-set-aside/{run_id}/{dataset}.{stamp}.json"


def latest_resumable(store: Store, tenant_id: str) -> str | None:
    """The newest run of the tenant that left checkpoints (unfinished: publishing removes them)."""
    prefix = f"tenants/{tenant_id}/checkpoints/"
    runs = {p[len(prefix):].split("/", 1)[0] for p in store.list(prefix)}
    return max((r for r in runs if valid_run_id(r)), default=None)


def settings_fingerprint(settings: Any, query: str) -> str:
    """What a dataset's records depend on besides the tenant: the domain filter, the report period and the
    request; a checkpoint made under others is not resumed."""
    domains = sorted(settings.domains) if settings.domains is not None else "*"
    key = orjson.dumps([domains, settings.report_period, query])
    return hashlib.sha256(key).hexdigest()[:16]


class Spool:
    """One dataset's checkpoint and its spooled JSON Lines."""

    def __init__(self, store: Store, tenant_id: str, run_id: str, dataset: str, paced: bool = False,
                 inputs: str = ""):
        self.store, self.tenant_id, self.run_id, self.dataset, self.paced = store, tenant_id, run_id, dataset, paced
        self.inputs = inputs  # what the records depend on besides Graph (settings_fingerprint)
        self.path = checkpoint_path(tenant_id, run_id, dataset)
        self.state = self._fresh()
        self._zip: Any = None
        self._out: list[bytes] = []
        self._out_len = 0
        self._saved_at = time.monotonic()
        self._busy = False  # a chunk or the checkpoint is being written: the state is not a saved point
        self.refused: dict[str, str] | None = None  # the warning when a checkpoint was set aside

    def _fresh(self) -> dict[str, Any]:
        return {"format": FORMAT, "tenantId": self.tenant_id, "runId": self.run_id, "dataset": self.dataset,
                "inputs": self.inputs,
                "complete": False, "nextLink": None, "records": 0, "excludedByDomainFilter": 0,
                "domainFilter": None, "plan": {}, "extra": {}, "warnings": [], "chunks": [], "savedAt": None}

    # -- reading ----------------------------------------------------------------------------------
    def load(self) -> dict[str, Any] | None:
        """The saved checkpoint if there is one to trust; a bad one is set aside (None)."""
        try:
            data = self.store.read_bytes(self.path)
        except Exception as exc:
            log.warning("checkpoint %s could not be read (%s); %s is collected from the start", self.path,
                        type(exc).__name__, self.dataset)
            return None
        if data is None:
            return None
        try:
            state = self._validate(data)
        except Refused as why:
            self.set_aside(str(why))
            return None
        self.state = state
        return state

    def _validate(self, data: bytes) -> dict[str, Any]:
        try:
            state = orjson.loads(data)
        except ValueError:
            state = None  # cut short or overwritten: said as one reason below
        if not isinstance(state, dict):
            raise Refused("not a JSON object (corrupt)")
        fmt = state.get("format")
        if fmt != FORMAT:
            raise Refused(f"of checkpoint format {fmt!r}, from another version of the connector; this version "
                          f"reads format {FORMAT}")
        for key, mine in (("tenantId", self.tenant_id), ("runId", self.run_id), ("dataset", self.dataset)):
            if state.get(key) != mine:
                raise Refused(f"foreign: its {key} is not this run's ({mine})")
        if state.get("inputs") != self.inputs:
            raise Refused("made with other settings (M365_DOMAINS, M365_REPORT_PERIOD or the dataset's request "
                          "differ), so its records would not match this collection's")
        chunks = state.get("chunks")
        if (not isinstance(chunks, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str)
                                                    and isinstance(c.get("sha256"), str) for c in chunks)
                or not isinstance(state.get("records"), int) or not isinstance(state.get("plan"), dict)
                or not isinstance(state.get("complete"), bool)
                or not isinstance(state.get("nextLink"), str | None)):
            raise Refused("missing or mistyped fields (corrupt)")
        return state

    def set_aside(self, why: str) -> None:
        """Move a checkpoint that must not be used out of the way (kept for inspection), and say so."""
        aside = set_aside_path(self.tenant_id, self.run_id, self.dataset)
        try:
            self.store.stage_copy(self.path, aside).commit()
            self.store.delete(self.path)
        except Exception as exc:  # cannot move it: delete it rather than trust it next time
            log.warning("checkpoint %s could not be moved aside (%s); deleted", self.path, type(exc).__name__)
            aside = "(deleted)"
            self.store.delete(self.path)
        message = (f"checkpoint {self.path} was refused: {why}. It was set aside as {aside} and {self.dataset} is "
                   "collected again from the start, so nothing is lost. Nothing to fix for this run; if it "
                   "happens again, make sure no other deployment or process writes snapshots of this tenant to "
                   "the same destination (SNAPSHOT_DIR or SNAPSHOT_CONTAINER), and delete the set-aside file "
                   "once read.")
        log.warning(message, extra={"event": "checkpoint_refused"})
        self.refused = {"code": "checkpoint_refused", "dataset": self.dataset, "message": message}
        self.state = self._fresh()

    async def replay(self, writer: Any) -> None:
        """Feed the spooled JSON Lines to a fresh writer; Refused if a chunk is missing or altered."""
        for chunk in self.state["chunks"]:
            data = await asyncio.to_thread(self.store.read_bytes, f"{checkpoint_prefix(self.tenant_id, self.run_id)}"
                                                                  f"{chunk['name']}")
            if data is None or hashlib.sha256(data).hexdigest() != chunk["sha256"]:
                raise Refused(f"its spool chunk {chunk['name']} is missing or altered")
            inflate = gzip_inflater()
            try:
                lines = inflate.decompress(data) + inflate.flush()
            except Exception:
                raise Refused(f"its spool chunk {chunk['name']} is not gzip") from None
            await writer.write_lines(lines, 0)
        writer.records = self.state["records"]

    # -- writing ----------------------------------------------------------------------------------
    def restart(self) -> None:
        """The dataset starts over (a strategy's RESTART): the spool does too (old chunks are overwritten or
        removed with the run's checkpoints)."""
        self._zip, self._out, self._out_len = None, [], 0
        self.state = self._fresh()

    async def add(self, data: bytes) -> None:
        """Spool what the data file got."""
        if not data:
            return
        if self._zip is None:
            self._zip = gzip_compressor()
        self._out.append(self._zip.compress(data))
        self._out_len += len(self._out[-1])
        if self._out_len >= CHUNK_BYTES:
            await self._roll()

    async def _roll(self) -> None:
        if self._zip is None:
            return
        self._out.append(self._zip.flush())
        data = b"".join(self._out)
        self._zip, self._out, self._out_len = None, [], 0
        name = f"{self.dataset}.{len(self.state['chunks']) + 1:06d}.spool.gz"  # not a data file: no .jsonl.gz
        self._busy = True
        await asyncio.to_thread(self.store.write_bytes, f"{checkpoint_prefix(self.tenant_id, self.run_id)}{name}",
                                data, "application/gzip")
        self.state["chunks"].append({"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        self._busy = False

    def due(self, next_link: str | None) -> bool:
        """After a page of a chain: save now? Every page when paced, else every CHECKPOINT_SECONDS."""
        return next_link is not None and (self.paced or time.monotonic() - self._saved_at >= CHECKPOINT_SECONDS)

    async def save(self, res: Any, ctx: Any, next_link: str | None, complete: bool = False) -> None:
        """Write the spool's open chunk, then the checkpoint naming it (a crash in between loses nothing
        the checkpoint claims): where the listing stands and what its manifest entry says so far."""
        await self._roll()
        self.state.update(nextLink=next_link, records=res.records, excludedByDomainFilter=res.excludedByDomainFilter,
                          domainFilter=res.domainFilter, plan=dict(ctx.plan), extra=dict(ctx.extra),
                          warnings=list(ctx.warnings), complete=complete, savedAt=now_iso())
        self._busy = True
        await asyncio.to_thread(write_json, self.store, self.path, self.state)
        self._busy = False
        self._saved_at = time.monotonic()

    def restore(self, res: Any, ctx: Any) -> None:
        """After replay: the manifest entry's facts as they were saved, and where the chain continues."""
        state = self.state
        res.records, res.excludedByDomainFilter = state["records"], int(state.get("excludedByDomainFilter") or 0)
        if isinstance(state.get("domainFilter"), str):
            res.domainFilter = state["domainFilter"]
        ctx.plan.update(state["plan"])
        ctx.extra.update(state.get("extra") or {})
        ctx.warnings.extend(w for w in state.get("warnings") or () if w not in ctx.warnings)
        ctx.resume_link = None if state["complete"] else state["nextLink"]
        ctx.extra["resumed"] = {"checkpointSavedAt": state.get("savedAt"), "recordsReplayed": state["records"],
                                "complete": state["complete"], "continuedFromNextLink": ctx.resume_link is not None}

    @property
    def clean(self) -> bool:
        """True when the state is a point that can be saved (nothing half-written)."""
        return not self._busy
