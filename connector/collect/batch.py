"""Fan-out through JSON batching: one engine for every dataset that needs a request per object, and
role assignments with role names.

Listing a relationship one object at a time costs a request per object. `$batch` carries 20 GETs per
request, so a fan-out costs one request per 20 objects, plus one per extra page (also batched) and
the pages of the parent lists. A dataset declares its legs (connector.catalog.datasets.Leg: parent list,
child URL, how a row is built) and this engine does the rest for all of them: group members and
owners, app owners, app role assignments, detected apps' devices, user managers.

Inside a batch every request is throttled on its own: a 429 item carries its own Retry-After and is
sent again in a later batch after that wait. A parent deleted since it was listed answers 404 and is
counted, not failed. A parent a leg may be refused (hidden-membership groups need Member.Read.Hidden)
is skipped with a warning naming the permission; every other failure fails the dataset with Graph's
error, like any other request. `group_members` derives memberships through nested groups from the
direct ones (Graph's transitiveMembers = direct members plus everything reachable through nested
groups), which avoids a second request per group; the direct memberships wait in a temporary SQLite
file, not in memory, until the transitive ones are derived.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson

from connector.catalog.datasets import Dataset, FanOut, Leg
from connector.catalog.quotas import classify
from connector.collect.failures import PORTAL_STEP
from connector.collect.strategy import Context, first_url, register
from connector.graph.client import GraphError, error_from, give_up_reason, throttled_buckets
from connector.graph.retry import RETRY_STATUSES, backoff, retry_after_seconds
from connector.spool import scratch_database

BATCH_SIZE = 20  # Graph's maximum requests per $batch (concepts/json-batching.md)
BATCHES_IN_FLIGHT = 4
WARNINGS_PER_LEG = 20  # refused parents named one by one; beyond this, one summary warning
ROWS_PER_YIELD = 5000


def _member_type(obj: dict[str, Any] | None) -> str | None:
    odata = (obj or {}).get("@odata.type") or ""
    return odata.rsplit(".", 1)[-1] or None


class DirectSpool:
    """Direct memberships on disk (a temporary SQLite file), so deriving transitive ones keeps
    memory flat however many memberships the tenant has; only one group's closure is in memory."""

    def __init__(self) -> None:
        self._db: Any = scratch_database()
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


class Item:
    """One GET in a batch: a leg's child URL for one parent (or a seed URL), retried and paged."""

    __slots__ = ("leg", "parent", "url", "attempts", "not_before")

    def __init__(self, leg: Leg, parent: dict[str, Any] | None, url: str):
        self.leg, self.parent, self.url, self.attempts, self.not_before = leg, parent, url, 0, 0.0


class Batcher:
    """Sends items 20 per $batch, up to BATCHES_IN_FLIGHT at once; yields (item, body) per page read.

    Retries 429 and 5xx items after their own Retry-After, queues each @odata.nextLink as a new item
    of the same parent, counts 404s (deleted since listed) and hands 403s to `refused`, which returns
    True to skip the item or False to fail the dataset."""

    def __init__(self, ctx: Context, ds: Dataset, refused: Any = None):
        self.ctx, self.ds, self.refused = ctx, ds, refused
        self.graph = ctx.graph
        self.stats = self.graph._stats(ds.name)
        self.batches = 0
        self.vanished: dict[str, int] = {}
        self._base_path = urlsplit(self.graph.base).path  # "/v1.0"

    async def _send(self, items: list[Item]) -> tuple[list[Item], Any]:
        body = orjson.dumps({"requests": [{"id": str(i), "method": "GET", "url": item.url}
                                          for i, item in enumerate(items)]})
        response = await self.graph.post_json("/$batch", body, self.ds.name)
        if response.status_code != 200:
            raise error_from(response.status_code, response.headers, response.content, "/$batch")
        return items, orjson.loads(response.content)

    def _relative(self, link: str) -> str:
        self.graph.check_link(link, self.ds.name)
        parts = urlsplit(link)
        path = parts.path[len(self._base_path):] if parts.path.startswith(self._base_path) else parts.path
        return f"{path}?{parts.query}" if parts.query else path

    async def run(self, items: Iterable[Item]) -> AsyncIterator[list[tuple[Item, dict[str, Any]]]]:
        """`items` is consumed lazily: only the items of the batches in flight, retries and next pages wait
        in memory, however many parents there are."""
        source = iter(items)
        pending: deque[Item] = deque()
        running: set[asyncio.Future[tuple[list[Item], Any]]] = set()

        def refill() -> None:
            while len(pending) < BATCH_SIZE * 4:
                item = next(source, None)
                if item is None:
                    return
                pending.append(item)

        try:
            refill()
            while pending or running:
                now = time.monotonic()
                while len(running) < BATCHES_IN_FLIGHT and pending:
                    ready = [pending.popleft() for _ in range(min(len(pending), BATCH_SIZE * 4))]
                    chosen = [i for i in ready if i.not_before <= now][:BATCH_SIZE]
                    pending.extendleft(reversed([i for i in ready if i not in chosen]))
                    if not chosen:
                        break
                    self.batches += 1
                    running.add(asyncio.ensure_future(self._send(chosen)))
                    refill()
                if not running:
                    await asyncio.sleep(max(0.0, min(i.not_before for i in pending) - time.monotonic()))
                    continue
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                out: list[tuple[Item, dict[str, Any]]] = []
                for task in done:
                    running.discard(task)
                    items_sent, payload = task.result()
                    answers = payload.get("responses") or []
                    if len(items_sent) != len(answers):
                        raise GraphError(502, "BatchIncomplete", f"$batch answered {len(answers)} of "
                                         f"{len(items_sent)} requests", path="/$batch")
                    for answer in answers:
                        self._answer(items_sent[int(answer["id"])], answer, pending, out)
                if out:
                    yield out
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _answer(self, item: Item, answer: dict[str, Any], pending: deque[Item],
                out: list[tuple[Item, dict[str, Any]]]) -> None:
        """One item's answer inside a $batch: its records out, its next page or its retry queued, or the
        dataset's error raised."""
        status = int(answer.get("status") or 0)
        body = answer.get("body") or {}
        headers = answer.get("headers") or {}
        if status == 200:
            out.append((item, body))
            next_link = body.get("@odata.nextLink")
            if next_link:
                pending.appendleft(Item(item.leg, item.parent, self._relative(next_link)))
        elif status == 404 and item.parent is not None:
            name = item.leg.name
            self.vanished[name] = self.vanished.get(name, 0) + 1  # deleted since it was listed
        elif status in RETRY_STATUSES:
            # The same policy as every other request (connector/graph/retry.py): one budget, the
            # item's own Retry-After, no wait past MAX_WAIT or the run's time limit.
            hinted = retry_after_seconds(next((v for k, v in headers.items() if k.lower() == "retry-after"), None))
            wait = hinted if hinted is not None else backoff(item.attempts)
            reason = give_up_reason(item.attempts, self.ctx.settings.max_retries, wait, hinted is not None,
                                    self.graph.deadline)
            if reason:
                error = error_from(status, headers, orjson.dumps(body), f"/$batch: {item.url.split('?')[0]}")
                error.message = f"{error.message} ({reason})"
                raise error
            item.attempts += 1
            self.stats.retries += 1
            if status == 429:
                self.stats.throttled += 1
                self.graph.scope(self.ds.name).throttled(wait)
                # Graph counts the item in its quota buckets like any request: they pause for every dataset.
                lower = {str(k).lower(): v for k, v in headers.items()}
                self.graph.pacer.pause(throttled_buckets(classify("GET", "/" + item.url.lstrip("/")), lower), wait)
            item.not_before = time.monotonic() + wait
            pending.append(item)
        else:
            error = error_from(status, headers, orjson.dumps(body), f"/$batch: {item.url.split('?')[0]}")
            if not (status == 403 and self.refused is not None and self.refused(item, error)):
                raise error


def _resolve(source: str, leg: Leg, parent: dict[str, Any] | None, child: dict[str, Any]) -> Any:
    """The value of a row source (see Leg): parent.x, parent.kind, child.x.y, child.@type, =literal."""
    if source.startswith("="):
        return source[1:]
    scope, _, path = source.partition(".")
    if scope == "parent" and path == "kind":
        return leg.parent_kind
    obj: Any = parent if scope == "parent" else child
    for part in path.split("."):
        if part == "@type":
            return _member_type(obj if isinstance(obj, dict) else None)
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _row(leg: Leg, parent: dict[str, Any] | None, child: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, source in leg.row:
        if source == "child.*":
            row.update(child)
        else:
            row[name] = _resolve(source, leg, parent, child)
    return row


async def leg_parents(ctx: Context, ds: Dataset, leg: Leg) -> list[dict[str, Any]]:
    """The leg's parent objects: id plus the kept properties (a few strings each; thousands, not millions)."""
    graph = ctx.graph
    query = "$select=" + ",".join(("id", *leg.keep)) + (f"&$top={leg.parent_top}" if leg.parent_top else "")
    parents: list[dict[str, Any]] = []
    async for page in graph.pages(leg.parent_builder, f"{graph.base}{leg.parents}?{query}", ds.name, prefetch=True):
        for record in page.records:
            parents.append({"id": sys.intern(record["id"]), **{k: record.get(k) for k in leg.keep}})
    return parents


def _items(leg: Leg, parents: list[dict[str, Any]] | None = None, seeds: tuple[str, ...] = ()) -> Iterator[Item]:
    """A leg's items, made when the batcher asks for them."""
    for url in seeds:
        yield Item(leg, None, url)
    for parent in parents or ():
        yield Item(leg, parent, leg.child.replace("{id}", parent["id"]))


def active_legs(ctx: Context, ds: Dataset, spec: FanOut) -> list[Leg]:
    """The legs to run: an optional leg whose permission is not granted is skipped with a warning."""
    legs = []
    for leg in spec.legs:
        missing = [group[0] for group in leg.requires if not ctx.granted.intersection(group)]
        if missing:
            perms = " and ".join(missing)
            ctx.warn("optional_permission_missing", ds.name,
                     f"{ds.name}: {leg.adds} not collected: grant {perms} to include them; the rest was collected.")
            ctx.extra.setdefault("notCollected", {})[leg.name] = f"needs {perms}"
            continue
        legs.append(leg)
    return legs


def warn_unreadable(ctx: Context, ds: Dataset, leg: Leg, parents: list[dict[str, Any]]) -> None:
    """Parents a leg cannot read without a permission the app lacks (groups with hidden membership without
    Member.Read.Hidden): warned in every run, whatever Graph answers for them. Graph was reported to leave their
    members out silently, with a 200, instead of refusing (microsoft-graph-docs #12552, #12285;
    msgraph-sdk-dotnet #1255), so an empty member list proves nothing; a 403 is handled by _Refusals."""
    if not leg.forbidden_if or not leg.forbidden_hint or leg.forbidden_hint in ctx.granted:
        return
    key, value = leg.forbidden_if
    ids = [p["id"] for p in parents if p.get(key) == value]
    ctx.notes.setdefault("unreadable", {})[leg.name] = ids
    if not ids:
        return
    ctx.extra.setdefault("unverifiable", {})[leg.name] = len(ids)
    ctx.warn("hidden_membership_not_granted", ds.name,
             f"{ds.name}: {len(ids)} {leg.parent_kind}(s) have {key} {value} and the app lacks {leg.forbidden_hint}: "
             f"Graph may list them as empty instead of refusing (reported in microsoft-graph-docs #12552, #12285 and "
             f"msgraph-sdk-dotnet #1255), so {leg.adds} are probably missing. Grant {leg.forbidden_hint} to collect "
             "them. " + PORTAL_STEP.format(perm=leg.forbidden_hint))


class _Refusals:
    """403s on parents a leg expects them for (groups with hidden membership, without Member.Read.Hidden):
    warn per parent and go on. A 403 on any other parent is a permission problem and fails the dataset."""

    def __init__(self, ctx: Context, ds: Dataset):
        self.ctx, self.ds = ctx, ds
        self.by_leg: dict[str, list[str]] = {}

    def __call__(self, item: Item, error: GraphError) -> bool:
        leg = item.leg
        if not leg.forbidden_if or item.parent is None or item.parent.get(leg.forbidden_if[0]) != leg.forbidden_if[1]:
            return False
        ids = self.by_leg.setdefault(leg.name, [])
        ids.append(item.parent["id"])
        if len(ids) <= WARNINGS_PER_LEG:
            self.ctx.warn(leg.forbidden_code or "item_refused", self.ds.name,
                          f"{self.ds.name}: Graph refused {leg.parent_kind} {item.parent['id']} ({error.code}); "
                          f"{leg.adds} need {leg.forbidden_hint}. The other {leg.parent_kind}s were collected.")
        return True

    def finish(self) -> None:
        for name, ids in self.by_leg.items():
            if len(ids) > WARNINGS_PER_LEG:
                leg = next(leg for leg in self.ds.fan_out.legs if leg.name == name)  # type: ignore[union-attr]
                self.ctx.warn(leg.forbidden_code or "item_refused", self.ds.name,
                              f"{self.ds.name}: {len(ids) - WARNINGS_PER_LEG} more {leg.parent_kind}s were refused "
                              f"the same way (all are listed in the manifest); grant {leg.forbidden_hint}.")
            self.ctx.extra.setdefault("refused", {})[name] = ids


@register("fan_out")
async def fan_out(ctx: Context, ds: Dataset) -> AsyncIterator[list[dict[str, Any]]]:
    """Rows of every leg of the dataset's FanOut declaration; for `derive="transitive"`, then the
    memberships reached only through nested groups."""
    spec = ds.fan_out
    assert spec is not None, f"{ds.name}: strategy fan_out needs a FanOut declaration"
    legs = active_legs(ctx, ds, spec)
    provided = {leg.provides for leg in legs if leg.provides}
    items: list[Iterable[Item]] = []  # per leg, made lazily: an Item exists only while it is pending
    parent_counts: dict[str, int] = {}
    total = await _count(ctx, ds, spec.count) if spec.count else None
    fine = bool(spec.fine_from and total is not None and total >= spec.fine_from)
    for leg in legs:
        if leg.seeds:
            seeds = leg.fine_seeds if fine and leg.fine_seeds else leg.seeds
            items.append(_items(leg, seeds=seeds))
            ctx.plan.update({"strategy": "chains", "chains": len(seeds)})
            continue
        parents = await leg_parents(ctx, ds, leg)
        parent_counts[leg.name] = len(parents)
        warn_unreadable(ctx, ds, leg, parents)
        items.append(_items(leg, parents=parents))
    refusals = _Refusals(ctx, ds)
    batcher = Batcher(ctx, ds, refusals)
    spool = DirectSpool() if spec.derive == "transitive" else None
    seen = [0]
    rows_out = 0
    try:
        async for out in leg_rows(batcher, (item for parts in items for item in parts), provided, seen):
            if spool is not None:
                spool.add([(r["groupId"], r["memberId"], r["memberType"]) for r in out])
            rows_out += len(out)
            yield out
        refusals.finish()
        if spool is not None:
            transitive = 0
            async for rows in derive_transitive(spool):
                transitive += len(rows)
                yield rows
            ctx.extra.update({"directMemberships": rows_out, "transitiveMemberships": transitive})
    finally:
        if spool is not None:
            spool.close()
    for leg in legs:
        if leg.count_as and leg.name in parent_counts:
            ctx.extra[leg.count_as] = parent_counts[leg.name]
            if batcher.vanished.get(leg.name):
                ctx.extra[f"{leg.count_as}DeletedDuringRun"] = batcher.vanished[leg.name]
    ctx.extra["batches"] = batcher.batches
    children = seen[0]
    if spec.count:
        ctx.extra["objectsRead"] = children
        if total is not None:
            ctx.extra["objectCount"] = total
            if total != children:
                ctx.warn("count_mismatch", ds.name,
                         f"{ds.name}: read {children} objects but {spec.count}/$count said {total} (eventually "
                         "consistent: objects created or deleted during the run, or names starting with a character "
                         "Entra does not allow).")


async def derive_transitive(spool: DirectSpool) -> AsyncIterator[list[dict[str, Any]]]:
    """Memberships reached only through nested groups, one group's closure in memory at a time."""
    out: list[dict[str, Any]] = []
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
                    out.append({"groupId": group, "memberId": member, "memberType": kind, "membership": "transitive"})
                if kind == "group" and member not in visited:
                    stack.append(member)
        if len(out) >= ROWS_PER_YIELD:
            yield out
            out = []
        await asyncio.sleep(0)
    if out:
        yield out


async def _count(ctx: Context, ds: Dataset, path: str) -> int | None:
    """The collection's size before reading it: it chooses coarse or fine chains, and the chains, which
    cover the collection by construction (every allowed first character), are checked against it."""
    try:
        return await ctx.graph.count(path, ds.name)
    except GraphError as exc:
        ctx.warn("count_unavailable", ds.name, f"{ds.name}: {path}/$count failed ({exc.code}); the chains were read "
                 "without a count to check them against.")
        return None


async def leg_rows(batcher: Batcher, items: Iterable[Item], provided: set[str],
                   seen: list[int] | None = None) -> AsyncIterator[list[dict[str, Any]]]:
    """The rows of the items' pages, as the declaration builds them: children of a type another leg provides
    are left to that leg (`provided`). `seen` counts the children read."""
    async for pages in batcher.run(items):
        out: list[dict[str, Any]] = []
        for item, body in pages:
            leg = item.leg
            for child in body.get("value") or []:
                if seen is not None:
                    seen[0] += 1
                kind = _member_type(child)
                if leg.child_types and kind not in leg.child_types:
                    continue
                if not leg.provides and kind in provided:
                    continue  # another leg lists these authoritatively
                if leg.when and _resolve(leg.when, leg, item.parent, child) is None:
                    continue
                out.append(_row(leg, item.parent, child))
        if out:
            yield out


def items_of(leg: Leg, parents: list[dict[str, Any]]) -> Iterator[Item]:
    return _items(leg, parents=parents)


def refusals_for(ctx: Context, ds: Dataset) -> Any:
    """The 403 handling of a fan-out (groups with hidden membership): for a Batcher made elsewhere."""
    return _Refusals(ctx, ds)


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
