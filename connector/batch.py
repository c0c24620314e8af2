"""Group memberships through JSON batching, and role assignments with role names.

Listing members one group at a time costs a request per group. `$batch` carries 20 GETs per
request, so `group_members` costs one request per 20 groups, plus one per extra member page
(also batched) and the pages of the group list. Only direct members are asked for; members
through nested groups are derived from them (Graph's transitiveMembers = direct members plus
everything reachable through nested groups), which avoids a second request per group. The direct
memberships wait in a temporary SQLite file, not in memory, until the transitive ones are derived.

Inside a batch every request is throttled on its own: a 429 item carries its own Retry-After
and is sent again in a later batch after that wait. Items that fail for good fail the dataset
with Graph's error, like any other request.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import orjson

from .datasets import Dataset
from .graph import GraphError, error_from
from .strategy import Context, first_url, register

BATCH_SIZE = 20  # Graph's maximum requests per $batch
BATCHES_IN_FLIGHT = 4
MEMBER_QUERY = "$select=id&$top=999"
RETRYABLE = frozenset({429, 500, 502, 503, 504})


def _member_type(obj: dict[str, Any]) -> str | None:
    odata = obj.get("@odata.type") or ""
    return odata.rsplit(".", 1)[-1] or None


class _Spool:
    """Direct memberships on disk (a temporary SQLite file), so deriving transitive ones keeps
    memory flat however many memberships the tenant has; only one group's closure is in memory."""

    def __init__(self) -> None:
        import sqlite3
        import tempfile

        self._dir = tempfile.TemporaryDirectory(prefix="m365-members-")
        self._db: Any = sqlite3.connect(f"{self._dir.name}/members.db")
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE m (grp TEXT, member TEXT, type TEXT)")
        self._indexed = False

    def add(self, rows: list[tuple[str, str, str | None]]) -> None:
        self._db.executemany("INSERT INTO m VALUES (?, ?, ?)", rows)

    def parents(self) -> list[str]:
        """Groups with at least one group among their direct members (the only ones to expand)."""
        self._index()
        return [g for (g,) in self._db.execute("SELECT DISTINCT grp FROM m WHERE type = 'group' ORDER BY grp")]

    def members(self, group: str) -> list[tuple[str, str | None]]:
        self._index()
        return self._db.execute("SELECT member, type FROM m WHERE grp = ?", (group,)).fetchall()

    def _index(self) -> None:
        if not self._indexed:
            self._db.execute("CREATE INDEX m_grp ON m (grp)")
            self._indexed = True

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._dir.cleanup()


class _Item:
    __slots__ = ("group", "url", "attempts", "not_before")

    def __init__(self, group: str, url: str):
        self.group, self.url, self.attempts, self.not_before = group, url, 0, 0.0


def _retry_after(headers: dict[str, Any], attempts: int) -> float:
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                break
    return min(30.0, 0.5 * 2 ** attempts) + random.random() / 2


@register("group_members")
async def group_members(ctx: Context, ds: Dataset) -> AsyncIterator[list[dict[str, Any]]]:
    """One record per (group, member): `direct`, or `transitive` when reached only through nested groups."""
    graph, settings = ctx.graph, ctx.settings
    stats = graph._stats(ds.name)
    groups: list[str] = []
    async for page in graph.pages("groups", f"{graph.base}/groups?$select=id&$top=999", ds.name, prefetch=True):
        groups.extend(sys.intern(r["id"]) for r in page.records)
    spool = _Spool()
    pending = deque(_Item(g, f"/groups/{g}/members?{MEMBER_QUERY}") for g in groups)
    running: set[asyncio.Future[tuple[list[_Item], Any]]] = set()
    batches = vanished = direct_count = 0
    base_path = urlsplit(graph.base).path  # "/v1.0"

    async def send(items: list[_Item]) -> tuple[list[_Item], Any]:
        body = orjson.dumps({"requests": [{"id": str(i), "method": "GET", "url": item.url}
                                          for i, item in enumerate(items)]})
        response = await graph.post_json("/$batch", body, ds.name)
        if response.status_code != 200:
            raise error_from(response.status_code, response.headers, response.content, "/$batch")
        return items, orjson.loads(response.content)

    try:
        while pending or running:
            now = time.monotonic()
            while len(running) < BATCHES_IN_FLIGHT and pending:
                ready = [pending.popleft() for _ in range(min(len(pending), BATCH_SIZE * 4))]
                chosen = [i for i in ready if i.not_before <= now][:BATCH_SIZE]
                pending.extendleft(reversed([i for i in ready if i not in chosen]))
                if not chosen:
                    break
                batches += 1
                running.add(asyncio.ensure_future(send(chosen)))
            if not running:
                await asyncio.sleep(max(0.0, min(i.not_before for i in pending) - time.monotonic()))
                continue
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            out: list[dict[str, Any]] = []
            for task in done:
                running.discard(task)
                items, payload = task.result()
                for answer in payload.get("responses") or []:
                    item = items[int(answer["id"])]
                    status = int(answer.get("status") or 0)
                    body = answer.get("body") or {}
                    if status == 200:
                        rows = [(item.group, obj["id"], _member_type(obj)) for obj in body.get("value") or []]
                        spool.add(rows)
                        out.extend({"groupId": g, "memberId": m, "memberType": t, "membership": "direct"}
                                   for g, m, t in rows)
                        next_link = body.get("@odata.nextLink")
                        if next_link:
                            graph.check_link(next_link, ds.name)
                            parts = urlsplit(next_link)
                            path = parts.path[len(base_path):] if parts.path.startswith(base_path) else parts.path
                            pending.appendleft(_Item(item.group, f"{path}?{parts.query}"))
                    elif status == 404:
                        vanished += 1  # deleted since the group list was read: it has no members to report
                    elif status in RETRYABLE and item.attempts < settings.max_retries:
                        item.attempts += 1
                        stats.retries += 1
                        if status == 429:
                            stats.throttled += 1
                        wait = _retry_after(answer.get("headers") or {}, item.attempts)
                        if status == 429:
                            graph.scope(ds.name).throttled(wait)
                        item.not_before = time.monotonic() + wait
                        pending.append(item)
                    else:
                        raise error_from(status, answer.get("headers") or {}, orjson.dumps(body),
                                          f"/$batch: {item.url.split('?')[0]}")
                if len(items) != len(payload.get("responses") or []):
                    raise GraphError(502, "BatchIncomplete", f"$batch answered {len(payload.get('responses') or [])} "
                                     f"of {len(items)} requests", path="/$batch")
            direct_count += len(out)
            if out:
                yield out
    except BaseException:
        spool.close()
        raise
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    transitive = 0
    out = []
    try:
        for group in spool.parents():
            members = spool.members(group)
            seen = {m for m, _ in members}
            seen.add(group)
            stack, visited = [m for m, t in members if t == "group"], {group}
            while stack:
                child = stack.pop()
                if child in visited:
                    continue
                visited.add(child)
                for member, kind in spool.members(child):
                    if member not in seen:
                        seen.add(member)
                        out.append({"groupId": group, "memberId": member, "memberType": kind,
                                    "membership": "transitive"})
                    if kind == "group" and member not in visited:
                        stack.append(member)
            if len(out) >= 5000:
                transitive += len(out)
                yield out
                out = []
    finally:
        spool.close()
    if out:
        transitive += len(out)
        yield out
    ctx.extra.update({"groups": len(groups), "batches": batches, "directMemberships": direct_count,
                      "transitiveMemberships": transitive})
    if vanished:
        ctx.extra["groupsDeletedDuringRun"] = vanished


@register("role_assignments")
async def role_assignments(ctx: Context, ds: Dataset) -> AsyncIterator[list[dict[str, Any]]]:
    """Assignments with the principal expanded and the role's name joined from roleDefinitions
    (one extra paged list of about a hundred roles)."""
    graph = ctx.graph
    definitions: dict[str, dict[str, Any]] = {}
    url = f"{graph.base}/roleManagement/directory/roleDefinitions?$select=id,displayName,templateId,isBuiltIn"
    async for page in graph.pages("role_management.directory.role_definitions", url, ds.name):
        for d in page.records:
            definitions[d["id"]] = {k: d.get(k) for k in ("id", "displayName", "templateId", "isBuiltIn")}
    unknown = 0
    async for page in graph.pages(ds.builder, first_url(graph, ds), ds.name, prefetch=True):
        for record in page.records:
            record["roleDefinition"] = definitions.get(record.get("roleDefinitionId") or "")
            unknown += record["roleDefinition"] is None
        yield page.records
    ctx.extra["roleDefinitions"] = len(definitions)
    if unknown:
        ctx.extra["assignmentsWithUnknownRole"] = unknown
