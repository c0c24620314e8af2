"""The sign-in chain split into userPrincipalName prefix groups: every user exactly once."""

from __future__ import annotations

import collections

import pytest

from connector.paging import group_count, group_filter, prefix_groups
from simulator import Simulator, TenantSpec
from tests.conftest import apply_env
from tests.helpers import as_written, read_dataset, run


def test_prefix_groups_cover_every_start_character_once():
    for count in (1, 3, 7, 36, 100):
        groups = prefix_groups(count)
        chars = "".join(groups)
        assert len(chars) == len(set(chars))
        assert set("abcdefghijklmnopqrstuvwxyz0123456789_-'") <= set(chars)
    assert group_filter("userPrincipalName", "a'") == \
        "startswith(userPrincipalName,'a') or startswith(userPrincipalName,'''')"


@pytest.fixture(scope="module")
def big_sim():
    # Large enough that the sign-in chain (120 per page) is split.
    users = 12000
    assert group_count(users // 120, 120) >= 2
    with Simulator(TenantSpec(seed=11, users=users)) as sim:
        yield sim


def test_partitioned_sign_in_chain_has_every_user_once(big_sim, monkeypatch, tmp_path):
    env = big_sim.env()
    apply_env(monkeypatch, env)
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="user_sign_in_activity")
    ds = manifest["datasets"]["user_sign_in_activity"]
    assert manifest["status"] == "succeeded", manifest["warnings"]
    assert ds["plan"]["strategy"] == "partitioned" and ds["plan"]["partitions"] > 1
    records = read_dataset(store, manifest, "user_sign_in_activity")
    counts = collections.Counter(r["id"] for r in records)
    expected = {u["id"]: u for u in big_sim.tenant.users()}
    assert set(counts) == set(expected) and max(counts.values()) == 1
    first = {expected[i]["userPrincipalName"][0] for i in counts}
    assert first & set("0123456789"), "the tenant should have users starting with digits"
    assert first - set("abcdefghijklmnopqrstuvwxyz0123456789"), "and with symbols"
    for rec in records:
        assert rec.get("signInActivity") == as_written(expected[rec["id"]].get("signInActivity"))
    # Requests stay near the minimum: pages at 120 plus about half a page per partition and the count.
    minimum = -(-len(expected) // 120)
    assert ds["requests"] <= minimum * 1.05


def test_count_mismatch_falls_back_to_the_plain_chain(big_sim, monkeypatch, tmp_path):
    """An eventually consistent $count that is off: the split result is discarded, not published."""
    env = big_sim.env()
    apply_env(monkeypatch, env)
    big_sim.spec.count_lag = 3
    try:
        manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="user_sign_in_activity")
    finally:
        big_sim.spec.count_lag = 0
    ds = manifest["datasets"]["user_sign_in_activity"]
    assert manifest["status"] == "succeeded"
    assert ds["plan"]["strategy"] == "partitioned" and ds["plan"]["fallback"] == "sequential"
    assert any(w["code"] == "partition_fallback" for w in manifest["warnings"])
    records = read_dataset(store, manifest, "user_sign_in_activity")
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == big_sim.tenant.user_count


def test_round_robin_groups_are_balanced_for_this_tenant(big_sim):
    groups = prefix_groups(4)[:-1]
    sizes = [sum(1 for u in big_sim.tenant.users() if u["userPrincipalName"][0].lower() in g) for g in groups]
    assert max(sizes) < 2 * min(sizes), sizes
