"""Plain paging (the "pages" strategy): one @odata.nextLink chain, or concurrent chains.

`sequential` follows @odata.nextLink; the next page is requested while the current one is
written, so gzip and Blob work overlap with Graph's latency.

`upn_prefix` cuts a long chain into concurrent chains: Graph returns at most 120 users per page
when signInActivity is selected, so 100,000 users are 834 sequential round trips. The users are
split by the first character of userPrincipalName ($filter=startswith(...), grouped with `or`),
every group is paged concurrently, and the union is checked against /users/$count. If the sum
differs (users outside the groups, changes during the run, a filter Graph refuses) the partial
result is discarded and the plain chain runs instead, so every user is there exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from .datasets import Dataset
from .graph import Graph, GraphError, Page
from .strategy import RESTART, Context, Records, first_url, register

log = logging.getLogger("m365_connector")

# Characters a userPrincipalName can start with. Letters and digits get their own group when the
# tenant is large; the rarer symbols always share one group.
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_SYMBOLS = "_-'!#^~$%&*+=?{}|`/"
# Splitting costs requests: every group ends on a part-filled page (about half a page wasted), the
# rare-symbol group is one more, and /users/$count one more (shared by the datasets of a run). Keep
# the expected waste near 4% of the minimum: alnum groups = 8% of the pages, less 4.
WASTE_SHARE = 0.08
# Groups page concurrently, so pages in flight grow with them; cap records in flight per dataset.
RECORDS_IN_FLIGHT = 4000
# Parsed pages waiting for the writer.
QUEUE_PAGES = 4


def group_count(pages: int, top: int) -> int:
    """How many letter/digit groups to page concurrently; below 2 the plain chain is used."""
    return max(0, min(len(_ALNUM), int(WASTE_SHARE * pages - 4), RECORDS_IN_FLIGHT // top))


class UnionMismatch(Exception):
    """The partitions did not add up to the user count; the caller falls back to the plain chain."""


def _literal(ch: str) -> str:
    return "'" + ch.replace("'", "''") + "'"


def prefix_groups(count: int) -> list[str]:
    """Split the start characters into `count` groups (the symbols always form one more). Characters
    are dealt round-robin, so each group mixes common and rare initials and the chains end together."""
    count = max(1, min(count, len(_ALNUM)))
    return [_ALNUM[i::count] for i in range(count)] + [_SYMBOLS]


def group_filter(field: str, chars: str) -> str:
    return " or ".join(f"startswith({field},{_literal(c)})" for c in chars)


EVENTUAL = {"ConsistencyLevel": "eventual"}


async def sequential(graph: Graph, ds: Dataset, first: Page | None = None) -> AsyncIterator[list[dict[str, Any]]]:
    """The plain @odata.nextLink chain, optionally continuing from a first page already fetched."""
    headers = EVENTUAL if first is not None else None
    async for page in graph.pages(ds.builder, first_url(graph, ds), ds.name, headers, prefetch=True, first=first):
        yield page.records


async def partitioned(graph: Graph, ds: Dataset, total: int, groups: list[str]) -> AsyncIterator[list[dict]]:
    """Page every prefix group concurrently; raise UnionMismatch unless the groups add up to `total`."""
    queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=QUEUE_PAGES)
    seen = 0

    async def chain(chars: str) -> None:
        extra = "$filter=" + quote(group_filter(ds.upn_field or "userPrincipalName", chars), safe="(),")
        async for page in graph.pages(ds.builder, first_url(graph, ds, extra), ds.name):
            await queue.put(page.records)

    async def run_all() -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for chars in groups:
                    tg.create_task(chain(chars))
        finally:
            await queue.put(None)

    runner = asyncio.create_task(run_all())
    try:
        while (records := await queue.get()) is not None:
            seen += len(records)
            yield records
        await runner  # re-raises the first failure of any chain
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
    finally:
        if not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
    if seen != total:
        raise UnionMismatch(f"the {len(groups)} userPrincipalName groups returned {seen} users, /users/$count "
                            f"said {total}")


async def plan(graph: Graph, ds: Dataset) -> tuple[str, int | None, list[str], Page | None]:
    """Choose sequential or partitioned paging from the declaration and the tenant size.

    The size comes with the first page (`$count=true`), so a small tenant pays no extra request:
    its chain simply goes on from that page. A large one discards that page and splits.
    """
    if ds.partition != "upn_prefix" or not ds.top:
        return "sequential", None, [], None
    try:
        first = await graph.first_page(ds.builder, first_url(graph, ds, "$count=true"), ds.name, EVENTUAL)
    except GraphError as exc:
        if exc.status != 400:
            raise
        log.warning("%s: $count refused (%s); paging sequentially", ds.name, exc.code)
        return "sequential", None, [], None
    if first.count is None:
        return "sequential", None, [], first
    groups = group_count(-(-first.count // ds.top), ds.top)
    if groups < 2:
        return "sequential", first.count, [], first
    return "partitioned", first.count, prefix_groups(groups), None


def describe(kind: str, total: int | None, groups: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"strategy": kind}
    if total is not None:
        out["userCount"] = total
    if groups:
        out["partitions"] = len(groups)
    return out


@register("pages")
async def pages(ctx: Context, ds: Dataset) -> AsyncIterator[Records]:
    """Plain @odata.nextLink paging, split into concurrent chains when the plan says so; a split
    that does not add up (or a filter Graph refuses) is discarded and paged as one chain."""
    graph = ctx.graph
    kind, total, groups, first = await plan(graph, ds)
    ctx.plan.update(describe(kind, total, groups))
    if kind != "partitioned":
        async for records in sequential(graph, ds, first):
            yield records
        return
    try:
        async for records in partitioned(graph, ds, total or 0, groups):
            yield records
        return
    except UnionMismatch as exc:
        reason = str(exc)
    except GraphError as exc:
        if exc.status != 400:
            raise
        reason = f"Graph refused the partition filter ({exc.code})"
    ctx.warn("partition_fallback", ds.name, f"{ds.name}: {reason}; collected again as one sequential chain.")
    ctx.plan["fallback"] = "sequential"
    yield RESTART
    async for records in sequential(graph, ds):
        yield records
