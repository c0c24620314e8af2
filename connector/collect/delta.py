"""Change feeds: a dataset Graph tracks with a delta query (Dataset.delta) reads only what changed since the
run whose snapshot it continues, applies it to that snapshot's records and publishes a complete file in the
same format; every keyed dataset (Dataset.key) says what changed in `changes/<dataset>.jsonl.gz`
(connector/collect/changes.py).

A dataset's mode, said in its manifest entry (`delta`):
- `full`: read in full. Its delta link for the next run is asked for before the listing starts
  (`$deltatoken=latest`, "sync from now": concepts/delta-query-overview.md), so whatever changes while the
  listing pages comes again in the next round; applying an object's current state twice changes nothing.
- `delta`: the stored link is followed (a round of pages ending in `@odata.deltaLink`) and the changes applied
  to the previous records, streamed: only the changes are held in memory. A dataset with Dataset.delta_merge
  follows more than one round (the others' links are kept in the same state) and makes its records its own way:
  group memberships from `members@delta` (connector/collect/memberships.py; its changes file comes from
  comparing, as a full read's), users with those whose untracked licence properties may have changed read again
  by id (connector/collect/licences.py).
- `reconcile`: every M365_RECONCILE_DAYS a delta dataset is read in full as well; the delta round is applied
  all the same (not published), and the two are compared by key and record hash: any difference is `drift`.
The stored link (connector/store/deltalinks.py) is used only when it is this tenant's and this dataset's, on
the configured Graph host, younger than Graph's 7 days (delta-query-overview.md, "Token duration": directory
objects), made for the same query and settings, and its base run is published with the dataset; otherwise the
dataset is read in full and the manifest says why. A link Graph refuses (410 Gone, `syncStateNotFound`,
`resyncRequired`, or any other 400) starts a full read as well. Links are stored only after the run is
published (Run._finish), so a run that fails keeps the previous link and base.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson

from connector.catalog.datasets import Dataset
from connector.catalog.schema import normaliser_for
from connector.collect.changes import (
    Baseline,
    BaselineCorrupt,
    ChangeLines,
    Differ,
    changes_file,
    hashed,
    key_decoder,
    key_of,
    record_hash,
)
from connector.collect.checkpoint import settings_fingerprint
from connector.collect.licences import GROUP_ROUND, Licences
from connector.collect.memberships import ROUNDS as MEMBERSHIP_ROUNDS
from connector.collect.memberships import Memberships
from connector.collect.strategy import RESTART, Context, Records
from connector.graph.client import GraphError
from connector.rawjson import RawRecord, full
from connector.spool import KeyValueSpool
from connector.store import deltalinks
from connector.store.status import now_iso, parse_iso

LIFETIME = timedelta(days=7)  # concepts/delta-query-overview.md, "Token duration": directory objects
RESYNC_CODES = frozenset({"syncStateNotFound", "resyncRequired"})  # errors.md; delta-query-overview.md
BATCH = 999


class Resync(Exception):
    """Graph refused the stored delta link: the dataset is read in full."""


def delta_path(path: str, declared: str) -> bool:
    """A link's path is the declared delta function's: `/groups/delta`, or as the SDKs spell it,
    `/groups/microsoft.graph.delta()` (delta-query-overview.md)."""
    collection = declared.rsplit("/", 1)[0].lower()
    head, _, function = path.lower().rpartition("/")
    return head.endswith(collection) and function in ("delta", "microsoft.graph.delta", "microsoft.graph.delta()")


def delta_query(ds: Dataset) -> str:
    """The first call of a round: the declaration's $select (delta takes neither $top nor $orderby)."""
    return "$select=" + ",".join(ds.select) if ds.select else ""


def rounds(ds: Dataset) -> tuple[tuple[str, str, str], ...]:
    """(delta path, request builder, first query) of each round the dataset follows; the first is Dataset.delta."""
    if ds.delta_merge == "memberships":
        return MEMBERSHIP_ROUNDS
    if ds.delta_merge == "licences":
        return (ds.delta, ds.builder, delta_query(ds)), GROUP_ROUND
    return ((ds.delta, ds.builder, delta_query(ds)),)


def readable(ds: Dataset) -> bool:
    """Delta can give the dataset's records: every selected property tracked, or the others read another way."""
    return bool(ds.delta) and (not ds.untracked or bool(ds.delta_merge))


class Feed:
    """One keyed dataset in one run: its mode, the records it is written from, its changes file, its next link."""

    def __init__(self, run: Any, ds: Dataset, ctx: Context):
        self.run, self.ds, self.ctx = run, ds, ctx
        self.mode, self.reason = "full", ""
        self.baseline: Baseline | None = None
        self.stored: dict[str, Any] | None = None
        self.merge = Memberships(ds) if ds.delta_merge == "memberships" else None
        self.licences = Licences(ds) if ds.delta_merge == "licences" else None
        query = Memberships.query(ctx.granted, ds) if self.merge is not None else \
            "|".join(q for _p, _b, q in rounds(ds)) if self.licences is not None else delta_query(ds)
        self.fingerprint = settings_fingerprint(run.settings, query)
        self.new_links: dict[str, str] = {}  # delta path -> the link for the next run
        self.obtained_at = now_iso()
        self.full_at: str | None = None  # when the dataset was last read in full (carried by delta runs)
        self.out: ChangeLines | None = None
        self.differ: Differ | None = None
        self.drift: Reconciler | None = None
        self.changes: dict[str, dict[str, Any] | None] = {}

    # -- choosing ----------------------------------------------------------------------------------------
    def choose(self) -> None:
        """Delta when the stored link and its base can be trusted; otherwise full, with the reason."""
        run, ds, settings = self.run, self.ds, self.run.settings
        if readable(ds) and settings.delta and not settings.full:
            state = deltalinks.read_link(run.store, run.tenant_id, ds.name)
            refusal = self._refusal(state)
            if refusal is None:
                assert isinstance(state, dict)
                self.baseline = Baseline.of_run(run.store, run.tenant_id, state["runId"], ds)
                if self.baseline is not None:
                    self._delta_or_reconcile(state)
                    return
                refusal = ("base_missing", f"the run its delta link continues ({state['runId']}) is not published "
                                           "with this dataset")
            self._full(*refusal)
        elif ds.delta:
            self._full(*("untracked_properties", f"delta does not track {', '.join(ds.untracked)}")
                       if not readable(ds)
                       else ("full_requested", "a full read was asked for") if settings.full
                       else ("delta_off", "M365_DELTA=off"))
        self.baseline = Baseline.latest(run.store, run.tenant_id, ds)

    def _delta_or_reconcile(self, state: dict[str, Any]) -> None:
        settings = self.run.settings
        self.stored, self.full_at = state, state.get("fullAt")
        due = parse_iso(self.full_at)
        if due is None or datetime.now(UTC) - due >= timedelta(days=settings.reconcile_days):
            self.mode, self.reason = "reconcile", f"last full read over {settings.reconcile_days} days ago"
        else:
            self.mode = "delta"

    def _refusal(self, state: dict[str, Any] | None | str) -> tuple[str, str] | None:
        run, ds = self.run, self.ds
        if state is None:
            return "no_delta_link", "no delta link is stored (the first run, or the last one failed)"
        if state == "corrupt":
            return self._refused("corrupt", "is not a delta link state this connector wrote")
        assert isinstance(state, dict)
        if state["tenantId"] != run.tenant_id or state["dataset"] != ds.name:
            return self._refused("foreign", f"belongs to {state['dataset']} of tenant {state['tenantId']}")
        ours = urlsplit(run.settings.graph_endpoint)
        links = self._links(state)
        for path, _builder, _query in rounds(ds):
            if not isinstance(links.get(path), str):
                return self._refused("corrupt", f"has no link for {path}")
            origin = urlsplit(links[path])
            if (origin.scheme, origin.netloc.lower()) != (ours.scheme, ours.netloc.lower()) \
                    or not delta_path(origin.path, path):
                return self._refused("foreign_host", f"points at {origin.scheme}://{origin.hostname}{origin.path}, "
                                                     f"not {path} on the configured Graph endpoint "
                                                     "(M365_GRAPH_ENDPOINT)")
        if state["query"] != self.fingerprint:
            return "query_changed", "the dataset's query or the domain filter changed since the link was made"
        obtained = parse_iso(state["obtainedAt"])
        if obtained is None or datetime.now(UTC) - obtained > LIFETIME:
            return "expired", f"the delta link was made at {state['obtainedAt']}, over Graph's 7 days ago"
        return None

    def _links(self, state: dict[str, Any]) -> dict[str, Any]:
        """The stored links by delta path: the first round's is `deltaLink`, others are in `links`."""
        others = state.get("links") if isinstance(state.get("links"), dict) else {}
        return {**others, self.ds.delta: state["deltaLink"]}

    def _refused(self, code: str, why: str) -> tuple[str, str]:
        where = deltalinks.link_path(self.run.tenant_id, self.ds.name)
        self.ctx.warn("delta_link_refused", self.ds.name,
                      f"{self.ds.name}: the stored delta link ({where}) {why}; it was not used, the dataset was read "
                      "in full and a new link is stored.")
        return f"link_{code}", why

    def _full(self, reason: str, why: str) -> None:
        self.mode, self.reason = "full", f"{reason}: {why}"

    # -- reading ------------------------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Before any record: the round of changes (delta, reconcile)."""
        if self.mode in ("delta", "reconcile"):
            assert self.stored is not None
            links = self._links(self.stored)
            try:
                self.obtained_at = now_iso()
                for path, builder, _query in rounds(self.ds):
                    await self._round(path, builder, links[path])
                if self.licences is not None:
                    await self._licences()
            except Resync as why:
                self.changes.clear()
                if self.merge is not None:
                    self.merge = Memberships(self.ds)
                if self.licences is not None:
                    self.licences = Licences(self.ds)
                self._full("resync", str(why))
                self.ctx.warn("delta_resync", self.ds.name, f"{self.ds.name}: {why}; read in full instead, and a new "
                                                            "delta link is stored.")
                self.baseline = Baseline.latest(self.run.store, self.run.tenant_id, self.ds)
        if self.mode in ("full", "reconcile"):
            self.full_at = now_iso()

    async def before_listing(self, resumed: bool) -> None:
        """A full read asks for its next link just before its listing starts. One resumed from a checkpoint
        started listing in an earlier attempt: a link made now would miss what changed since, so none is
        stored, and the next run continues from the link stored before (whose base run is still published)."""
        if resumed or self.mode != "full" or not readable(self.ds) or not self.run.settings.delta:
            return
        graph = self.ctx.graph
        self.obtained_at = now_iso()
        for path, builder, query in rounds(self.ds):
            url = f"{graph.base}{path}?" + "&".join(q for q in (query, "$deltatoken=latest") if q)
            try:
                page = await graph.first_page(builder, url, self.ds.name)
            except GraphError as exc:
                self.ctx.warn("delta_link_unavailable", self.ds.name,
                              f"{self.ds.name}: Graph gave no delta link for {path} ({exc.status} {exc.code}); the "
                              "next run reads it in full again.")
                self.new_links.clear()
                return
            if page.delta_link:
                self.new_links[path] = page.delta_link
        if self.licences is not None:
            await self.licences.list_groups(self.ctx)

    async def _round(self, path: str, builder: str, link: str) -> None:
        """Follow the stored link to the end of the round; the last state of each object wins (an object may come
        more than once), `@removed` (reason changed or deleted) means gone from the listing. A merged dataset
        takes the pages itself (connector/collect/memberships.py)."""
        graph, ds = self.ctx.graph, self.ds
        normalise = normaliser_for(ds)
        selected = [p for p in ds.select if p != "id"]
        try:
            async for page in graph.pages(builder, link, ds.name):
                objects = [o for o in page.records if isinstance(o, dict) and isinstance(o.get("id"), str)]
                if page.delta_link:
                    self.new_links[path] = page.delta_link
                if self.merge is not None:
                    self.merge.take(path, objects)
                    continue
                if self.licences is not None and path != ds.delta:
                    self.licences.take_groups(objects)
                    continue
                kept = []
                for obj in objects:
                    if "@removed" in obj:
                        self.changes[obj["id"]] = None
                        continue
                    # A property never set is left out of a delta object; the listing gives it as null.
                    record = {"id": obj["id"], **{p: obj.get(p) for p in selected}}
                    kept.append(record)
                    self.changes[obj["id"]] = record
                if normalise is not None and kept:
                    normalise(kept)
        except GraphError as exc:
            if exc.status == 410 or exc.code in RESYNC_CODES or exc.status == 400:
                raise Resync(f"Graph refused the stored delta link ({exc.status} {exc.code})") from exc
            raise
        if not self.new_links.get(path):
            raise GraphError(0, "NoDeltaLink", "the delta round ended without @odata.deltaLink", path=path)

    async def _licences(self) -> None:
        """Users whose licences may have changed unseen are read again into the changes; a run where that is
        not enough, or costs more than the listing, reads the dataset in full (connector/collect/licences.py)."""
        lic, ds = self.licences, self.ds
        assert lic is not None and self.stored is not None and self.baseline is not None
        stored = self.stored.get("licenceGroups")
        before = stored if isinstance(stored, dict) else {}
        changed = lic.changed_groups(before)
        if changed:
            self._read_in_full("licence_group_changed", f"the licences of {len(changed)} group(s) changed or a "
                               f"licensing group was deleted (e.g. {changed[0]}): their members' licences may have "
                               "changed unseen")
            return
        users, records = await lic.candidates(self.baseline, before, self.changes)
        cost, listing = lic.cost(len(users)), math.ceil(max(records, 1) / 999)
        lic.summary.update({"licenceCandidates": len(users), "licenceRequests": cost})
        if cost >= listing:
            self._read_in_full("licence_candidates", f"reading {len(users)} users' licences again would cost "
                               f"{cost} requests, the listing {listing}")
            return
        lic.summary["licencesReadAgain"] = await lic.read_again(self.ctx, users, self.changes, normaliser_for(ds))
        lic.licensed_after = {**before, **{g: h for g, h in lic.groups_now.items() if h is not None}}

    def _read_in_full(self, reason: str, why: str) -> None:
        self.changes.clear()
        self._full(reason, why)
        self.baseline = Baseline.latest(self.run.store, self.run.tenant_id, self.ds)

    # -- the changes file -----------------------------------------------------------------------------------
    async def open_changes(self, writer_for: Callable[[str], Any]) -> None:
        """The changes file, when there is a previous snapshot to compare with; a full read is compared as it
        is written (Differ), a delta run says what it applied."""
        if self.baseline is None:
            return
        self.out = ChangeLines(self.ds, writer_for(changes_file(self.ds)))
        if self.mode in ("full", "reconcile"):
            self.differ = Differ(self.ds, self.baseline, self.out)
            try:
                await self.differ.prepare()
            except BaselineCorrupt as why:
                await self._restart_full(f"base_corrupt: {why}")
                return
        if self.mode == "reconcile":
            self.drift = Reconciler(self.ds)
            if self.merge is not None:
                await self.drift.expect_records(self._merged())
            else:
                await self.drift.expect(self.baseline, self.changes)

    def _merged(self) -> AsyncIterator[Records]:
        """A merged dataset's records from its previous ones and its rounds (a context of its own: a reconcile
        computes them beside the full read, whose manifest entry they must not change)."""
        assert self.merge is not None and self.baseline is not None and self.stored is not None
        delta = self.mode == "delta"
        ctx = self.ctx if delta else type(self.ctx)(self.ctx.settings, self.ctx.graph, self.ctx.granted)
        hidden = self.stored.get("hidden")
        return self.merge.records(ctx, self.baseline, hidden if isinstance(hidden, list) else [],
                                  self.out if delta else None)

    def taps(self) -> list[Callable[[bytes], Any]]:
        return [t.see for t in (self.differ, self.drift) if t is not None]

    async def records(self, strategy: Callable[[Context, Dataset], AsyncIterator[Records]]) -> AsyncIterator[Records]:
        if self.mode != "delta":
            async for records in strategy(self.ctx, self.ds):
                yield records
            return
        try:
            async for records in (self._merged() if self.merge is not None else self._apply()):
                yield records
        except BaselineCorrupt as why:
            await self._restart_full(f"base_corrupt: {why}")
            yield RESTART
            async for records in strategy(self.ctx, self.ds):
                yield records

    async def _restart_full(self, reason: str) -> None:
        self.mode, self.reason, self.baseline = "full", reason, None
        self.ctx.warn("delta_base_corrupt", self.ds.name, f"{self.ds.name}: {reason}; read in full instead.")
        if self.out is not None:
            await self.out.writer.abort()
            self.out = None
        self.close()
        self.differ = self.drift = None
        self.full_at = now_iso()

    async def _apply(self) -> AsyncIterator[Records]:
        """The previous records with the changes applied, in their order; new records at the end."""
        assert self.baseline is not None and self.out is not None
        ds, out, changes = self.ds, self.out, self.changes
        upn = ds.upn_field
        names = tuple(dict.fromkeys(("id", *ds.key, *((upn,) if upn else ()))))
        decode = key_decoder(names).decode  # only the keys of a line are read, unless it changed
        at = [names.index(k) for k in ds.key]
        async for batch in self.baseline.batches():
            records: Records = []
            for line in batch:
                parts = decode(line)
                values = [getattr(parts, f"k{i}") for i in range(len(names))]
                key = str(values[at[0]]) if len(at) == 1 else "|".join(str(values[i]) for i in at)
                if key in changes:
                    old = orjson.loads(line)
                    new = changes.pop(key)
                    if new is None:
                        await out.removed(old)
                        continue
                    if record_hash(new) != record_hash(old):
                        await out.changed(old, new)
                        records.append(new)
                        continue
                records.append(RawRecord({"id": values[0]} | ({upn: values[names.index(upn)]} if upn else {}), line))
            yield records
        added = [new for new in changes.values() if new is not None]
        for i in range(0, len(added), BATCH):
            for new in added[i:i + BATCH]:
                await out.added(new)
            yield added[i:i + BATCH]
        changes.clear()

    async def restart(self, writer_for: Callable[[str], Any]) -> None:
        """The strategy started over (RESTART): the comparison does too."""
        if self.out is not None:
            await self.out.writer.abort()
        self.close()
        self.out = self.differ = self.drift = None
        if self.mode != "delta":
            await self.open_changes(writer_for)

    async def finish(self) -> dict[str, Any]:
        """Ends the changes file; the manifest's `delta` entry."""
        entry: dict[str, Any] = {"mode": self.mode, "baseRun": self.baseline.run_id if self.baseline else None}
        if self.reason:
            entry["reason"] = self.reason
        if self.differ is not None:
            await self.differ.finish()
        if self.drift is not None:
            entry["drift"] = self.drift.finish()
        if self.licences is not None:
            entry.update(self.licences.summary)
        if self.out is not None:
            await self.out.flush()
            await self.out.writer.finish()  # committed with the dataset's file
            entry.update(self.out.counts)
            entry["changes"] = changes_file(self.ds)
        return entry

    def close(self) -> None:
        for part in (self.differ, self.drift):
            if part is not None:
                part.close()

    def store_link(self) -> None:
        """After the run is published: the link for the next run, with this run as its base."""
        paths = [path for path, _b, _q in rounds(self.ds)]
        if not self.ds.delta or any(not self.new_links.get(p) for p in paths):
            return
        extra: dict[str, Any] = {}
        if len(paths) > 1:
            extra["links"] = {p: self.new_links[p] for p in paths[1:]}
        if self.licences is not None:
            if self.licences.licensed_after is None:
                return  # the licensing groups are not known: the next run reads in full
            extra["licenceGroups"] = self.licences.licensed_after
        if self.merge is not None:
            leg = self.merge.direct_leg.name
            extra["hidden"] = self.merge.hidden_after if self.mode == "delta" else \
                list(self.ctx.notes.get("unreadable", {}).get(leg, []))
        run = self.run
        deltalinks.write_link(run.store, run.tenant_id, self.ds.name, run.run_id, self.new_links[paths[0]],
                              self.obtained_at, self.fingerprint, self.full_at or self.obtained_at, extra)


class Reconciler:
    """A reconcile: what delta would have published (the previous records with the round applied), by key and
    hash, compared with the full read as it is written."""

    def __init__(self, ds: Dataset):
        self.ds = ds
        self.expected = KeyValueSpool()
        self.counts = {"missingFromDelta": 0, "differing": 0, "extraInDelta": 0}

    async def expect(self, baseline: Baseline, changes: dict[str, dict[str, Any] | None]) -> None:
        pending = dict(changes)
        async for batch in baseline.batches():
            for key, digest, _old in await asyncio.to_thread(hashed, self.ds, batch):
                if key not in pending:
                    self.expected.put(key, digest)
                elif (new := pending.pop(key)) is not None:
                    self.expected.put(key, record_hash(new))
        for key, new in pending.items():
            if new is not None:
                self.expected.put(key, record_hash(new))

    async def see(self, data: bytes) -> None:
        rows = await asyncio.to_thread(hashed, self.ds, data.split(b"\n"))
        found = self.expected.get_many(key for key, _h, _r in rows)
        for key, digest, _record in rows:
            if key not in found:
                self.counts["missingFromDelta"] += 1
            elif found[key] != digest:
                self.counts["differing"] += 1
        self.expected.delete_many(found)

    async def expect_records(self, records: AsyncIterator[Records]) -> None:
        """What a merged dataset's delta would have published (connector/collect/memberships.py)."""
        async for batch in records:
            for record in batch:
                whole = full(record)
                self.expected.put(key_of(self.ds, whole), record_hash(whole))

    def finish(self) -> dict[str, int]:
        self.counts["extraInDelta"] = len(self.expected)
        return {**self.counts, "total": sum(self.counts.values())}

    def close(self) -> None:
        self.expected.close()
