"""Users by delta with licences kept current (`users`, Dataset.delta_merge="licences").

api/user-delta.md: "changes to the licenseAssignmentStates property are currently not tracked". That property
changes with group-based licensing (a user joins or leaves a group that assigns licences, or the group's
licences change) and with the assignment's processing (an error resolved), neither of which need make the user
appear in /users/delta. Whether a change of `assignedLicenses` and `assignedPlans` made by group-based licensing
does is not documented either [UNVERIFIED]: the reading least favourable to the connector, it does not. So a
delta run follows /users/delta for every tracked property and reads again, in full and by id, the users whose
licences may have changed without it:
- users who joined or left a group that assigns licences (group-based licensing applies to direct members:
  Entra docs, concept-group-based-licensing.md), from a second round, `/groups/delta?$select=id,
  assignedLicenses,members` (concepts/delta-query-groups.md), kept in this dataset's own link state so that a
  run collecting `users` alone, or one whose `group_members` failed, is not tied to another dataset's base;
- users whose previous licenseAssignmentStates were not all plain `Active` without error (an error may resolve);
- users already in the /users/delta round need nothing more: its objects carry the current state of every
  selected property (user-delta.md, "return the same properties as initial delta request").
The read again is `GET /users?$filter=id in ('…',…)&$select=…`: `in` on id (filter-query-parameter.md;
resources/user.md: id supports $filter with `eq` and `in`), 15 values a request (a default-mode directory filter
takes at most 15 clauses: graph-facts §11; whether each value of `in` counts as one is not documented, taken so),
20 requests a `$batch` (concepts/json-batching.md): 300 users a request.

Read in full instead, with the reason in the manifest (`delta.reason`): when a group's assignedLicenses changed,
when a licensing group was deleted (every member's licences may change: their ids are not in this dataset), or
when the candidates would cost more requests than the listing. The licensing groups (id and a hash of
assignedLicenses) are kept in the link state; a full read lists them (`/groups?$select=id,assignedLicenses`,
one request per 999 groups) for the next run. Memory: the candidates' ids and records only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson

from connector.catalog.datasets import Dataset, Leg
from connector.collect.batch import BATCH_SIZE, Batcher, Item
from connector.collect.changes import Baseline, record_hash
from connector.collect.strategy import Context

GROUP_ROUND = ("/groups/delta", "groups", "$select=id,assignedLicenses,members")
IDS_PER_REQUEST = 15
LISTING_PAGE = 999  # the users listing's page ($top=999, api/user-list.md)
_LEG = Leg(name="licencesReadAgain", child="", row=())


def licence_hash(assigned: Any) -> int | None:
    """A group's assignedLicenses as a number (None when it assigns none)."""
    return record_hash({"l": assigned}) if assigned else None


def settled(record: dict[str, Any]) -> bool:
    """Every licence assignment Active without error: nothing pending that could change unseen."""
    return all(isinstance(st, dict) and st.get("state") == "Active" and st.get("error") in (None, "None")
               for st in record.get("licenseAssignmentStates") or ())


def plainly_settled(line: bytes) -> bool:
    """A cheap look at a JSON line: every `state` Active and every `error` "None" or null (a quote inside a string
    value is escaped, so these bytes are the properties' own). False means: parse it and look (settled)."""
    return line.count(b'"state":"') == line.count(b'"state":"Active"') and \
        line.count(b'"error":') == line.count(b'"error":"None"') + line.count(b'"error":null')


class Licences:
    """One run's licensing changes: what the groups round says, and the users to read again."""

    def __init__(self, ds: Dataset):
        self.ds = ds
        self.groups_now: dict[str, int | None] = {}  # groups in the round -> licence hash now
        self.groups_removed: set[str] = set()
        self.joined_or_left: dict[str, set[str]] = {}  # group -> users who joined or left it
        self.licensed_after: dict[str, int] | None = None  # for the next run's link state
        self.summary: dict[str, Any] = {}

    def take_groups(self, objects: list[dict[str, Any]]) -> None:
        for obj in objects:
            gid = obj["id"]
            if "@removed" in obj:
                self.groups_removed.add(gid)
                continue
            self.groups_removed.discard(gid)
            if "assignedLicenses" in obj or gid not in self.groups_now:
                self.groups_now[gid] = licence_hash(obj.get("assignedLicenses"))
            for member in obj.get("members@delta") or ():
                if isinstance(member, dict) and (member.get("@odata.type") or "").endswith(".user"):
                    self.joined_or_left.setdefault(gid, set()).add(member["id"])

    async def list_groups(self, ctx: Context) -> None:
        """The licensing groups now (a full read's, for the next run)."""
        graph, found = ctx.graph, {}
        url = f"{graph.base}/groups?$select=id,assignedLicenses&$top={LISTING_PAGE}"
        async for page in graph.pages("groups", url, self.ds.name):
            for group in page.records:
                digest = licence_hash(group.get("assignedLicenses"))
                if digest is not None:
                    found[group["id"]] = digest
        self.licensed_after = found

    def changed_groups(self, before: dict[str, int]) -> list[str]:
        """Licensing groups whose licences changed, appeared or were deleted since the previous run."""
        out = [g for g, now in self.groups_now.items() if now != before.get(g)]
        return sorted(out + [g for g in self.groups_removed if g in before])

    async def candidates(self, baseline: Baseline, before: dict[str, int],
                         in_round: dict[str, Any]) -> tuple[set[str], int]:
        """Users to read again, and how many records the previous snapshot has (for the listing's cost)."""
        found = {u for g, users in self.joined_or_left.items() if g in before for u in users}
        records = 0
        async for batch in baseline.batches():
            records += len(batch)
            for line in batch:
                if not plainly_settled(line):
                    record = orjson.loads(line)
                    if not settled(record):
                        found.add(record["id"])
        return {u for u in found if u not in in_round}, records

    @staticmethod
    def cost(candidates: int) -> int:
        return math.ceil(math.ceil(candidates / IDS_PER_REQUEST) / BATCH_SIZE)

    async def read_again(self, ctx: Context, users: set[str], into: dict[str, Any],
                         normalise: Callable[[list[dict[str, Any]]], Any] | None) -> int:
        """The users' current records, by id, into `into` (the round's changes); how many came back."""
        ordered = sorted(users)
        select = ",".join(self.ds.select)
        items = []
        for i in range(0, len(ordered), IDS_PER_REQUEST):
            ids = ",".join(f"'{u}'" for u in ordered[i:i + IDS_PER_REQUEST])
            items.append(Item(_LEG, None, f"/users?$filter=id in ({ids})&$select={select}"))
        batcher = Batcher(ctx, self.ds)
        got = 0
        selected = [p for p in self.ds.select if p != "id"]
        async for pages in batcher.run(items):
            for _item, body in pages:
                records = [{"id": u["id"], **{p: u.get(p) for p in selected}} for u in body.get("value") or ()
                           if isinstance(u, dict) and isinstance(u.get("id"), str)]
                if normalise is not None and records:
                    normalise(records)
                for record in records:
                    into[record["id"]] = record
                got += len(records)
        self.summary["licenceBatches"] = batcher.batches
        return got
