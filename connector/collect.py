"""How a dataset's records are fetched: one strategy per request shape, chosen by the declaration.

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
from .graph import Graph, GraphError

log = logging.getLogger("m365_connector")

# Characters a userPrincipalName can start with. Letters and digits get their own group when the
# tenant is large; the rarer symbols always share one group.
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_SYMBOLS = "_-'!#^~$%&*+=?{}|`/"
# Below this many pages a plain chain is fast enough, and splitting would only add requests.
SEQUENTIAL_MAX_PAGES = 40
# Each group wastes about half a page; keep that within a few percent of the minimum.
PAGES_PER_GROUP = 16


class UnionMismatch(Exception):
    """The partitions did not add up to the user count; the caller falls back to the plain chain."""


def first_url(graph: Graph, ds: Dataset, extra: str = "") -> str:
    query = "&".join(q for q in (ds.query(), extra) if q)
    return f"{graph.base}{ds.path}" + (f"?{query}" if query else "")


def _literal(ch: str) -> str:
    return "'" + ch.replace("'", "''") + "'"


def prefix_groups(count: int) -> list[str]:
    """Split the start characters into `count` groups (the symbols always form one more)."""
    count = max(1, min(count, len(_ALNUM)))
    size = -(-len(_ALNUM) // count)
    groups = [_ALNUM[i:i + size] for i in range(0, len(_ALNUM), size)]
    return groups + [_SYMBOLS]


def group_filter(field: str, chars: str) -> str:
    return " or ".join(f"startswith({field},{_literal(c)})" for c in chars)


async def sequential(graph: Graph, ds: Dataset, url: str | None = None) -> AsyncIterator[list[dict[str, Any]]]:
    async for page in graph.pages(ds.builder, url or first_url(graph, ds), ds.name, prefetch=True):
        yield page.records


async def partitioned(graph: Graph, ds: Dataset, total: int, groups: list[str]) -> AsyncIterator[list[dict]]:
    """Page every prefix group concurrently; raise UnionMismatch unless the groups add up to `total`."""
    queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=4 * len(groups))
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


async def plan(graph: Graph, ds: Dataset) -> tuple[str, int | None, list[str]]:
    """Choose sequential or partitioned paging for a dataset, from its declaration and the tenant size."""
    if ds.partition != "upn_prefix" or not ds.top:
        return "sequential", None, []
    try:
        total = await graph.count(ds.path, ds.name)
    except GraphError as exc:
        if exc.status in (401, 403):
            raise
        log.warning("%s: /users/$count failed (%s); paging sequentially", ds.name, exc)
        return "sequential", None, []
    pages = -(-total // ds.top)
    if pages <= SEQUENTIAL_MAX_PAGES:
        return "sequential", total, []
    return "partitioned", total, prefix_groups(pages // PAGES_PER_GROUP)


def describe(kind: str, total: int | None, groups: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"strategy": kind}
    if total is not None:
        out["userCount"] = total
    if groups:
        out["partitions"] = len(groups)
    return out


__all__ = ["UnionMismatch", "first_url", "plan", "partitioned", "sequential", "prefix_groups", "describe"]
