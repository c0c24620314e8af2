"""Plain paging (the "pages" strategy): one @odata.nextLink chain, or concurrent chains.

`sequential` follows @odata.nextLink; the next page is requested while the current one is
written, so gzip and Blob work overlap with Graph's latency.

`upn_prefix` cuts a long chain into concurrent chains: Graph returns at most 120 users per page
when signInActivity is selected, so 100,000 users are 834 sequential round trips. The users are
split by the first character of userPrincipalName ($filter=startswith(...) joined with `or`) and
every partition is paged concurrently. What Graph allows shapes the plan (graph-facts §11):

- A UPN starts with one of A-Z a-z 0-9 ' . - _ ! # ^ ~ (70 characters). Whether startswith()
  compares case-sensitively the docs do not say, so a letter's two cases always share a partition:
  the plan is right either way, and every user falls in exactly one partition.
- `or` takes at most 15 clauses in the default query mode, so a partition holds at most 15
  characters and there are at least 5 partitions (range filters on userPrincipalName are not
  documented for the default mode: `ge` is missing from the filter table).
- The tenant's size comes from `/users/$count` (one request per run, shared by its datasets); the
  pages are requested without `ConsistencyLevel: eventual`, which was reported to empty
  signInActivity for some users.

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
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from .datasets import Dataset
from .graph import Graph, GraphError
from .spool import scratch_database
from .strategy import RESTART, Context, Records, first_url, register

log = logging.getLogger("m365_connector")

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
_SYMBOLS = "'.-_!#^~"  # allowed in a UPN, rare as its first character
MAX_CLAUSES = 15  # Graph's limit on `or` clauses in a directory $filter (default query mode)
MIN_GROUPS = -(-(2 * len(_LETTERS) + len(_DIGITS) + len(_SYMBOLS)) // MAX_CLAUSES)  # 70 clauses -> 5
MAX_GROUPS = len(_LETTERS) + len(_DIGITS)  # one letter (both cases) or digit per partition at most
# Splitting costs requests: every partition ends on a part-filled page (about half a page wasted), and
# the recount one more. Keep the expected waste near 4% of the minimum: partitions = 8% of the pages, less 3.
WASTE_SHARE = 0.08
# Partitions page concurrently, so pages in flight grow with them; cap records in flight per dataset.
RECORDS_IN_FLIGHT = 5000
# Parsed pages waiting for the writer.
QUEUE_PAGES = 4
# More partitions than this share changed: not a local race (a lagging count): page the plain chain.
REPAGE_SHARE = 0.5


def group_count(pages: int, top: int) -> int:
    """How many partitions to page concurrently; 0 means the plain chain (fewer than MIN_GROUPS pay)."""
    groups = max(0, min(MAX_GROUPS, int(WASTE_SHARE * pages - 3), RECORDS_IN_FLIGHT // top))
    return groups if groups >= MIN_GROUPS else 0


def _literal(ch: str) -> str:
    return "'" + ch.replace("'", "''") + "'"


def prefix_groups(count: int) -> list[str]:
    """The start characters in `count` partitions (at least MIN_GROUPS) of at most MAX_CLAUSES each.

    Letters (both cases together) and digits are dealt round-robin, so each partition mixes common
    and rare initials and the chains end together; the rare symbols fill the partitions with room."""
    count = max(MIN_GROUPS, min(count, MAX_GROUPS))
    groups: list[str] = [""] * count
    keys = [c + c.upper() for c in _LETTERS] + list(_DIGITS)
    for i, key in enumerate(keys):
        for step in range(count):
            g = (i + step) % count
            if len(groups[g]) + len(key) <= MAX_CLAUSES:
                groups[g] += key
                break
        else:  # pragma: no cover - MIN_GROUPS leaves room by construction
            raise ValueError(f"{count} partitions cannot hold every start character")
    for symbol in _SYMBOLS:
        g = min(range(count), key=lambda k: len(groups[k]))
        if len(groups[g]) >= MAX_CLAUSES:  # pragma: no cover
            raise ValueError(f"{count} partitions cannot hold every start character")
        groups[g] += symbol
    return groups


def group_filter(field: str, chars: str) -> str:
    return " or ".join(f"startswith({field},{_literal(c)})" for c in chars)


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


async def sequential(graph: Graph, ds: Dataset, raw: bool = False) -> AsyncIterator[list[dict[str, Any]]]:
    """The plain @odata.nextLink chain (no ConsistencyLevel header: see the module docstring). With
    `raw` the records are RawRecords, to be written unchanged; a caller that changes records leaves it off."""
    async for page in graph.pages(ds.builder, first_url(graph, ds), ds.name, prefetch=True,
                                  raw=raw_keys(ds) if raw else None):
        yield page.records


async def tenant_user_count(graph: Graph) -> int | None:
    """`/users/$count` once per run, shared by every dataset that plans partitions; None if refused."""
    future = graph.shared.get("userCount")
    if future is None:
        future = graph.shared["userCount"] = asyncio.ensure_future(_count_users(graph))
    return await asyncio.shield(future)


async def _count_users(graph: Graph) -> int | None:
    try:
        return await graph.count("/users", "tenant_user_count")
    except GraphError as exc:
        # Graph not reached at all (status 0): the datasets fail with the one line that names the setting.
        log.log(logging.INFO if exc.status == 0 else logging.WARNING,
                "/users/$count refused (%s); user datasets are paged as one chain", exc.code)
        return None


class Partitions:
    """Concurrent chains over the prefix partitions, deduplicated by id, verified against $count. Their
    records are RawRecords (connector/rawjson.py): the `pages` strategy writes them as Graph sent them."""

    def __init__(self, graph: Graph, ds: Dataset, groups: list[str], seen: SeenIds):
        self.graph, self.ds, self.groups, self.seen = graph, ds, groups, seen
        self.field = ds.upn_field or "userPrincipalName"
        self.returned = [0] * len(groups)  # records each partition returned, duplicates included

    def filter(self, g: int) -> str:
        return group_filter(self.field, self.groups[g])

    async def page(self, which: list[int]) -> AsyncIterator[list[dict[str, Any]]]:
        """Page the given partitions concurrently; yields the records not written before."""
        queue: asyncio.Queue[tuple[int, list[dict[str, Any]]] | None] = asyncio.Queue(maxsize=QUEUE_PAGES)
        graph, ds = self.graph, self.ds

        async def chain(g: int) -> None:
            extra = "$filter=" + quote(self.filter(g), safe="(),")
            async for page in graph.pages(ds.builder, first_url(graph, ds, extra), ds.name, raw=raw_keys(ds)):
                await queue.put((g, page.records))

        async def run_all() -> None:
            try:
                async with asyncio.TaskGroup() as tg:
                    for g in which:
                        tg.create_task(chain(g))
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
            for g in range(len(self.groups))))
        return [g for g, n in enumerate(counts) if n != self.returned[g]]


async def plan(graph: Graph, ds: Dataset) -> tuple[str, int | None, list[str]]:
    """Choose sequential or partitioned paging from the declaration and the tenant's size."""
    if ds.partition != "upn_prefix" or not ds.top:
        return "sequential", None, []
    total = await tenant_user_count(graph)
    if total is None:
        return "sequential", None, []
    groups = group_count(-(-total // ds.top), ds.top)
    if not groups:
        return "sequential", total, []
    return "partitioned", total, prefix_groups(groups)


def describe(kind: str, total: int | None, groups: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"strategy": kind}
    if total is not None:
        out["userCount"] = total
    if groups:
        out["partitions"] = len(groups)
        out["partitionStarts"] = groups
    return out


@register("pages")
async def pages(ctx: Context, ds: Dataset) -> AsyncIterator[Records]:
    """Plain @odata.nextLink paging, split into concurrent chains when the plan says so; a split
    whose distinct users do not add up (or a filter Graph refuses) is discarded and paged as one chain."""
    graph = ctx.graph
    kind, total, groups = await plan(graph, ds)
    ctx.plan.update(describe(kind, total, groups))
    if kind != "partitioned":
        async for records in sequential(graph, ds, raw=True):
            yield records
        return
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
                    ctx.plan["repagedPartitions"] = [groups[g] for g in changed]
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
        async for records in sequential(graph, ds, raw=True):
            yield records
    finally:
        seen.close()
