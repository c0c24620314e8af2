"""Deterministic values derived from the tenant's seed: digests, GUIDs and Graph's date formats.

Every generated object (users, groups, devices, apps) draws from these, so the same seed gives the
same tenant in every run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from functools import lru_cache

DAY = 86400
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def digest(seed: int, label: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{label}".encode(), digest_size=32).digest()


def guid(data: bytes) -> str:
    h = bytearray(data[:16])
    h[6] = (h[6] & 0x0F) | 0x40
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


@lru_cache(maxsize=8192)
def iso_date(days: int) -> str:
    """Days since 1970-01-01 -> ``2024-05-01``."""
    return (_EPOCH + dt.timedelta(days=days)).strftime("%Y-%m-%d")


# "T08:00:00Z" for every second of a day (5 MB), so a timestamp costs two look-ups and a concatenation.
_TIME_OF_DAY = tuple(f"T{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}Z" for s in range(86400))


def iso(value: int | None) -> str | None:
    """Epoch seconds -> Graph's ``2024-05-01T08:00:00Z`` (strftime is too slow for 1,000,000 users)."""
    if value is None:
        return None
    days, rem = divmod(value, 86400)
    return iso_date(days) + _TIME_OF_DAY[rem]


def seeded_random(seed: int, label: str) -> random.Random:
    """A random generator of its own for one labelled object: the same draws in every run."""
    return random.Random(int.from_bytes(digest(seed, label), "big"))
