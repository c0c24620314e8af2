"""The sign-in chain split into userPrincipalName prefix partitions: every user exactly once, within
Graph's filter limits, whatever changes while the partitions are paged."""

from __future__ import annotations

import collections
import time

import pytest

from connector.paging import MAX_CLAUSES, SeenIds, group_count, group_filter, prefix_groups
from simulator import Simulator, TenantSpec
from simulator.services import parse_upn_prefix_filter
from simulator.tenant import UPN_LOCAL_CHARS
from tests.conftest import apply_env
from tests.helpers import as_written, read_dataset, run


def test_prefix_groups_keep_graph_limits_and_cover_every_start_character_once():
    for count in (0, 1, 5, 7, 36, 100):
        groups = prefix_groups(count)
        chars = "".join(groups)
        assert len(groups) >= 5 and len(chars) == len(set(chars))
        assert sorted(chars) == sorted(UPN_LOCAL_CHARS)  # exactly the characters Entra allows
        assert all(len(g) <= MAX_CLAUSES for g in groups)
        for c in "abcdefghijklmnopqrstuvwxyz":  # both cases always in one partition
            assert any(c in g and c.upper() in g for g in groups)
    assert group_filter("userPrincipalName", "a'") == \
        "startswith(userPrincipalName,'a') or startswith(userPrincipalName,'''')"
    assert group_count(10, 120) == 0 and group_count(100, 120) >= 5 and group_count(100_000, 999) == 5


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


def test_every_start_character_in_both_cases_is_collected_once_without_fallback(initials_sim, monkeypatch,
                                                                                 tmp_path):
    sim = initials_sim
    env = sim.env()
    apply_env(monkeypatch, env)
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="users,user_sign_in_activity")
    assert manifest["status"] == "succeeded", manifest["warnings"]
    ds = manifest["datasets"]["user_sign_in_activity"]
    assert ds["plan"]["strategy"] == "partitioned" and ds["plan"]["partitions"] >= 5
    assert "fallback" not in ds["plan"] and not manifest["warnings"]
    expected = {u["id"]: u for u in sim.tenant.users()}
    assert {u["userPrincipalName"][0] for u in expected.values()} == set(UPN_LOCAL_CHARS)
    records = read_dataset(store, manifest, "user_sign_in_activity")
    counts = collections.Counter(r["id"] for r in records)
    assert set(counts) == set(expected) and max(counts.values()) == 1
    for rec in records:
        assert rec.get("signInActivity") == as_written(expected[rec["id"]].get("signInActivity"))
    # Requests stay near the minimum: pages at 120 plus about half a page per partition and the recount.
    minimum = -(-len(expected) // 120)
    assert ds["requests"] <= minimum * 1.06, (ds["requests"], minimum)
    # Every filter Graph saw kept to 15 clauses (the simulator refuses a 16th).
    filters = {r.query.get("$filter") for r in sim.requests if r.path == "/v1.0/users" and r.query.get("$filter")}
    assert filters and max(len(parse_upn_prefix_filter(f)) for f in filters) <= MAX_CLAUSES
    assert len(read_dataset(store, manifest, "users")) == len(expected)


@pytest.fixture(scope="module")
def big_sim():
    with Simulator(TenantSpec(seed=11, users=12000)) as sim:
        yield sim


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
    assert "repagedPartitions" not in ds["plan"]  # every partition's count is off: not a local change
    assert any(w["code"] == "partition_fallback" for w in manifest["warnings"])
    records = read_dataset(store, manifest, "user_sign_in_activity")
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


def test_rename_and_delete_during_paging_give_every_user_once(monkeypatch, tmp_path):
    race = Race()
    with Simulator(TenantSpec(seed=5, users=12000)) as sim:
        sim.on_users_page = race
        env = sim.env()
        apply_env(monkeypatch, env)
        manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="user_sign_in_activity")
        assert race.done, "the race did not happen (the slow partition finished first)"
        ds = manifest["datasets"]["user_sign_in_activity"]
        assert manifest["status"] == "succeeded", manifest["warnings"]
        assert ds["plan"]["strategy"] == "partitioned" and "fallback" not in ds["plan"]
        assert ds["plan"]["duplicatesDropped"] == 1
        assert len(ds["plan"]["repagedPartitions"]) == 2 and ds["plan"]["usersFoundByRepaging"] == 1
        records = read_dataset(store, manifest, "user_sign_in_activity")
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
