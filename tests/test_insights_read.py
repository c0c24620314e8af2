"""The insights' readers (lines, records, msgspec Structs): every record, in order, whatever the slice of compressed
bytes inflated at a time and the store's block size (a line begun in one slice ends in a later one, or in the last
flush)."""

from __future__ import annotations

import random

import orjson
import pytest

from connector.insights import read
from connector.store.contract import gzip_compressor


class Blocks:
    """A store whose one file comes back in blocks of `size` bytes."""

    def __init__(self, data: bytes, size: int):
        self.data, self.size = data, size

    def read_chunks(self, relpath: str):
        for start in range(0, len(self.data), self.size):
            yield self.data[start:start + self.size]


def gz(text: bytes) -> bytes:
    zip_ = gzip_compressor()
    return zip_.compress(text) + zip_.flush()


@pytest.mark.parametrize("seed", range(6))
def test_batches_give_every_record_in_order_whatever_the_slices(monkeypatch, seed):
    rng = random.Random(seed)
    for _ in range(40):
        records = [{"id": str(i), "name": rng.choice(["Zoë", "名前", "a\\b", 'q"q', ""]) * rng.randint(0, 200)}
                   for i in range(rng.randint(0, 120))]
        text = b"".join(orjson.dumps(r) + b"\n" for r in records)
        if text and rng.random() < 0.3:
            text = text[:-1]  # no newline after the last record
        monkeypatch.setattr(read, "SLICE", rng.choice([1, 5, 64, 700, 64 << 10]))
        store = Blocks(gz(text), rng.choice([1, 3, 100, 4096, 1 << 20]))
        got = [r for batch in read.batches(store, "f", dict) for r in batch]
        assert got == records
        assert list(read.records(store, "f")) == records
        assert [line for line in read.lines(store, "f") if line] == text.split(b"\n")[:len(records)]
