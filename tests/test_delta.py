"""Change feeds: the simulator's delta queries (graph-facts §2) and the collector's delta runs."""

from __future__ import annotations

import collections
import gzip
import hashlib
import ssl

import httpx
import orjson
import pytest

from simulator import Simulator, TenantSpec
from simulator.object_types import USER_TYPE
from tests.conftest import apply_env
from tests.helpers import read_dataset, settings_for

USER_SELECT = "id,userPrincipalName,displayName,jobTitle,assignedLicenses"


@pytest.fixture(scope="module")
def sim():
    with Simulator(TenantSpec(seed=5, users=450, groups=20, pending_users=20, quotas=False)) as s:
        yield s


@pytest.fixture(scope="module")
def http(sim):
    with httpx.Client(verify=ssl.create_default_context(cafile=sim.ca_file), timeout=30) as client:
        token = client.post(f"{sim.authority_host}/{sim.tenant_id}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret,
            "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def round_of(http, url: str) -> tuple[list[dict], str, int]:
    """Every object of a delta round, its delta link and the number of pages."""
    objects, pages = [], 0
    while True:
        body = http.get(url).raise_for_status().json()
        pages += 1
        objects += body["value"]
        if "@odata.deltaLink" in body:
            assert "@odata.nextLink" not in body
            return objects, body["@odata.deltaLink"], pages
        url = body["@odata.nextLink"]
        assert "$skiptoken=" in url and "$select" not in url  # the query travels in the token


def test_users_delta_rounds(sim, http):
    everyone, link, pages = round_of(http, f"{sim.graph_endpoint}/v1.0/users/delta?$select={USER_SELECT}")
    assert pages == 3 and len(everyone) == 450 == len({u["id"] for u in everyone})
    assert set(everyone[0]) == set(USER_SELECT.split(","))
    assert "$deltatoken=" in link
    nothing, link, _ = round_of(http, link)
    assert nothing == []

    tenant, changes = sim.tenant, sim.changes
    a, b, c = (tenant.user_id(i) for i in (3, 4, 5))
    changes.rename_user(a, upn="renamed.three@contoso.com", display_name="Three Renamed")
    changes.change_licences(b)
    changes.remove_user(c)
    created = changes.add_user()
    changes.set_user(a, jobTitle="Chief")
    got, link2, _ = round_of(http, link)
    by_id = {o["id"]: o for o in got}
    assert set(by_id) == {a, b, c, created}
    assert by_id[a]["displayName"] == "Three Renamed" and by_id[a]["jobTitle"] == "Chief"
    assert by_id[a]["userPrincipalName"] == "renamed.three@contoso.com"
    assert by_id[b]["assignedLicenses"] == []
    assert by_id[c] == {"id": c, "@removed": {"reason": "changed"}}
    assert set(by_id[created]) == set(USER_SELECT.split(","))
    # the same link read again gives the same changes; the new one none
    assert {o["id"] for o in round_of(http, link)[0]} == {a, b, c, created}
    assert round_of(http, link2)[0] == []


def test_latest_token_and_errors(sim, http):
    body = http.get(f"{sim.graph_endpoint}/v1.0/users/delta?$select=id,displayName&$deltatoken=latest").json()
    assert body["value"] == [] and "@odata.deltaLink" in body
    link = body["@odata.deltaLink"]
    uid = sim.tenant.user_id(10)
    sim.changes.set_user(uid, department="Delta")
    assert [o["id"] for o in round_of(http, link)[0]] == [uid]
    bad = http.get(f"{sim.graph_endpoint}/v1.0/users/delta?$select=id,signInActivity")
    assert bad.status_code == 400
    assert http.get(f"{sim.graph_endpoint}/v1.0/users/delta?$top=5").status_code == 400
    assert http.get(link.replace("$deltatoken=", "$deltatoken=x")).status_code == 400
    try:
        sim.spec.delta_age_days = 7.01
        expired = http.get(link)
        assert expired.status_code == 400 and expired.json()["error"]["code"] == "syncStateNotFound"
        sim.spec.delta_age_days = 0
        sim.spec.delta_reset = True
        gone = http.get(link)
        assert gone.status_code == 410 and "/v1.0/users/delta" in gone.headers["Location"]
    finally:
        sim.spec.delta_age_days, sim.spec.delta_reset = 0, False
    assert http.get(link).status_code == 200


def test_groups_delta_members(sim, http):
    inv = sim.inventory
    everyone, link, _ = round_of(http, f"{sim.graph_endpoint}/v1.0/groups/delta?$select=id,displayName,members")
    members: dict[str, set[str]] = {}
    for g in everyone:
        members.setdefault(g["id"], set()).update(m["id"] for m in g["members@delta"])
    big = max(range(len(inv.groups())), key=lambda g: len(inv.direct_members(g)))
    assert len(inv.direct_members(big)) > 100  # split over several objects
    assert sum(1 for g in everyone if g["id"] == inv.groups()[big]["id"]) > 1
    assert members == {g["id"]: {m for _t, m in inv.direct_members(i)} for i, g in enumerate(inv.groups())}

    gid = inv.groups()[8]["id"]
    joiner = sim.tenant.user_id(400)
    leaver = next(m for t, m in inv.direct_members(big) if t == USER_TYPE)
    sim.changes.add_member(gid, joiner)
    sim.changes.remove_member(inv.groups()[big]["id"], leaver)
    sim.changes.rename_group(gid, "Renamed group")
    got, _, _ = round_of(http, link)
    by_id = {g["id"]: g for g in got}
    assert by_id[gid]["displayName"] == "Renamed group"
    assert by_id[gid]["members@delta"] == [{"@odata.type": USER_TYPE, "id": joiner}]
    assert by_id[inv.groups()[big]["id"]]["members@delta"] == [
        {"@odata.type": USER_TYPE, "id": leaver, "@removed": {"reason": "deleted"}}]
    # /groups/{id}/members agrees
    listed = http.get(f"{sim.graph_endpoint}/v1.0/groups/{gid}/members?$select=id").json()["value"]
    assert joiner in {m["id"] for m in listed}


# ---------------------------------------------------------------------------------------------------- collector

DATASETS_UNDER_TEST = "users,groups,group_members"


@pytest.fixture
def tenant(monkeypatch):
    """A tenant of its own per test: the collector's tests change it."""
    with Simulator(TenantSpec(seed=11, users=600, groups=40, pending_users=30)) as s:
        apply_env(monkeypatch, s.env(secret_in="env"))
        yield s


def collect(sim, out, full: bool = False, **env: str):
    from dataclasses import replace

    from connector.collect.engine import collect_sync
    from connector.store.destination import open_store

    settings = settings_for({**sim.env(secret_in="env"), "SNAPSHOT_DIR": str(out),
                             "M365_DATASETS": DATASETS_UNDER_TEST}, **env)
    store = open_store(settings)
    return collect_sync(replace(settings, full=full), store, trigger="test"), store


def by_key(records, key=("id",)):
    out = {}
    for r in records:
        k = tuple(r[p] for p in key)
        assert k not in out, f"{k} twice"
        out[k] = r
    return out


def changes_of(store, manifest, name):
    entry = next(f for f in manifest["files"] if f["path"] == f"changes/{name}.jsonl.gz")
    data = store.read_bytes(f"tenants/{manifest['tenantId']}/runs/{manifest['runId']}/{entry['path']}")
    assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    return [orjson.loads(line) for line in gzip.decompress(data).splitlines()]


def test_delta_run_equals_a_full_read_of_the_changed_tenant(tenant, tmp_path):
    first, store = collect(tenant, tmp_path / "a")
    assert first["status"] == "succeeded", first["warnings"]
    assert first["datasets"]["groups"]["delta"] == {"mode": "full", "baseRun": None,
                                                    "reason": first["datasets"]["groups"]["delta"]["reason"]}
    assert first["datasets"]["users"]["delta"]["reason"].startswith("untracked_properties")
    made = tenant.changes.day_of_changes(share=0.05, seed=3)
    g = tenant.inventory.groups()
    tenant.changes.rename_group(g[9]["id"], "Renamed by the test")
    tenant.changes.rename_group(g[10]["id"], "Renamed too")

    second, store = collect(tenant, tmp_path / "a")
    assert second["status"] == "succeeded", second["warnings"]
    entry = second["datasets"]["groups"]
    assert entry["delta"]["mode"] == "delta" and entry["delta"]["baseRun"] == first["runId"]
    assert (entry["delta"]["added"], entry["delta"]["changed"], entry["delta"]["removed"]) == (0, 2, 0)
    assert entry["requests"] == 1  # one page of changes, against the full listing's pages

    truth, _ = collect(tenant, tmp_path / "b", full=True)
    for name, key in (("groups", ("id",)), ("users", ("id",)), ("group_members", ("groupId", "memberId",
                                                                                    "membership"))):
        assert by_key(read_dataset(store, second, name), key) == by_key(read_dataset(_, truth, name), key), name

    user_changes = changes_of(store, second, "users")
    kinds = collections.Counter(c["change"] for c in user_changes)
    assert kinds["removed"] == made["deleted"] and kinds["added"] == made["created"]
    assert kinds["changed"] == made["renamed"] + made["relicensed"] + made["changed"] - \
        sum(1 for c in user_changes if c["change"] == "changed" and not c["properties"])
    renamed = [c for c in user_changes if c["change"] == "changed" and "displayName" in c["properties"]]
    assert len(renamed) == made["renamed"] and all("userPrincipalName" in c["properties"] for c in renamed)
    members = collections.Counter(c["change"] for c in changes_of(store, second, "group_members"))
    assert members["memberAdded"] >= 1 and members["memberRemoved"] >= made["membersRemoved"]
    group_changes = changes_of(store, second, "groups")
    assert {c["id"]: c["properties"] for c in group_changes} == {g[9]["id"]: ["displayName"],
                                                                 g[10]["id"]: ["displayName"]}
