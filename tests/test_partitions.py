"""The sign-in chain split into userPrincipalName prefix partitions: every user exactly once, within
Graph's filter limits, whatever changes while the partitions are paged."""

from __future__ import annotations

import collections
import random
import time
from dataclasses import replace

import pytest

from connector.catalog.datasets import DATASETS
from connector.collect.paging import SeenIds, group_filter
from connector.collect.upn_plan import MAX_CLAUSES, Sample, partition_budget, plan_partitions
from simulator import Simulator, TenantSpec
from simulator.graph.users import parse_upn_prefix_filter
from simulator.tenant import UPN_LOCAL_CHARS
from tests.conftest import apply_env
from tests.helpers import as_written, read_dataset, run


def _allowed_upns(rnd: random.Random, n: int, first: str = UPN_LOCAL_CHARS, shortest: int = 1) -> list[str]:
    """Random UPNs over the characters Entra allows, in both cases, local parts of `shortest` to 6."""
    return [rnd.choice(first) + "".join(rnd.choice(UPN_LOCAL_CHARS) for _ in range(rnd.randrange(shortest - 1, 6)))
            + "@contoso.com" for _ in range(n)]


def _owner(parts, case_sensitive: bool):
    """UPN -> the partitions whose filter matches it, under either reading of startswith() (prefixes are
    at most two characters, so a UPN's first one and two characters find them)."""
    index: dict[str, set[int]] = collections.defaultdict(set)
    for g, p in enumerate(parts):
        for start in p.starts():
            index[start if case_sensitive else start.lower()].add(g)

    def owners(upn: str) -> set[int]:
        name = upn if case_sensitive else upn.lower()
        return index.get(name[:1], set()) | index.get(name[:2], set())
    return owners


@pytest.mark.parametrize("shape", ["no-sample", "simulated-names", "numeric-ids", "one-initial"])
def test_partitions_keep_graph_limits_and_hold_every_allowed_upn_exactly_once(shape):
    rnd = random.Random(shape)
    sample = {"no-sample": None,
              "simulated-names": Sample(u for u in _allowed_upns(rnd, 999, "abcdeijlmp")),
              "numeric-ids": Sample(_allowed_upns(rnd, 999, "0123456789")),
              "one-initial": Sample(_allowed_upns(rnd, 999, "aA"))}[shape]
    for total in (12_000, 100_000, 1_000_000):
        pages = -(-total // 120)
        parts = plan_partitions(total, 120, 16, sample)
        assert 5 <= len(parts) <= partition_budget(pages)
        assert max(len(p.starts()) for p in parts) <= MAX_CLAUSES
        for case_sensitive in (False, True):
            owners = _owner(parts, case_sensitive)
            for upn in _allowed_upns(rnd, 3000) + ["a@x", "Z@x", "9@x", "~@x", "ab@x", "AB@x"]:
                assert len(owners(upn)) == 1, (shape, total, upn, case_sensitive)
    assert group_filter("userPrincipalName", ["a", "'"]) == \
        "startswith(userPrincipalName,'a') or startswith(userPrincipalName,'''')"
    assert plan_partitions(10 * 120, 120, 16, sample) == []  # 10 pages: one chain
    assert len(plan_partitions(100_000, 999, 5, sample)) == 5  # 101 pages: the budget allows 5


def test_a_skewed_tenant_is_split_into_partitions_of_about_equal_size():
    """Half the users start with 'a' (one partition per start character would leave one chain with half
    the pages): the sample shows it, 'a' is split by second character and no partition comes near the
    share of one of the 16 chains paged at once; without a sample nothing could be split."""
    rnd = random.Random(7)
    names = (_allowed_upns(rnd, 150_000, "aA", 3) + _allowed_upns(rnd, 150_000, "bcdefghijklmnopqrstuvwxyz0123", 3))
    rnd.shuffle(names)
    parts = plan_partitions(len(names), 120, 16, Sample(names[:999]))
    owners = _owner(parts, False)
    sizes = collections.Counter(g for u in names for g in owners(u))
    assert sum(sizes.values()) == len(names)
    assert any(len(prefix) == 2 for p in parts for prefix in p.prefixes)  # 'a' was split
    # The run waits for its longest chain: a partition must be well below a chain's share of the users.
    assert max(sizes.values()) <= 0.5 * len(names) / 16, (max(sizes.values()), len(parts))
    # Heaviest first: the order the chains start in.
    assert [p.weight for p in parts] == sorted((p.weight for p in parts), reverse=True)
    blind = plan_partitions(len(names), 120, 16, None)
    assert all(len(prefix) == 1 for p in blind for prefix in p.prefixes)
    owners = _owner(blind, False)
    blind_sizes = collections.Counter(g for u in names for g in owners(u))
    assert max(blind_sizes.values()) >= 0.5 * len(names)  # what the sample saves: one chain of half the users


def test_seen_ids_keep_first_occurrence_only():
    seen = SeenIds()
    try:
        page = [{"id": f"id-{i}"} for i in range(5)]
        assert seen.new(page) == page
        again = [{"id": "id-9"}, {"id": "id-2"}, {"id": "id-9"}, {"noid": 1}]
        assert seen.new(again) == [{"id": "id-9"}, {"noid": 1}]
        assert (seen.count, seen.dropped) == (6, 2)
    finally:
        seen.close()


@pytest.fixture(scope="module", params=[False, True], ids=["startswith-ignores-case", "startswith-case-sensitive"])
def initials_sim(request):
    # 12,000 users whose UPNs start with every character Entra allows, in both cases.
    with Simulator(TenantSpec(seed=11, users=12000, upn_initials=UPN_LOCAL_CHARS,
                              startswith_case_sensitive=request.param)) as sim:
        yield sim


@pytest.fixture
def small_pages(monkeypatch):
    """`users` at 120 a page, so a 12,000-user tenant is split as a 100,000-user one is at 999 a page (the
    partitions serve `users`; sign-in activity is one chain paced at its quota)."""
    monkeypatch.setitem(DATASETS, "users", replace(DATASETS["users"], top=120))


def test_every_start_character_in_both_cases_is_collected_once_without_fallback(initials_sim, monkeypatch,
                                                                                 tmp_path, small_pages):
    sim = initials_sim
    env = sim.env()
    apply_env(monkeypatch, env)
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="users")
    assert manifest["status"] == "succeeded", manifest["warnings"]
    ds = manifest["datasets"]["users"]
    assert ds["plan"]["strategy"] == "partitioned" and ds["plan"]["partitions"] >= 5
    assert "fallback" not in ds["plan"] and not manifest["warnings"]
    # Sized by one shared page of userPrincipalNames; every prefix the manifest names was asked for.
    assert ds["plan"]["sizedBySample"] == 999 and len(ds["plan"]["partitionPrefixes"]) == ds["plan"]["partitions"]
    samples = [r for r in sim.requests if r.path == "/v1.0/users" and r.query.get("$select") == "userPrincipalName"]
    assert len(samples) == 1 and samples[0].query.get("$top") == "999"
    expected = {u["id"]: u for u in sim.tenant.users()}
    assert {u["userPrincipalName"][0] for u in expected.values()} == set(UPN_LOCAL_CHARS)
    records = read_dataset(store, manifest, "users")
    counts = collections.Counter(r["id"] for r in records)
    assert set(counts) == set(expected) and max(counts.values()) == 1
    for rec in records:
        assert rec["userPrincipalName"] == expected[rec["id"]]["userPrincipalName"]
    # Requests stay near the minimum: pages at 120 plus about half a page per partition and the recount.
    minimum = -(-len(expected) // 120)
    assert ds["requests"] <= minimum * 1.06, (ds["requests"], minimum)
    # Every filter Graph saw kept to 15 clauses (the simulator refuses a 16th).
    filters = {r.query.get("$filter") for r in sim.requests if r.path == "/v1.0/users" and r.query.get("$filter")}
    assert filters and max(len(parse_upn_prefix_filter(f)) for f in filters) <= MAX_CLAUSES


@pytest.fixture(scope="module")
def big_sim():
    with Simulator(TenantSpec(seed=11, users=12000)) as sim:
        yield sim


def test_count_mismatch_falls_back_to_the_plain_chain(big_sim, monkeypatch, tmp_path, small_pages):
    """An eventually consistent $count that is off: the split result is discarded, not published."""
    env = big_sim.env()
    apply_env(monkeypatch, env)
    big_sim.spec.count_lag = 3
    try:
        manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="users")
    finally:
        big_sim.spec.count_lag = 0
    ds = manifest["datasets"]["users"]
    assert manifest["status"] == "succeeded"
    assert ds["plan"]["strategy"] == "partitioned" and ds["plan"]["fallback"] == "sequential"
    assert "repagedPartitions" not in ds["plan"]  # every partition's count is off: not a local change
    assert any(w["code"] == "partition_fallback" for w in manifest["warnings"])
    records = read_dataset(store, manifest, "users")
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == big_sim.tenant.user_count


class Race:
    """While the partitions are paged: one partition (R) is held at its second page until two others
    (S1, S2) are done; then a user of S1 is renamed into R (R will list it again: a duplicate), a user
    of R is renamed into S2 (S2 is past it: missed unless S2 is paged again) and a user of R is deleted."""

    def __init__(self) -> None:
        self.filters: list[str] = []
        self.done: dict[str, int] = {}

    def __call__(self, sim: Simulator, flt: str, after: int) -> None:
        if not flt:
            return
        if flt not in self.filters:
            self.filters.append(flt)
        slow = self.filters[0]
        if flt != slow or self.done or after == 0:
            return
        tenant = sim.tenant
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # hold R's second page until S1 and S2 are finished
            others = self.filters[1:3]
            members = {f: tenant.prefix_matches(parse_upn_prefix_filter(f)) for f in others}
            if len(others) == 2 and all(sim.users_cursors.get(f, -1) >= members[f][-1] for f in others):
                break
            time.sleep(0.02)
        else:
            return
        s1, s2 = others
        ahead = [i for i in tenant.prefix_matches(parse_upn_prefix_filter(slow)) if i > after + 3000]
        moved = next(i for i in members[s1] if i > after + 3000)
        domain = tenant.domains[0]
        tenant.rename(moved, parse_upn_prefix_filter(slow)[0] + f"renamed.x@{domain}")
        tenant.rename(ahead[0], parse_upn_prefix_filter(s2)[0] + f"renamed.y@{domain}")
        tenant.delete(ahead[1])
        self.done = {"duplicate": moved, "missed": ahead[0], "deleted": ahead[1]}


def test_rename_and_delete_during_paging_give_every_user_once(monkeypatch, tmp_path, small_pages):
    race = Race()
    with Simulator(TenantSpec(seed=5, users=12000)) as sim:
        sim.on_users_page = race
        env = sim.env()
        apply_env(monkeypatch, env)
        manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="users")
        assert race.done, "the race did not happen (the slow partition finished first)"
        ds = manifest["datasets"]["users"]
        assert manifest["status"] == "succeeded", manifest["warnings"]
        assert ds["plan"]["strategy"] == "partitioned" and "fallback" not in ds["plan"]
        assert ds["plan"]["duplicatesDropped"] == 1
        assert len(ds["plan"]["repagedPartitions"]) == 2 and ds["plan"]["usersFoundByRepaging"] == 1
        records = read_dataset(store, manifest, "users")
        counts = collections.Counter(r["id"] for r in records)
        live = {u["id"] for u in sim.tenant.users()}
        assert max(counts.values()) == 1 and set(counts) == live
        assert ds["plan"]["recount"] == len(live) == sim.tenant.user_count - 1
        for key in ("duplicate", "missed"):
            assert sim.tenant.user_id(race.done[key]) in counts
        assert sim.tenant.user_id(race.done["deleted"]) not in counts


def test_eventual_consistency_quirk_costs_no_sign_in_data(monkeypatch, tmp_path):
    """With the reported quirk on, pages asked for under ConsistencyLevel: eventual lose signInActivity;
    the collector asks the size from /users/$count and pages without the header, so nothing is lost."""
    import ssl

    import httpx

    with Simulator(TenantSpec(seed=8, users=3000, sign_in_eventual_quirk=True)) as sim:
        env = sim.env()
        apply_env(monkeypatch, env)
        # The quirk bites a client that pages with the header.
        tls = ssl.create_default_context(cafile=sim.ca_file)
        token = httpx.post(f"{sim.authority_host}/{sim.tenant_id}/oauth2/v2.0/token", verify=tls, data={
            "grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret,
            "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]
        page = httpx.get(f"{sim.graph_endpoint}/v1.0/users", verify=tls, params={
            "$select": "id,signInActivity", "$top": "120", "$count": "true"},
            headers={"Authorization": f"Bearer {token}", "ConsistencyLevel": "eventual"}).json()["value"]
        expected = {u["id"]: u["signInActivity"] for u in sim.tenant.users()}
        assert sum(1 for u in page if u["signInActivity"] is None and expected[u["id"]] is not None) > 5

        sim.clear_requests()
        manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="users,user_sign_in_activity")
        assert manifest["status"] == "succeeded", manifest["warnings"]
        records = read_dataset(store, manifest, "user_sign_in_activity")
        assert {r["id"]: r.get("signInActivity") for r in records} == as_written(expected)
        sign_in_pages = [r for r in sim.requests if r.path == "/v1.0/users" and "signInActivity" in
                         r.query.get("$select", "")]
        assert sign_in_pages and not any("consistencylevel" in r.headers for r in sign_in_pages)
        counts = [r for r in sim.requests if r.path == "/v1.0/users/$count"]
        assert len(counts) == 1 and counts[0].headers["consistencylevel"] == "eventual"  # shared by both


def test_a_page_in_name_order_is_not_taken_for_a_sample():
    """If Graph listed users by name, its first page would hold one initial: not a sample to size by."""
    rnd = random.Random(3)
    names = _allowed_upns(rnd, 999, "abcdeijlmp", 3)
    assert not Sample(names).in_name_order
    assert Sample(sorted(names, key=str.lower)).in_name_order
    assert Sample(names).hits("a") == sum(1 for n in names if n.lower().startswith("a"))
