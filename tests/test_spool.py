"""The key-value spool behind the insights' per-user look-ups: the same answers in memory and on disk."""

from __future__ import annotations

import random

import pytest

from connector.spool import KeyValueSpool


def _fill(spool: KeyValueSpool, pairs: list[tuple[str, int]], bulk: bool = False) -> None:
    if bulk:  # put_many in batches, as the insights put a decoded slice of records
        for i in range(0, len(pairs), 300):
            spool.put_many(pairs[i:i + 300])
        return
    for k, v in pairs:
        spool.put(k, v)


@pytest.mark.parametrize("bulk", [False, True], ids=["put", "put_many"])
@pytest.mark.parametrize("memory_keys", [1_000_000, 50, 1_000])
def test_put_get_delete_values_len_agree_with_a_dict(memory_keys: int, bulk: bool) -> None:
    rng = random.Random(7)
    pairs = [(f"user-{rng.randrange(400)}", rng.randrange(10_000)) for _ in range(2_000)]
    plain, keep_max = {}, {}
    for k, v in pairs:
        plain[k] = v
        keep_max[k] = max(v, keep_max.get(k, v))
    for keep, expected in ((False, plain), (True, keep_max)):
        spool = KeyValueSpool(keep_max=keep, memory_keys=memory_keys)
        try:
            _fill(spool, pairs, bulk)
            assert spool.on_disk is (memory_keys < len(expected))
            assert len(spool) == len(expected)
            wanted = [*rng.sample(sorted(expected), 100), "absent", "user-1"]
            assert spool.get_many(wanted) == {k: expected[k] for k in wanted if k in expected}
            whole = spool.get_many(wanted, whole=True)  # in memory: the map itself; on disk: those found
            assert {k: whole[k] for k in wanted if k in whole} == {k: expected[k] for k in wanted if k in expected}
            gone = rng.sample(sorted(expected), 150)
            spool.delete_many(gone)
            left = {k: v for k, v in expected.items() if k not in gone}
            assert len(spool) == len(left)
            assert sorted(spool.values()) == sorted(left.values())
            assert spool.get_many(gone) == {}
        finally:
            spool.close()


def test_spills_to_disk_once_past_its_memory_limit_and_keeps_every_key() -> None:
    spool = KeyValueSpool(memory_keys=10)
    try:
        _fill(spool, [(f"k{i}", i) for i in range(10)])
        assert not spool.on_disk
        spool.put("k10", 10)
        assert spool.on_disk
        _fill(spool, [(f"k{i}", i) for i in range(11, 20_000)])
        assert len(spool) == 20_000
        assert spool.get_many(["k0", "k10", "k19999"]) == {"k0": 0, "k10": 10, "k19999": 19999}
    finally:
        spool.close()


def test_a_map_told_how_many_keys_are_coming_starts_on_disk_past_its_limit() -> None:
    for expected, on_disk in ((None, False), (10, False), (11, True)):
        spool = KeyValueSpool(memory_keys=10, expected=expected)
        try:
            assert spool.on_disk is on_disk
            spool.put_many([(f"k{i}", i) for i in range(12)])
            assert spool.on_disk and spool.get_many(["k0", "k11", "x"]) == {"k0": 0, "k11": 11}
        finally:
            spool.close()


@pytest.mark.parametrize("keep", [False, True], ids=["last-put-wins", "keep-max"])
def test_puts_reads_and_deletes_interleaved_on_disk_agree_with_a_dict(keep: bool) -> None:
    """On disk, puts wait in an unordered table until the next read merges them in key order (the change
    feeds put, read and delete in turns): a put after a read, a key put twice between two reads and a key
    deleted and put again must all read as a dict would."""
    rng = random.Random(11)
    spool, truth = KeyValueSpool(keep_max=keep, memory_keys=50), {}
    try:
        for _ in range(20_000):
            key, value, op = f"k{rng.randrange(400)}", rng.randrange(1_000), rng.random()
            if op < 0.8:
                pairs = [(key, value)] if op < 0.7 else [(key, value), (key, value + 1)]
                spool.put_many(pairs) if op >= 0.7 else spool.put(key, value)
                for k, v in pairs:
                    truth[k] = max(truth.get(k, v), v) if keep else v
            elif op < 0.9:
                keys = [f"k{rng.randrange(400)}" for _ in range(5)]
                assert spool.get_many(keys) == {k: truth[k] for k in keys if k in truth}
            elif op < 0.95:
                keys = [f"k{rng.randrange(400)}" for _ in range(3)]
                spool.delete_many(keys)
                for k in keys:
                    truth.pop(k, None)
            else:
                assert len(spool) == len(truth) and sorted(spool.values()) == sorted(truth.values())
        assert spool.on_disk
    finally:
        spool.close()
