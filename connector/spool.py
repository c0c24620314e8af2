"""A key-value map on local disk, for per-user lookups that must not grow memory with the tenant.

An anonymous SQLite database (`sqlite3.connect("")`) lives in a temporary file SQLite removes when it
is closed (and that no one else can open), with a bounded page cache: 1,000,000 keys cost about
60 MB of disk and a few MB of memory. Writes are buffered and lookups are made a chunk of keys at a
time, so the cost stays a few microseconds per key.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

PARAMS = 900  # keys per IN (...) query: under SQLite's oldest limit on host parameters (999)
BUFFER = 5000  # rows written per executemany


class KeyValueSpool:
    """str -> int or str. `keep_max=True`: putting a key again keeps the larger value (integers)."""

    def __init__(self, keep_max: bool = False):
        self._db: Any = sqlite3.connect("", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA cache_size=-2000")  # 2 MB
        self._db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v) WITHOUT ROWID")
        self._db.execute("BEGIN")
        conflict = "DO UPDATE SET v = max(v, excluded.v)" if keep_max else "DO UPDATE SET v = excluded.v"
        self._insert = f"INSERT INTO kv VALUES (?, ?) ON CONFLICT(k) {conflict}"
        self._pending: list[tuple[str, Any]] = []

    def put(self, key: str, value: Any) -> None:
        self._pending.append((key, value))
        if len(self._pending) >= BUFFER:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._db.executemany(self._insert, self._pending)
            self._pending = []

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of those keys that are present."""
        self._flush()
        wanted = [k for k in dict.fromkeys(keys) if k is not None]
        found: dict[str, Any] = {}
        for i in range(0, len(wanted), PARAMS):
            part = wanted[i:i + PARAMS]
            found.update(self._db.execute(f"SELECT k, v FROM kv WHERE k IN ({','.join('?' * len(part))})", part))
        return found

    def delete_many(self, keys: Iterable[str]) -> None:
        self._flush()
        self._db.executemany("DELETE FROM kv WHERE k = ?", ((k,) for k in keys if k is not None))

    def values(self) -> Iterator[Any]:
        self._flush()
        for (value,) in self._db.execute("SELECT v FROM kv"):
            yield value

    def __len__(self) -> int:
        self._flush()
        return self._db.execute("SELECT count(*) FROM kv").fetchone()[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
