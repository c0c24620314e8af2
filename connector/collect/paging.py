"""Plain paging (the "pages" strategy): one @odata.nextLink chain, or concurrent chains.

`sequential` follows @odata.nextLink; the next page is requested while the current one is
written, so gzip and Blob work overlap with Graph's latency.

`upn_prefix` cuts a long chain into concurrent chains: Graph returns at most 120 users per page
when signInActivity is selected, so 100,000 users are 834 sequential round trips. The users are
split by userPrincipalName prefix ($filter=startswith(...) joined with `or`) into partitions of
about equal size (connector/collect/upn_plan.py says how, within Graph's limits), paged largest first, as
many at once as the Graph requests in flight allow. The tenant's size comes from `/users/$count`
(one request per run, shared by its datasets); the pages are requested without
`ConsistencyLevel: eventual`, which was reported to empty signInActivity for some users.

The union is checked by user id, not by count: ids already written wait in a temporary SQLite file
(memory stays flat), so a user renamed from one partition into another while both are paged is
written once. At the end a fresh `/users/$count` must equal the number of distinct users; if not,
per-partition counts find the partitions that changed, those are paged again (their new users
added), and if that still does not add up the result is discarded and the plain chain runs
instead. The manifest's plan says which of these happened.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import quote

import orjson

from connector.catalog.datasets import Dataset
from connector.collect.strategy import RESTART, Context, Records, first_url, register
from connector.collect.upn_plan import SAMPLE_SIZE, Partition, Sample, partition_budget, plan_partitions
from connector.graph.client import ForeignLinkError, Graph, GraphError
from connector.spool import scratch_database

log = logging.getLogger("m365_connector")
T = TypeVar("T")

# Partitions page concurrently, so pages in flight grow with them; cap records in flight per dataset.
RECORDS_IN_FLIGHT = 5000
# The older service's refusal of a page larger than its cap (sign-in activity: 120).
OLDER_CAP = re.compile(r"more than \d+ users at a time", re.I)
# Parsed pages waiting for the writer.
QUEUE_PAGES = 4
# More partitions than this share changed: not a local race (a lagging count): page the plain chain.
REPAGE_SHARE = 0.5


def _literal(ch: str) -> str:
    return "'" + ch.replace("'", "''") + "'"


def group_filter(field: str, starts: list[str]) -> str:
    return " or ".join(f"startswith({field},{_literal(c)})" for c in starts)


class SeenIds:
    """User ids already written, in an anonymous SQLite database (connector/spool.py): a million ids
    would be about 100 MB in a Python set, here they cost disk (about 50 MB per million), not memory (a
    2 MB page cache).
    `new(records)` keeps the records not seen before. One open transaction without a journal: the
    file is scratch, so nothing is ever committed or synced."""

    CACHE_KIB = 2048  # SQLite's default page cache: full by 100,000 users, so memory stays flat from there

    def __init__(self) -> None:
        self._db = scratch_database(self.CACHE_KIB)
        self._db.execute("CREATE TABLE seen (id TEXT PRIMARY KEY) WITHOUT ROWID")
        self._inserts: dict[int, str] = {}
        self.count = 0
        self.dropped = 0

    def new(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = [r["id"] for r in records if isinstance(r.get("id"), str)]
        if not ids:
            return records
        sql = self._inserts.get(len(ids))
        if sql is None:  # one statement per page: RETURNING names the ids that were new
            sql = self._inserts[len(ids)] = ("INSERT OR IGNORE INTO seen VALUES " + ",".join(["(?)"] * len(ids))
                                              + " RETURNING id")
        fresh = {row[0] for row in self._db.execute(sql, ids).fetchall()}
        self.count += len(fresh)
        if len(fresh) == len(ids):  # the usual case: nothing seen before
            return records
        kept = []
        for record in records:
            rid = record.get("id")
            if not isinstance(rid, str):
                kept.append(record)
            elif rid in fresh:
                fresh.discard(rid)  # a second copy within the same page is a duplicate too
                kept.append(record)
        self.dropped += len(records) - len(kept)
        return kept

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None  # type: ignore[assignment]


def raw_keys(ds: Dataset) -> tuple[str, ...]:
    """What this strategy reads of a record it writes as Graph sent it (connector/rawjson.py): the id
    (deduplication) and the user principal name (the domain filter)."""
    return ("id", ds.upn_field) if ds.upn_field and ds.upn_field != "id" else ("id",)


async def sequential(graph: Graph, ds: Dataset, raw: bool = False, ctx: Context | None = None,
                     start: str | None = None) -> AsyncIterator[list[dict[str, Any]]]:
    """The plain @odata.nextLink chain (no ConsistencyLevel header: see the module docstring). With
    `raw` the records are RawRecords, to be written unchanged; a caller that changes records leaves it off.
    With `ctx`, each page's next link is told to the engine (its checkpoint); `start` resumes a chain."""
    async for page in graph.pages(ds.builder, start or first_url(graph, ds), ds.name, prefetch=True,
                                  raw=raw_keys(ds) if raw else None):
        if ctx is not None:
            ctx.next_link = page.next_link
        yield page.records


async def chain(ctx: Context, ds: Dataset) -> AsyncIterator[Records]:
    """One chain at the declared page size. A Graph that refuses it with its older cap ("Cannot query data for
    more than 120 users at a time": msgraph-sdk-powershell #1898) is asked again, once, at the declared
    fallback; a `$top` the API page does not document (Dataset.top_undocumented) that Graph refuses with a 400
    is dropped, once, for Graph's default page. Either is said in the manifest's plan (`pageSize`,
    `pageSizeRefused`) and warnings."""
    if ds.top:
        ctx.plan["pageSize"] = ds.top
    got = False
    try:
        async for records in sequential(ctx.graph, ds, raw=True, ctx=ctx):
            got = True
            yield records
        return
    except GraphError as exc:
        if got or exc.status != 400 or not _smaller_page(ds, exc):
            raise
        refused = exc.message
    smaller = replace(ds, top=ds.fallback_top if ds.fallback_top else None)
    ctx.plan["pageSize"] = smaller.top or "Graph's default"
    ctx.plan["pageSizeRefused"] = ds.top
    cost = (f"paged at {smaller.top} a page, so this listing needs {ds.top / smaller.top:.1f} times as many "
            "requests under the same quota" if smaller.top else "paged without $top, at Graph's default page size")
    ctx.warn("page_size_fallback", ds.name, f"{ds.name}: Graph refused {ds.top} records a page ({refused}); {cost}. "
                                            "Nothing is missing.")
    async for records in sequential(ctx.graph, smaller, raw=True, ctx=ctx):
        yield records


def _smaller_page(ds: Dataset, exc: GraphError) -> bool:
    """Whether a 400 on a chain's first page asks for a smaller page (see `chain`)."""
    return bool((ds.fallback_top and OLDER_CAP.search(exc.message)) or ds.top_undocumented)


async def resumed(ctx: Context, ds: Dataset) -> AsyncIterator[Records]:
    """A chain continued from its checkpoint's next link. A link Graph refuses (expired: 400 or 410; or
    to another host than M365_GRAPH_ENDPOINT now names) before its first page restarts the listing: RESTART,
    said in the manifest's plan (`resumeRestarted`) and warnings, then the dataset is paged from the start."""
    link, ctx.resume_link = ctx.resume_link, None
    got = False
    try:
        async for records in sequential(ctx.graph, ds, raw=True, ctx=ctx, start=link):
            got = True
            yield records
        return
    except GraphError as exc:
        if got or not (exc.status in (400, 410) or isinstance(exc, ForeignLinkError)):
            raise
        reason = f"{exc.status} {exc.code}" if exc.status else exc.code
    ctx.plan["resumeRestarted"] = reason
    ctx.warn("resume_restarted", ds.name, f"{ds.name}: Graph refused the checkpoint's next link ({reason}), so the "
                                          "listing was collected again from the start; nothing is missing.")
    yield RESTART


async def _once(graph: Graph, key: str, lookup: Callable[[], Awaitable[T]], refused: str) -> T | None:
    """A run-wide look-up done once and shared by every dataset that plans partitions; None if Graph
    refused it (logged with `refused`: what the datasets do without it)."""
    future = graph.shared.get(key)
    if future is None:
        future = graph.shared[key] = asyncio.ensure_future(_refusal_as_none(lookup, refused))
    return await asyncio.shield(future)


async def _refusal_as_none(lookup: Callable[[], Awaitable[T]], refused: str) -> T | None:
    try:
        return await lookup()
    except GraphError as exc:
        # Graph not reached at all (status 0): the datasets fail with the one line that names the setting.
        log.log(logging.INFO if exc.status == 0 else logging.WARNING, "%s (%s)", refused, exc.code)
        return None


async def tenant_user_count(graph: Graph) -> int | None:
    """`/users/$count` once per run; None if refused."""
    return await _once(graph, "userCount", lambda: graph.count("/users", "tenant_user_count"),
                       "/users/$count refused; user datasets are paged as one chain")


async def upn_sample(graph: Graph) -> Sample | None:
    """One page of userPrincipalNames once per run; None if refused or not a fair sample."""
    async def fetch() -> Sample | None:
        url = f"{graph.base}/users?$select=userPrincipalName&$top={SAMPLE_SIZE}"
        page = await graph.first_page("users", url, "tenant_upn_sample")
        sample = Sample(r.get("userPrincipalName") for r in page.records if isinstance(r, dict))
        if len(sample) < 2 or sample.in_name_order:
            # Users in name order (or hardly any): the page is not a sample of the tenant's names.
            log.info("userPrincipalName sample of %d names is not a fair sample; partitions are not sized",
                     len(sample))
            return None
        return sample

    return await _once(graph, "upnSample", fetch, "userPrincipalName sample refused; partitions are not sized")


def chains_at_once(graph: Graph, ds: Dataset) -> int:
    """Partitions paged at once: no more than the requests Graph may have in flight, nor than
    RECORDS_IN_FLIGHT records' worth of pages."""
    return max(1, min(RECORDS_IN_FLIGHT // max(1, ds.top or 1), graph.settings.max_concurrency))


class Partitions:
    """Concurrent chains over the prefix partitions, deduplicated by id, verified against $count. Their
    records are RawRecords (connector/rawjson.py): the `pages` strategy writes them as Graph sent them."""

    def __init__(self, graph: Graph, ds: Dataset, parts: list[Partition], seen: SeenIds):
        self.graph, self.ds, self.parts, self.seen = graph, ds, parts, seen
        self.field = ds.upn_field or "userPrincipalName"
        self.returned = [0] * len(parts)  # records each partition returned, duplicates included
        self.chains = chains_at_once(graph, ds)

    def filter(self, g: int) -> str:
        return group_filter(self.field, self.parts[g].starts())

    async def page(self, which: list[int]) -> AsyncIterator[list[dict[str, Any]]]:
        """Page the given partitions, the largest first, `chains` at once; yields the records not
        written before."""
        queue: asyncio.Queue[tuple[int, list[dict[str, Any]]] | None] = asyncio.Queue(maxsize=QUEUE_PAGES)
        graph, ds = self.graph, self.ds
        order = iter(sorted(which, key=lambda g: -self.parts[g].weight))

        async def chains() -> None:
            for g in order:  # shared by the workers: each takes the next partition when its chain ends
                extra = "$filter=" + quote(self.filter(g), safe="(),")
                async for page in graph.pages(ds.builder, first_url(graph, ds, extra), ds.name, raw=raw_keys(ds)):
                    await queue.put((g, page.records))

        async def run_all() -> None:
            try:
                async with asyncio.TaskGroup() as tg:
                    for _ in range(min(self.chains, len(which))):
                        tg.create_task(chains())
            finally:
                await queue.put(None)

        for g in which:
            self.returned[g] = 0
        runner = asyncio.create_task(run_all())
        try:
            while (item := await queue.get()) is not None:
                g, records = item
                self.returned[g] += len(records)
                fresh = self.seen.new(records)
                if fresh:
                    yield fresh
            await runner  # re-raises the first failure of any chain
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
        finally:
            if not runner.done():
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)

    async def changed(self) -> list[int]:
        """Partitions whose `$count` now differs from what they returned."""
        counts = await asyncio.gather(*(
            self.graph.count("/users", self.ds.name, "$filter=" + quote(self.filter(g), safe="(),"))
            for g in range(len(self.parts))))
        return [g for g, n in enumerate(counts) if n != self.returned[g]]


@dataclass
class Plan:
    kind: str  # "sequential" or "partitioned"
    total: int | None = None  # /users/$count
    parts: list[Partition] = field(default_factory=list)
    sample: int = 0  # userPrincipalNames the sizes were estimated from

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"strategy": self.kind}
        if self.total is not None:
            out["userCount"] = self.total
        if self.parts:
            out["partitions"] = len(self.parts)
            out["partitionPrefixes"] = [p.prefixes for p in self.parts]
            out["sizedBySample"] = self.sample
        return out


async def plan(graph: Graph, ds: Dataset) -> Plan:
    """Choose sequential or partitioned paging from the declaration and the tenant's size."""
    if ds.partition != "upn_prefix" or not ds.top:
        return Plan("sequential")
    total = await tenant_user_count(graph)
    if total is None:
        return Plan("sequential")
    if not partition_budget(-(-total // ds.top)):
        return Plan("sequential", total)
    sample = await upn_sample(graph)
    parts = plan_partitions(total, ds.top, chains_at_once(graph, ds), sample)
    if not parts:  # pragma: no cover - the budget was checked above
        return Plan("sequential", total)
    return Plan("partitioned", total, parts, len(sample) if sample else 0)


@register("pages")
async def pages(ctx: Context, ds: Dataset) -> AsyncIterator[Records]:
    """Plain @odata.nextLink paging; with a documented count (Dataset.documented_count), the records listed
    are compared with it at the end."""
    if not ds.documented_count:
        async for records in _pages(ctx, ds):
            yield records
        return
    replayed = (ctx.extra.get("resumed") or {}).get("recordsReplayed") or 0  # already in the file
    listed = replayed
    async for records in _pages(ctx, ds):
        listed = 0 if records is RESTART else listed + len(records)
        yield records
    await compare_with_documented_count(ctx, ds, listed)


async def documented_count(ctx: Context, ds: Dataset) -> int | None:
    """The count Graph documents for the collection (e.g. managedDeviceOverview's enrolledDeviceCount); None,
    with a `count_unavailable` warning, when Graph does not give it. The doc sample wraps the object in
    {"value": {...}}; both shapes are read."""
    path, prop = ds.documented_count
    graph = ctx.graph
    builder = ".".join(re.sub(r"(?<!^)(?=[A-Z])", "_", part).lower() for part in path.strip("/").split("/"))

    def check(response: Any) -> int:
        body = orjson.loads(response.content)
        value = body.get("value") if isinstance(body.get("value"), dict) else body
        number = value.get(prop) if isinstance(value, dict) else None
        if not isinstance(number, int):
            raise ValueError(f"{path} answered no {prop}")
        return number

    try:
        result = await graph.get(builder, f"{graph.base}{path}", ds.name, check=check)
    except GraphError as exc:
        result = exc
    if isinstance(result, int):
        return result
    reason = f"{result.code}" if isinstance(result, GraphError) else f"status {result.status_code}"
    ctx.warn("count_unavailable", ds.name, f"{ds.name}: {path} could not be read ({reason}), so the listing could "
                                          f"not be checked against its {prop}.")
    return None


async def compare_with_documented_count(ctx: Context, ds: Dataset, listed: int) -> None:
    """Fewer records than the documented count: a `listing_shortfall` warning (the listing was reported to
    leave objects out: microsoft-graph-docs #21659 for managedDevices). More is not flagged: the count leaves
    some objects out by definition (enrolledDeviceCount: not the PCs managed through the Intune PC agent)."""
    total = await documented_count(ctx, ds)
    if total is None:
        return
    path, prop = ds.documented_count
    ctx.extra["documentedCount"] = {"path": path, "property": prop, "value": total, "listed": listed}
    if listed < total:
        ctx.warn("listing_shortfall", ds.name,
                 f"{ds.name}: the listing returned {listed} records but {path} says {prop} = {total}: {total - listed} "
                 "missing. Graph was reported to leave objects out of an unfiltered listing (microsoft-graph-docs "
                 "#21659); run again, and if the gap stays, compare with the Intune admin center.")


async def _pages(ctx: Context, ds: Dataset) -> AsyncIterator[Records]:
    """Plain @odata.nextLink paging, split into concurrent chains when the plan says so; a split
    whose distinct users do not add up (or a filter Graph refuses) is discarded and paged as one chain."""
    graph = ctx.graph
    if ctx.resume_link:
        restarted = False
        async for records in resumed(ctx, ds):
            restarted = records is RESTART
            yield records
        if not restarted:
            return
    chosen = await plan(graph, ds)
    ctx.plan.update(chosen.describe())
    if chosen.kind != "partitioned":
        async for records in chain(ctx, ds):
            yield records
        return
    groups = chosen.parts
    seen = SeenIds()
    try:
        try:
            parts = Partitions(graph, ds, groups, seen)
            async for records in parts.page(list(range(len(groups)))):
                yield records
            final = await graph.count("/users", ds.name)
            if seen.dropped:  # the same user listed by two partitions: renamed from one into another
                ctx.plan["duplicatesDropped"] = seen.dropped
            if seen.count != final:
                # Something changed while paging (or the count lags): find the partitions that moved.
                changed = await parts.changed()
                if changed and len(changed) <= REPAGE_SHARE * len(groups):
                    ctx.plan["repagedPartitions"] = [groups[g].prefixes for g in changed]
                    before = seen.count
                    async for records in parts.page(changed):
                        yield records
                    ctx.plan["usersFoundByRepaging"] = seen.count - before
                    final = await graph.count("/users", ds.name)
            ctx.plan["recount"] = final
            reason = None if seen.count == final else (
                f"the {len(groups)} userPrincipalName partitions returned {seen.count} distinct users, "
                f"/users/$count says {final}")
        except GraphError as exc:
            if exc.status != 400:
                raise
            reason = f"Graph refused the partition filter ({exc.code}: {exc.message})"
        if reason is None:
            return
        ctx.warn("partition_fallback", ds.name, f"{ds.name}: {reason}; collected again as one sequential chain.")
        ctx.plan["fallback"] = "sequential"
        yield RESTART
        async for records in sequential(graph, ds, raw=True, ctx=ctx):
            yield records
    finally:
        seen.close()
