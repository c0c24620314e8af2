"""Partitions of the users by userPrincipalName prefix, of about equal size, within Graph's limits.

Why sizes matter: partitions are paged as concurrent @odata.nextLink chains, so the run waits for the
longest chain. One partition per start character made the commonest initial (9% of users in the
simulator, similar in real name lists) a chain of 786 pages at 1,000,000 users: four minutes alone.

What Graph allows (graph-facts §11):
- A UPN's local part holds A-Z a-z 0-9 ' . - _ ! # ^ ~ and ends at `@`. Whether startswith()
  compares case-sensitively the docs do not say, so a prefix is always asked in every case
  combination ('ab' is ab, aB, Ab and AB): right either way.
- `or` takes at most 15 clauses in the default query mode, so a partition holds at most 15 prefixes
  (in all their case combinations) and a prefix at most two characters (three letters would be 8).
  Range filters on userPrincipalName are not documented for the default mode.

How sizes are known: one page of `/users?$select=userPrincipalName&$top=999` (one request per run,
shared by the datasets that plan) is a sample of the tenant's names. A start character whose estimated
share is larger than a partition should be is split by its second character (every allowed character,
and `@` for a one-character local part, so every UPN still matches exactly one piece). The pieces are
packed largest first into the lightest partition with room (LPT), and paged largest first. The
sample only shapes the balance: Graph does not document its paging order, so a sample that is not
representative makes chains uneven, never data wrong (the union is checked by id and `$count`).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from connector.catalog.datasets import case_variants

LETTERS = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
SYMBOLS = "'.-_!#^~"  # allowed in a UPN, rare as its first character
START = LETTERS + DIGITS + SYMBOLS  # the 44 start characters, letters folded to lower case
END = "@"  # after the local part's last character
MAX_CLAUSES = 15  # Graph's limit on `or` clauses in a directory $filter (default query mode)
MAX_DEPTH = 2  # three letters in every case would be 8 clauses: a partition could hold one
# Splitting costs requests: every partition ends on a part-filled page (about half a page wasted), and
# the recount one more. Keep the expected waste near 4% of the minimum: partitions = 8% of the pages, less 3.
WASTE_SHARE = 0.08
MIN_PARTITIONS = 5  # 70 start clauses (44 characters, letters in both cases) need 5 filters of 15
CHAINS_PER_SLOT_TARGET = 8  # partitions per chain paged at once: small pieces end together (LPT)
SAMPLE_SIZE = 999  # one page of userPrincipalNames; Graph's maximum $top for users
SMOOTHING = 0.5  # pseudo-count for a prefix the sample did not see: it may still hold users


variants = case_variants  # every case combination of a folded prefix: the exact startswith() arguments


def clauses(prefix: str) -> int:
    return 2 ** sum(ch in LETTERS for ch in prefix)


def partition_budget(pages: int) -> int:
    """How many partitions the request budget allows; 0 means the plain chain (fewer than 5 pay)."""
    allowed = int(WASTE_SHARE * pages - 3)
    return allowed if allowed >= MIN_PARTITIONS else 0


class Sample:
    """Lower-cased UPNs of a sample, sorted, so the hits of any prefix are two bisections."""

    def __init__(self, upns: Iterable[str | None]):
        received = [u.lower() for u in upns if isinstance(u, str) and u]
        self.names = sorted(received)
        self.in_name_order = received == self.names  # a page sorted by name is no sample of the tenant

    def __len__(self) -> int:
        return len(self.names)

    def hits(self, prefix: str) -> int:
        names = self.names
        lo = bisect.bisect_left(names, prefix)
        return bisect.bisect_left(names, prefix + "\U0010ffff", lo) - lo


@dataclass
class Partition:
    prefixes: list[str] = field(default_factory=list)  # folded
    weight: float = 0.0  # estimated users
    clauses: int = 0

    def starts(self) -> list[str]:
        return [v for p in self.prefixes for v in variants(p)]


def pieces(total: int, sample: Sample | None, limit: float) -> list[tuple[float, str]]:
    """(estimated users, folded prefix) covering every UPN once; pieces above `limit` are split by
    their next character down to MAX_DEPTH. Without a sample nothing is split (the shares are unknown)."""
    out: list[tuple[float, str]] = []

    def place(prefixes: list[str], users: float) -> None:
        hits = [sample.hits(p) for p in prefixes] if sample is not None else [0] * len(prefixes)
        share = users / (sum(hits) + SMOOTHING * len(prefixes))
        for prefix, h in zip(prefixes, hits, strict=True):
            estimate = share * (h + SMOOTHING)
            if sample is None or estimate <= limit or len(prefix) >= MAX_DEPTH or prefix.endswith(END):
                out.append((estimate, prefix))
            else:
                place([prefix + c for c in START] + [prefix + END], estimate)

    place(list(START), total)
    return out


def pack(items: list[tuple[float, str]], wanted: int) -> list[Partition]:
    """Largest piece first into the lightest partition with clause room (LPT); heaviest partition first."""
    need = -(-sum(clauses(p) for _, p in items) // MAX_CLAUSES)
    parts = [Partition() for _ in range(max(min(wanted, len(items)), need, 1))]
    heap = [(0.0, i) for i in range(len(parts))]
    for estimate, prefix in sorted(items, key=lambda item: (-item[0], item[1])):
        cost = clauses(prefix)
        skipped = []
        while heap and parts[heap[0][1]].clauses + cost > MAX_CLAUSES:
            skipped.append(heapq.heappop(heap))
        if heap:
            _, i = heapq.heappop(heap)
        else:
            parts.append(Partition())
            i = len(parts) - 1
        part = parts[i]
        part.prefixes.append(prefix)
        part.weight += estimate
        part.clauses += cost
        heapq.heappush(heap, (part.weight, i))
        for entry in skipped:
            heapq.heappush(heap, entry)
    used = [p for p in parts if p.prefixes]
    return sorted(used, key=lambda p: -p.weight)


def plan_partitions(total: int, top: int, chains: int, sample: Sample | None) -> list[Partition]:
    """Partitions for `total` users at `top` per page, `chains` paged at once; [] means the plain chain.

    Aims at CHAINS_PER_SLOT_TARGET partitions per chain; if splitting the big start characters would
    need more partitions than the request budget allows, pieces may grow until it fits."""
    pages = -(-total // top)
    budget = partition_budget(pages)
    if not budget:
        return []
    wanted = min(budget, CHAINS_PER_SLOT_TARGET * max(1, chains))
    limit = total / wanted
    while True:
        parts = pack(pieces(total, sample, limit), -(-total // int(limit)))
        if len(parts) <= budget or limit >= total:
            return parts
        limit *= 1.25
