"""The tenant's compact user index: every user's UPN (unique, case-insensitively), lookups by id and
UPN, seats used per SKU, and what tests change while a client pages (renames, deletions). Prefix
searches over the sorted UPNs answer ``startswith(userPrincipalName, ...)`` filters.

Users are generated from ``(seed, index)`` on demand, so a 200,000-user tenant costs only this index
in memory.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import re
import threading
from functools import lru_cache

from .licensing import Licences
from .people import (
    FIRST_NAME_FORMS,
    GUEST_DOMAINS,
    KIND_GUEST,
    KIND_MEMBER,
    KIND_SERVICE,
    LAST_NAME_FORMS,
    SERVICE_ACCOUNTS,
)
from .seeded import digest, guid

# graph-facts §11 (DOCS resources/user.md, userPrincipalName; Entra's username policies): the part before
# the @ may hold only A-Z a-z 0-9 and ' . - _ ! # ^ ~, and may not end with a period.
UPN_LOCAL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'.-_!#^~"
UPN_LOCAL = re.compile(r"[A-Za-z0-9'.\-_!#^~]*[A-Za-z0-9'\-_!#^~]")


class UserIndex:
    """UPNs and lookups of one tenant's users; safe to share between threads. Built once, on first use."""

    def __init__(self, seed: int, user_count: int, domains: tuple[str, ...], upn_initials: str,
                 licences: Licences, pending: int = 0) -> None:
        self.seed = seed
        # Users `user_count - pending` onwards are not created yet: a test or benchmark creates them one by one
        # (simulator/changes.py), so the users that exist at start are the same with or without them.
        self.user_count = user_count
        self.created = user_count - pending
        self.domains = domains
        self.initial_domain = domains[0]
        self.upn_initials = upn_initials
        self.licences = licences
        self._lock = threading.Lock()
        self._upns: list[str] | None = None
        self._lower_upns: list[str] | None = None
        self._by_upn: dict[str, int] | None = None
        self._by_id: dict[str, int] | None = None
        self._consumed: dict[str, int] | None = None
        # Changes made while clients page (tests of races): index -> new UPN, deleted indexes.
        self._renamed: dict[int, str] = {}
        self._deleted: set[int] = set(range(self.created, user_count))
        self._sorted_names: dict[bool, tuple[list[str], list[int]]] = {}
        self.version = 0

    def _base_upn(self, index: int, kind: int, f: str, lst: str, style: int, dom: int) -> tuple[str, str]:
        """(local part, domain) before de-duplication, from the user's digest-derived traits."""
        if kind == KIND_GUEST:
            return f"{f}.{lst}_{GUEST_DOMAINS[dom % len(GUEST_DOMAINS)]}#EXT#", self.initial_domain
        n_domains = len(self.domains)
        domain = self.domains[0] if dom < 40 or n_domains == 1 else self.domains[1 + dom % (n_domains - 1)]
        if kind == KIND_SERVICE:
            return f"{SERVICE_ACCOUNTS[style % len(SERVICE_ACCOUNTS)]}{index % 1000:03d}", domain
        if style < 100:
            local = f"{f}.{lst}"
        elif style < 150:
            local = f"{f[0]}{lst}"
        elif style < 190:
            local = f"{f}{lst[0]}"
        elif style < 205:
            local = f"{f}_{lst}"
        elif style < 215:
            local = f"{lst}.{f}"  # surname first: some start with symbols, like 'thooft.jan
        elif style < 240:
            local = f"{f}-{lst}"
        else:
            local = f"{style % 10}{f}.{lst}"  # UPNs starting with a digit exist in real tenants
        return local, domain

    def _build_index(self) -> None:
        """UPNs (unique, case-insensitively) and SKU consumption; about 1.5 s for 200,000 users, done once."""
        if self._upns is not None:
            return
        with self._lock:
            if self._upns is not None:
                return
            gc_was_enabled = gc.isenabled()
            gc.disable()  # hundreds of thousands of small objects: collections would double the time
            try:
                self._build_index_locked()
            finally:
                if gc_was_enabled:
                    gc.enable()

    def _build_index_locked(self) -> None:
        upns: list[str] = []
        lower: list[str] = []
        by_upn: dict[str, int] = {}
        next_suffix: dict[str, int] = {}  # base UPN -> the suffix to try next (keeps 1,000,000 users linear)
        consumed = dict.fromkeys(self.licences.sku_by_key, 0)
        seed, base_upn, combo_of, grants = self.seed, self._base_upn, self.licences.combo, self.licences.grants
        n_first, n_last = len(FIRST_NAME_FORMS), len(LAST_NAME_FORMS)
        initials, n_initials = self.upn_initials, len(self.upn_initials)
        valid = UPN_LOCAL.fullmatch
        for i in range(self.user_count):
            d = hashlib.blake2b(f"{seed}:user:{i}".encode(), digest_size=32).digest()
            kind = KIND_GUEST if d[4] < 14 else KIND_SERVICE if d[4] < 18 else KIND_MEMBER
            f = FIRST_NAME_FORMS[((d[0] << 8) | d[1]) % n_first][1]
            lst = LAST_NAME_FORMS[((d[2] << 8) | d[3]) % n_last][1]
            local, domain = base_upn(i, kind, f, lst, d[5], d[6])
            if n_initials:
                local = initials[i % n_initials] + local
            if not valid(local):
                raise ValueError(f"simulated user {i}: {local!r} has a character Entra does not allow in a UPN")
            upn = f"{local}@{domain}"
            key = upn.lower()
            if key in by_upn:
                base = key
                n = next_suffix.get(base, 2)
                while True:
                    if kind == KIND_GUEST:
                        head, tail = local.split("_", 1)
                        upn = f"{head}{n}_{tail}@{domain}"
                    else:
                        upn = f"{local}{n}@{domain}"
                    key = upn.lower()
                    n += 1
                    if key not in by_upn:
                        break
                next_suffix[base] = n
            by_upn[key] = i
            upns.append(upn)
            lower.append(key)
            combo = combo_of(i, kind, d)
            if combo and i < self.created:  # seats held at start (users created later are not counted)
                for grant in grants(i, kind, combo):
                    if grant.assigned:
                        consumed[grant.sku] += 1
        self._lower_upns = lower
        self._by_upn = by_upn
        self._consumed = consumed
        self._upns = upns

    def user_id(self, index: int) -> str:
        """Object id of user ``index`` (cheap; no index needed)."""
        return guid(digest(self.seed, f"user:{index}")[16:])

    def upn(self, index: int) -> str:
        """userPrincipalName of user ``index``."""
        self._build_index()
        assert self._upns is not None
        return self._renamed.get(index) or self._upns[index]

    def invited_upn(self, index: int) -> str:
        """The UPN user ``index`` was created with (a guest's keeps its invitation's external address)."""
        self._build_index()
        assert self._upns is not None
        return self._upns[index]

    def exists(self, index: int) -> bool:
        return 0 <= index < self.user_count and index not in self._deleted

    def index_of(self, key: str) -> int | None:
        """Index of the user with this object id or UPN (case-insensitive), else None."""
        self._build_index()
        assert self._by_upn is not None
        if self._by_id is None:
            with self._lock:
                if self._by_id is None:
                    self._by_id = {self.user_id(i): i for i in range(self.user_count)}
        found = self._by_id.get(key.lower())
        if found is None:
            found = self._by_upn.get(key.lower())
        return found if found is not None and self.exists(found) else None

    # ------------------------------------------------------------------ changes while paging (tests)

    def rename(self, index: int, upn: str) -> None:
        """Change a user's UPN, as an admin would in the middle of a collection."""
        local = upn.split("@", 1)[0]
        if not UPN_LOCAL.fullmatch(local):
            raise ValueError(f"{upn!r} has a character Entra does not allow in a UPN")
        self._build_index()
        assert self._by_upn is not None
        with self._lock:
            self._by_upn.pop(self.upn(index).lower(), None)
            self._by_upn[upn.lower()] = index
            self._renamed[index] = upn
            self.version += 1

    def delete(self, index: int) -> None:
        """Delete a user (it disappears from lists, counts and lookups)."""
        with self._lock:
            self._deleted.add(index)
            self.version += 1

    def create(self, index: int) -> None:
        """Create a user that was pending (it appears in lists, counts and lookups)."""
        with self._lock:
            self._deleted.discard(index)
            self.version += 1

    def touch(self) -> None:
        """A user's properties changed (render caches are emptied)."""
        with self._lock:
            self.version += 1

    @property
    def live_count(self) -> int:
        return self.user_count - len(self._deleted)

    def all_indexes(self) -> range | tuple[int, ...]:
        """Every existing user's index, in paging order."""
        if not self._deleted:
            return range(self.user_count)
        if self.created == self.user_count - len(self._deleted) and not any(i < self.created for i in self._deleted):
            return range(self.created)
        return tuple(i for i in range(self.user_count) if i not in self._deleted)

    def prefix_matches(self, prefixes: tuple[str, ...], case_sensitive: bool = False) -> tuple[int, ...]:
        """Indexes (in paging order) of users whose UPN starts with any prefix (case-insensitively unless
        asked otherwise)."""
        return self._prefix_matches(prefixes, case_sensitive, self.version)

    @lru_cache(maxsize=256)  # noqa: B019 - the tenant lives as long as the simulator
    def _prefix_matches(self, prefixes: tuple[str, ...], case_sensitive: bool, version: int) -> tuple[int, ...]:
        self._build_index()
        assert self._lower_upns is not None and self._upns is not None
        keys, order = self._name_order(case_sensitive)
        wanted = prefixes if case_sensitive else tuple(p.lower() for p in prefixes)
        found_set: set[int] = set()
        for prefix in set(wanted):  # each prefix is a run of the names in sorted order
            lo = bisect.bisect_left(keys, prefix)
            found_set.update(order[lo:bisect.bisect_left(keys, prefix + "\U0010ffff", lo)])
        found = sorted(found_set)
        if self._renamed or self._deleted:
            keep = set(found)
            for i, upn in self._renamed.items():
                if (upn if case_sensitive else upn.lower()).startswith(wanted):
                    keep.add(i)
                else:
                    keep.discard(i)
            found = sorted(keep - self._deleted)
        return tuple(found)

    def _name_order(self, case_sensitive: bool) -> tuple[list[str], list[int]]:
        """The original UPNs sorted (lower-cased unless case-sensitive) with their indexes: a prefix's users
        are two bisections away, so hundreds of partition filters over 1,000,000 users stay cheap."""
        cached = self._sorted_names.get(case_sensitive)
        if cached is None:
            with self._lock:
                cached = self._sorted_names.get(case_sensitive)
                if cached is None:
                    names = self._upns if case_sensitive else self._lower_upns
                    assert names is not None
                    order = sorted(range(len(names)), key=names.__getitem__)
                    cached = self._sorted_names[case_sensitive] = ([names[i] for i in order], order)
        return cached

    @staticmethod
    def page_from(indexes: range | tuple[int, ...], after: int) -> int:
        """Position in ``indexes`` of the first user whose index is ``after`` or later (keyset paging)."""
        return bisect.bisect_left(indexes, after)

    def consumed_units(self) -> dict[str, int]:
        """Users holding each SKU (by simulator key)."""
        self._build_index()
        assert self._consumed is not None
        return dict(self._consumed)
