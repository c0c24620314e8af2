"""Group memberships by delta (`group_members` with Dataset.delta_merge="memberships"): the previous snapshot's
direct memberships with Graph's membership changes applied, and the transitive ones derived again from them
with the code a full read uses (connector/collect/batch.py), so the file is what a full read would give.

Two delta rounds, both kept in the dataset's own link state (connector/store/deltalinks.py, `links`):
- `/groups/delta?$select=id,visibility,members`: `members@delta` lists the members added to a group and, with
  `@removed`, those removed; a group with many changes comes in several objects, each with a slice, and an
  object may come again (concepts/delta-query-groups.md; delta-query-overview.md: "The same resource may be
  returned more than once"): the last state of each (group, member) pair wins, which merges slices and repeats
  exactly. A group `@removed` takes its rows with it, as a group and as a member of others.
- `/users/delta?$select=id`: users deleted. That deleting a user shows in `members@delta` of its groups is not
  documented (a Q&A answer says it does, a Stack Exchange question that it does not) [UNVERIFIED]: the
  connector takes the reading least favourable to it and removes a deleted user's rows itself. A user restored
  with its memberships is not covered either way [UNVERIFIED]; the weekly reconcile (M365_RECONCILE_DAYS) is
  the safety net.
Its own link rather than the `groups` dataset's round: a run may collect one dataset without the other, and a
dataset that fails must keep its own base run; the round with members costs a page per 200 changed groups.

What delta does not give is read as the full read reads it:
- Service principals: v1.0 `/groups/{id}/members` does not list them, so the full read takes them from
  `/servicePrincipals/{id}/memberOf` (the `servicePrincipalMemberships` leg). That `members@delta` lists them is
  not documented, so the leg is read again every run (one request per 20 service principals plus their list)
  and service principals in `members@delta` are ignored, as the full read ignores them in `members`.
- Hidden membership without Member.Read.Hidden: the full read gets no members for such groups (Graph answers an
  empty list or 403: connector/collect/batch.py) and warns. The delta path keeps the set of such groups in its
  link state, drops their rows and their `members@delta`, warns the same, and reads the members of a group that
  stops hiding them with the full read's leg. Whether the permission is granted is part of the link's query, so
  a change of permissions starts a full read.
Memory: only the changes are held (pairs, removed ids); the previous rows are streamed from the baseline file and
the direct rows wait in the same SQLite spool as a full read's.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import orjson

from connector.catalog.datasets import Dataset, Leg
from connector.collect.batch import (
    Batcher,
    DirectSpool,
    active_legs,
    derive_transitive,
    items_of,
    leg_parents,
    leg_rows,
    refusals_for,
    warn_unreadable,
)
from connector.collect.changes import Baseline, ChangeLines, key_of
from connector.collect.strategy import Context, Records
from connector.rawjson import RawRecord
from connector.spool import KeyValueSpool

# (delta path, request builder, query) of each round; the first is the dataset's own (Dataset.delta).
ROUNDS = (("/groups/delta", "groups", "$select=id,visibility,members"), ("/users/delta", "users", "$select=id"))
ROWS_PER_YIELD = 5000


class _Row(msgspec.Struct):
    groupId: str | None = None  # noqa: N815 (Graph's names)
    memberId: str | None = None  # noqa: N815
    memberType: str | None = None  # noqa: N815
    membership: str | None = None


_ROW = msgspec.json.Decoder(_Row)


def _type(obj: dict[str, Any]) -> str | None:
    return (obj.get("@odata.type") or "").rsplit(".", 1)[-1] or None


class Memberships:
    """One run's membership changes and the records they give."""

    def __init__(self, ds: Dataset):
        assert ds.fan_out is not None, f"{ds.name}: delta_merge 'memberships' needs the fan-out declaration"
        self.ds = ds
        self.direct_leg: Leg = ds.fan_out.legs[0]
        self.provided = {leg.provides for leg in ds.fan_out.legs if leg.provides}
        self.pairs: dict[tuple[str, str], tuple[str | None, bool]] = {}  # (group, member) -> (type, removed)
        self.groups_removed: set[str] = set()
        self.visibility: dict[str, Any] = {}  # groups in the round -> their visibility now
        self.users_removed: set[str] = set()
        self.hidden_after: list[str] = []

    @staticmethod
    def query(granted: frozenset[str], ds: Dataset) -> str:
        """What the link's records depend on: the rounds' queries and the permissions that change the rows."""
        hint = ds.fan_out.legs[0].forbidden_hint if ds.fan_out else ""
        perms = sorted({hint} & granted | {r for leg in (ds.fan_out.legs if ds.fan_out else ()) for group in
                                           leg.requires for r in group} & granted)
        return "|".join(q for _p, _b, q in ROUNDS) + "|" + ",".join(perms)

    def take(self, path: str, objects: list[dict[str, Any]]) -> None:
        """One page of a round, in order: the last state of each pair or object wins."""
        if path == "/users/delta":
            for obj in objects:
                if "@removed" in obj:
                    self.users_removed.add(obj["id"])
                else:
                    self.users_removed.discard(obj["id"])  # created again, or restored, later in the round
            return
        for obj in objects:
            gid = sys.intern(obj["id"])
            if "@removed" in obj:
                self.groups_removed.add(gid)
                continue
            self.groups_removed.discard(gid)
            if "visibility" in obj or gid not in self.visibility:
                self.visibility[gid] = obj.get("visibility")
            for member in obj.get("members@delta") or ():
                if isinstance(member, dict) and isinstance(member.get("id"), str):
                    self.pairs[(gid, sys.intern(member["id"]))] = (_type(member), "@removed" in member)

    def hidden(self, before: list[str]) -> tuple[set[str], list[str]]:
        """The groups whose members cannot be read now (without Member.Read.Hidden), and those that could not be
        read before but can now (to read in full)."""
        leg = self.direct_leg
        key, value = leg.forbidden_if
        now = set(before) - self.groups_removed
        opened = []
        for gid, visibility in self.visibility.items():
            if visibility == value:
                now.add(gid)
            elif gid in now:
                now.discard(gid)
                opened.append(gid)
        assert key == "visibility"
        return now, sorted(opened)

    async def records(self, ctx: Context, baseline: Baseline, hidden_before: list[str] | None,
                      out: ChangeLines | None = None) -> AsyncIterator[Records]:
        """The previous direct rows with the changes applied, the re-read ones, then the transitive rows. With
        `out`, the changes file: a kept previous row is the same line, so only the rows dropped from the previous
        file and those made afresh (added, read again, transitive) are compared (Volatile)."""
        leg = self.direct_leg
        readable = leg.forbidden_hint in ctx.granted
        hidden, opened = (set(), []) if readable else self.hidden(hidden_before or [])
        self.hidden_after = sorted(hidden)
        gone = self.groups_removed | self.users_removed
        unread = hidden | set(opened)  # no rows from before or from the round: none, or read again in full
        spool = DirectSpool()
        volatile = Volatile(self.ds, out) if out is not None else None
        direct = transitive = 0
        try:
            async for batch in baseline.batches():
                kept, dropped = await asyncio.to_thread(self._sort, batch, gone, unread)
                if volatile is not None:
                    volatile.dropped(dropped)
                spool.add([(r["groupId"], r["memberId"], r["memberType"]) for r in kept])
                direct += len(kept)
                if kept:
                    yield kept
            added: Records = []
            for (gid, mid), (kind, removed) in self.pairs.items():
                if removed or kind in self.provided or gid in gone or mid in gone or gid in unread:
                    continue
                added.append({"groupId": gid, "memberId": mid, "memberType": kind, "membership": "direct"})
            for i in range(0, len(added), ROWS_PER_YIELD):
                part = added[i:i + ROWS_PER_YIELD]
                spool.add([(r["groupId"], r["memberId"], r["memberType"]) for r in part])
                yield await self._fresh(volatile, part)
            direct += len(added)
            async for rows in self._read_again(ctx, opened, hidden):
                spool.add([(r["groupId"], r["memberId"], r["memberType"]) for r in rows])
                direct += len(rows)
                yield await self._fresh(volatile, rows)
            async for rows in derive_transitive(spool):
                transitive += len(rows)
                yield await self._fresh(volatile, rows)
            if volatile is not None:
                await volatile.finish()
        finally:
            spool.close()
            if volatile is not None:
                volatile.close()
        ctx.extra.update({"directMemberships": direct, "transitiveMemberships": transitive,
                          "membershipChanges": len(self.pairs), "groupsChanged": len(self.visibility),
                          "groupsRemoved": len(self.groups_removed), "usersRemoved": len(self.users_removed),
                          "groupsReadAgain": len(opened)})

    def _sort(self, batch: list[bytes], gone: set[str], unread: set[str]) -> tuple[Records, list[tuple[str, bytes]]]:
        """Previous lines kept (as they were) and dropped (key, line): the CPU-bound part, run in a thread."""
        decode = _ROW.decode
        kept: Records = []
        dropped: list[tuple[str, bytes]] = []
        pairs, provided = self.pairs, self.provided
        for line in batch:
            row = decode(line)
            gid, mid, kind = row.groupId, row.memberId, row.memberType
            if row.membership != "direct" or kind in provided or gid in gone or mid in gone or gid in unread \
                    or (gid, mid) in pairs:
                dropped.append((f"{gid}|{mid}|{row.membership}", line))
                continue
            kept.append(RawRecord({"groupId": gid, "memberId": mid, "memberType": kind, "membership": "direct"},
                                  line))
        return kept, dropped

    @staticmethod
    async def _fresh(volatile: Volatile | None, rows: Records) -> Records:
        if volatile is not None:
            await volatile.fresh(rows)
        return rows

    async def _read_again(self, ctx: Context, opened: list[str], hidden: set[str]) -> AsyncIterator[Records]:
        """The legs delta does not cover, read as the full read does: groups that stopped hiding their members,
        and the service principals' memberships (every run)."""
        ds, spec = self.ds, self.ds.fan_out
        assert spec is not None
        legs = active_legs(ctx, ds, spec)
        leg = self.direct_leg
        if leg.forbidden_hint not in ctx.granted:
            key, value = leg.forbidden_if
            warn_unreadable(ctx, ds, leg, [{"id": g, key: value} for g in sorted(hidden)])
        refusals = refusals_for(ctx, ds)
        batcher = Batcher(ctx, ds, refusals)
        if opened and leg in legs:
            parents = [{"id": g, **{k: self.visibility.get(g) if k == "visibility" else None for k in leg.keep}}
                       for g in opened]
            async for rows in leg_rows(batcher, items_of(leg, parents), self.provided):
                yield rows
        for other in legs:
            if other is leg:
                continue
            parents = await leg_parents(ctx, ds, other)
            async for rows in leg_rows(batcher, items_of(other, parents), self.provided):
                yield rows
        refusals.finish()
        ctx.extra["batches"] = batcher.batches


class Volatile:
    """The changes file of a membership delta run: previous rows dropped (key -> line, a spool: disk past 250,000)
    against rows made afresh; a fresh row with a dropped twin of the same content is no change, one without is
    added, a dropped row no fresh row matched is removed. Kept rows are the previous lines, unchanged."""

    def __init__(self, ds: Dataset, out: ChangeLines):
        self.ds, self.out = ds, out
        self.gone = KeyValueSpool()

    def dropped(self, rows: list[tuple[str, bytes]]) -> None:
        self.gone.put_many([(key, line.decode()) for key, line in rows])

    async def fresh(self, rows: Records) -> None:
        keys = [key_of(self.ds, r) for r in rows]
        twins = dict(self.gone.get_many(keys))
        for key, row in zip(keys, rows, strict=True):
            old = twins.get(key)
            if old is None:
                await self.out.added(row)
            else:
                before = orjson.loads(old)
                if before != row:
                    await self.out.changed(before, row)
        self.gone.delete_many(k for k in keys if k in twins)

    async def finish(self) -> None:
        for line in self.gone.values():
            await self.out.removed(orjson.loads(line))
        await self.out.flush()

    def close(self) -> None:
        self.gone.close()
