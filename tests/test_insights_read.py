"""The insights' readers: records decoded a slice of inflated bytes at a time whatever the slice and block sizes,
and the key of a user's licence combination, which leaves the states' dates out of the raw JSON: equal keys must
mean equal licences and states as the insights read them, and unequal ones different (or undecidable) JSON."""

from __future__ import annotations

import itertools
import random

import msgspec
import orjson
import pytest

from connector.insights import read
from connector.insights.analysis import User, combo_key, combo_parts
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


DATES = ['"2023-02-28T03:33:45Z"', '"2024-01-01T00:00:00Z"', "null", None, "17", '"a\\"b"', '""']
GROUPS = ["null", '"c4f7e2a9-1d3b-4e5f-8a7c-2b9d0e1f3a46"', '"11f7e2a9-1d3b-4e5f-8a7c-2b9d0e1f3a46"']
ERRORS = ['"None"', '"CountViolation"', '"x},{y"', '"{"', '{"lastUpdatedDateTime":"2023-02-28T03:33:45Z"}',
          '{"lastUpdatedDateTime":"2024-01-01T00:00:00Z"}']


def state(rng: random.Random) -> str:
    members = [f'"assignedByGroup":{rng.choice(GROUPS)}', '"disabledPlans":[]', f'"error":{rng.choice(ERRORS)}',
               f'"skuId":"{rng.choice(["c7df2760", "a403ebcc"])}"', f'"state":"{rng.choice(["Active", "Error"])}"']
    date = rng.choice(DATES)
    if date is not None:
        members.insert(rng.randint(0, len(members)), f'"lastUpdatedDateTime":{date}')
    return "{" + ",".join(members) + "}"


def test_combination_keys_are_equal_exactly_when_the_licences_and_states_are():
    rng = random.Random(25)
    decode = msgspec.json.Decoder(User).decode
    users = []
    for _ in range(400):
        licences = rng.choice(['[]', 'null', '[{"disabledPlans":[],"skuId":"c7df2760"}]',
                               '[{"disabledPlans":["p1"],"skuId":"c7df2760"}]'])
        states = "[" + ",".join(state(rng) for _ in range(rng.randint(0, 2))) + "]"
        users.append(decode(f'{{"id":"u","assignedLicenses":{licences},"licenseAssignmentStates":{states}}}'))
    users.append(decode(b'{"id":"u"}'))
    keys = [combo_key(u) for u in users]
    parts = [combo_parts(u) for u in users]
    merged = 0
    for (k1, p1), (k2, p2) in itertools.combinations(zip(keys, parts, strict=True), 2):
        if k1 == k2:
            assert p1 == p2
            merged += 1
    # users whose states differ only by their dates share a key (else the key would save nothing)
    dated = [decode(f'{{"assignedLicenses":[],"licenseAssignmentStates":[{{"lastUpdatedDateTime":{d},"skuId":"a",'
                    f'"state":"Active"}},{{"skuId":"b","lastUpdatedDateTime":{d}}}]}}') for d in DATES[:3]]
    assert len({combo_key(u) for u in dated}) == 1
    assert merged > 0
