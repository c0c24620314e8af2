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


@pytest.mark.parametrize(("path", "collection", "prop"), [
    ("devices", "devices", "displayName"), ("applications", "applications", "displayName"),
    ("servicePrincipals", "servicePrincipals", "displayName"), ("oauth2PermissionGrants", "oauth2PermissionGrants",
                                                               "scope")])
def test_other_collections_delta(sim, http, path, collection, prop):
    listed = sim.changes._listed(collection)
    everyone, link, _ = round_of(http, f"{sim.graph_endpoint}/v1.0/{path}/delta?$select=id,{prop}")
    assert sorted(o["id"] for o in everyone) == sorted(o["id"] for o in listed)
    assert all(set(o) == {"id", prop} for o in everyone)
    assert round_of(http, link)[0] == []
    sim.changes.set_object(collection, listed[1]["id"], **{prop: "changed by the test"})
    assert round_of(http, link)[0] == [{"id": listed[1]["id"], prop: "changed by the test"}]


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
    assert first["datasets"]["users"]["delta"]["reason"].startswith("no_delta_link")
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
    # plus users whose licences changed because they joined or left a licensing group (group-based licensing)
    from simulator.licensing import LICENSE_GROUPS

    by_group = [c for c in changes_of(store, second, "group_members") if c["groupId"] in LICENSE_GROUPS
                and c["membership"] == "direct"]
    expected = made["renamed"] + made["relicensed"] + made["changed"]
    assert expected <= kinds["changed"] <= expected + len(by_group)
    renamed = [c for c in user_changes if c["change"] == "changed" and "displayName" in c["properties"]]
    assert len(renamed) == made["renamed"] and all("userPrincipalName" in c["properties"] for c in renamed)
    members = collections.Counter(c["change"] for c in changes_of(store, second, "group_members"))
    assert members["memberAdded"] >= 1 and members["memberRemoved"] >= made["membersRemoved"]
    group_changes = changes_of(store, second, "groups")
    assert {c["id"]: c["properties"] for c in group_changes} == {g[9]["id"]: ["displayName"],
                                                                 g[10]["id"]: ["displayName"]}


def fails_and_keeps_the_link(monkeypatch, fault, sim, out, dataset: str, first: dict) -> None:
    """A run with `fault` (object, attribute, replacement) in place fails `dataset` and leaves the delta link of
    the run before it."""
    with monkeypatch.context() as patched:
        patched.setattr(*fault)
        failed, _ = collect(sim, out)
    assert failed["datasets"][dataset]["status"] == "failed"
    assert link_state(out, sim, dataset)[1]["runId"] == first["runId"]


def link_state(out, sim, name="groups"):
    path = out / "tenants" / sim.tenant_id / "delta" / f"{name}.json"
    return path, orjson.loads(path.read_bytes())


def same_as_truth(sim, store, manifest, tmp_path, name="groups"):
    truth, truth_store = collect(sim, tmp_path / f"truth-{manifest['runId']}", full=True)
    assert by_key(read_dataset(store, manifest, name)) == by_key(read_dataset(truth_store, truth, name))


@pytest.mark.parametrize("how", ["410", "expired_at_graph", "expired_here"])
def test_resync_reads_in_full(tenant, tmp_path, how):
    out = tmp_path / "out"
    first, _ = collect(tenant, out)
    tenant.changes.rename_group(tenant.inventory.groups()[12]["id"], "Changed before the resync")
    if how == "410":
        tenant.spec.delta_reset = True
    elif how == "expired_at_graph":
        tenant.spec.delta_age_days = 7.5  # Graph's clock: the token is over 7 days old
    else:
        path, state = link_state(out, tenant)
        state["obtainedAt"] = "2026-01-01T00:00:00.000Z"
        path.write_bytes(orjson.dumps(state))
    second, store = collect(tenant, out)
    tenant.spec.delta_reset, tenant.spec.delta_age_days = False, 0
    entry = second["datasets"]["groups"]
    assert second["status"] == "succeeded" and entry["delta"]["mode"] == "full"
    assert entry["delta"]["reason"].startswith({"410": "resync: Graph refused the stored delta link (410",
                                                "expired_at_graph": "resync: Graph refused the stored delta link "
                                                                    "(400 syncStateNotFound)",
                                                "expired_here": "expired:"}[how])
    assert entry["delta"]["baseRun"] == first["runId"] and entry["delta"]["changed"] == 1
    same_as_truth(tenant, store, second, tmp_path)
    assert link_state(out, tenant)[1]["runId"] == second["runId"]
    third, _ = collect(tenant, out)  # and the new link works
    assert third["datasets"]["groups"]["delta"]["mode"] == "delta"


@pytest.mark.parametrize("bad", ["corrupt", "other_tenant", "other_dataset", "other_host", "base_missing"])
def test_bad_stored_links_are_refused(tenant, tmp_path, bad):
    out = tmp_path / "out"
    collect(tenant, out)
    path, state = link_state(out, tenant)
    if bad == "corrupt":
        path.write_bytes(b'{"deltaLink": 12')
    elif bad == "other_tenant":
        path.write_bytes(orjson.dumps({**state, "tenantId": "00000000-0000-0000-0000-000000000001"}))
    elif bad == "other_dataset":
        path.write_bytes(orjson.dumps({**state, "dataset": "devices"}))
    elif bad == "other_host":
        path.write_bytes(orjson.dumps({**state, "deltaLink": state["deltaLink"].replace("127.0.0.1", "evil.example")}))
    else:  # a link whose base run is not (or no longer) published
        path.write_bytes(orjson.dumps({**state, "runId": "20260101T000000Z-abcdef"}))
    before = len(tenant.requests)
    second, store = collect(tenant, out, M365_DATASETS="groups")  # group_members follows its own (sound) link
    entry = second["datasets"]["groups"]
    assert entry["delta"]["mode"] == "full"
    if bad == "base_missing":
        assert entry["delta"]["reason"].startswith("base_missing") and entry["warnings"] == []
        assert entry["delta"]["changes"] == "changes/groups.jsonl.gz"  # compared with the newest snapshot instead
    else:
        assert entry["delta"]["reason"].startswith("link_")
        assert [w["code"] for w in entry["warnings"]] == ["delta_link_refused"]
    sent = [r.query.get("$deltatoken") for r in tenant.requests[before:] if "$deltatoken" in r.query]
    assert sent == ["latest"]  # the refused link was never followed: only a new one was asked for
    same_as_truth(tenant, store, second, tmp_path)
    assert link_state(out, tenant)[1]["runId"] == second["runId"]


def test_a_run_killed_while_applying_publishes_nothing(tenant, tmp_path, monkeypatch):
    import asyncio

    from connector.collect import changes as changes_module

    out = tmp_path / "out"
    first, _ = collect(tenant, out)
    for g in tenant.inventory.groups()[14:18]:
        tenant.changes.rename_group(g["id"], f"{g['displayName']} (renamed)")
    real = changes_module.ChangeLines.changed
    calls = []

    async def killed_half_way(self, old, new):
        calls.append(new["id"])
        if len(calls) == 2:  # the run is stopped half-way through applying the changes, as a worker's is
            run = next(t for t in asyncio.all_tasks() if t.get_coro().__name__ == "collect")
            run.cancel()
            await asyncio.sleep(0)
        await real(self, old, new)

    monkeypatch.setattr(changes_module.ChangeLines, "changed", killed_half_way)
    with pytest.raises(asyncio.CancelledError):
        collect(tenant, out)
    monkeypatch.setattr(changes_module.ChangeLines, "changed", real)
    root = out / "tenants" / tenant.tenant_id
    assert orjson.loads((root / "latest.json").read_bytes())["runId"] == first["runId"]
    assert [p for p in (root / "runs").rglob("*") if p.is_file() and first["runId"] not in p.parts] == []
    assert link_state(out, tenant)[1]["runId"] == first["runId"]
    second, store = collect(tenant, out)  # the previous state is usable: delta from the first run
    assert second["datasets"]["groups"]["delta"]["mode"] == "delta"
    assert second["datasets"]["groups"]["delta"]["changed"] == 4
    same_as_truth(tenant, store, second, tmp_path)


def test_reconcile_reads_in_full_and_finds_no_drift(tenant, tmp_path):
    out = tmp_path / "out"
    collect(tenant, out)
    tenant.changes.rename_group(tenant.inventory.groups()[20]["id"], "Reconciled")
    path, state = link_state(out, tenant)
    path.write_bytes(orjson.dumps({**state, "fullAt": "2026-01-01T00:00:00.000Z"}))
    second, store = collect(tenant, out, M365_RECONCILE_DAYS="7")
    delta = second["datasets"]["groups"]["delta"]
    assert delta["mode"] == "reconcile" and delta["drift"]["total"] == 0 and delta["changed"] == 1
    assert second["datasets"]["groups"]["requests"] >= 2  # the round and the full listing
    same_as_truth(tenant, store, second, tmp_path)
    third, _ = collect(tenant, out)
    assert third["datasets"]["groups"]["delta"]["mode"] == "delta"


def test_full_requested_and_delta_off(tenant, tmp_path):
    out = tmp_path / "out"
    collect(tenant, out)
    forced, _ = collect(tenant, out, full=True)
    assert forced["datasets"]["groups"]["delta"]["reason"].startswith("full_requested")
    off, _ = collect(tenant, out, M365_DELTA="off")
    assert off["datasets"]["groups"]["delta"]["reason"].startswith("delta_off")
    on, _ = collect(tenant, out)
    assert on["datasets"]["groups"]["delta"] == {"mode": "delta", "baseRun": forced["runId"], "added": 0,
                                                 "changed": 0, "removed": 0, "changes": "changes/groups.jsonl.gz"}


def test_the_documented_duckdb_example_applies_the_changes_file(tenant, tmp_path, monkeypatch):
    """docs/snapshot-format.md's SQL, run as written on a base run's file and the next run's changes file, gives
    the next run's file record for record."""
    import re
    import shutil

    import duckdb

    from tests.conftest import ROOT

    out = tmp_path / "out"
    first, _ = collect(tenant, out)
    tenant.changes.day_of_changes(share=0.05, seed=9)
    second, store = collect(tenant, out)
    root = out / "tenants" / tenant.tenant_id / "runs"
    work = tmp_path / "work"
    (work / "base").mkdir(parents=True)
    (work / "changes").mkdir()
    shutil.copy(root / first["runId"] / "users.jsonl.gz", work / "base" / "users.jsonl.gz")
    shutil.copy(root / second["runId"] / "changes" / "users.jsonl.gz", work / "changes" / "users.jsonl.gz")
    shutil.copy(root / second["runId"] / "users.jsonl.gz", work / "new.jsonl.gz")
    doc = (ROOT / "docs" / "snapshot-format.md").read_text()
    sql = re.search(r"<!-- duckdb:apply-changes -->\n```sql\n(.*?)```", doc, re.S).group(1)
    monkeypatch.chdir(work)
    con = duckdb.connect()
    for statement in filter(str.strip, sql.split(";")):
        con.execute(statement)

    def rows(query):  # as DuckDB reads them (timestamps parsed alike on both sides), nulls left out
        found = [orjson.loads(r[0]) for r in con.execute(query).fetchall()]
        return {r["id"]: {k: v for k, v in r.items() if v is not None} for r in found}, len(found)

    got, n = rows("SELECT to_json(u) FROM users u")
    want, m = rows("SELECT to_json(u) FROM read_json_auto('new.jsonl.gz') u")
    assert n == len(got) == m == len(want) == second["datasets"]["users"]["records"]
    assert got == want
    assert sum(1 for c in changes_of(store, second, "users") if c["change"] == "changed") > 10


def test_delta_runs_on_blob_storage(tenant, azurite, tmp_path):
    """The same on Blob Storage (Azurite): the link beside the runs, the changes file in the run and in latest/."""
    from connector.collect.engine import collect_sync
    from connector.store.contract import read_json
    from connector.store.destination import open_store
    from tests.helpers import blob_env

    env = {**tenant.env(secret_in="env"), **blob_env(azurite), "M365_DATASETS": "groups"}
    first = collect_sync(settings_for(env), open_store(settings_for(env)), trigger="test")
    tenant.changes.rename_group(tenant.inventory.groups()[7]["id"], "Blob renamed")
    store = open_store(settings_for(env))
    second = collect_sync(settings_for(env), store, trigger="test")
    assert second["datasets"]["groups"]["delta"] == {"mode": "delta", "baseRun": first["runId"], "added": 0,
                                                     "changed": 1, "removed": 0, "changes": "changes/groups.jsonl.gz"}
    tid = second["tenantId"]
    assert read_json(store, f"tenants/{tid}/delta/groups.json")["runId"] == second["runId"]
    latest = {e["path"]: e for e in read_json(store, f"tenants/{tid}/latest/manifest.json")["files"]}
    entry = latest["changes/groups.jsonl.gz"]
    data = store.read_bytes(f"tenants/{tid}/latest/changes/groups.jsonl.gz")
    assert entry["runId"] == second["runId"] and hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert [orjson.loads(line)["properties"] for line in gzip.decompress(data).splitlines()] == [["displayName"]]
    truth, truth_store = collect(tenant, tmp_path / "truth", full=True)
    assert by_key(read_dataset(store, second, "groups")) == by_key(read_dataset(truth_store, truth, "groups"))


# ------------------------------------------------------------------------------------------- group memberships

MEMBER_KEY = ("groupId", "memberId", "membership")


def members_of(store, manifest):
    return by_key(read_dataset(store, manifest, "group_members"), MEMBER_KEY)


def change_memberships(sim):
    """A day of changes, and the membership changes delta must get right: a group nested into another (transitive
    rows appear), a nested group taken out again, service principals joining and leaving (their leg is read
    again), users deleted (their memberships go without `members@delta` saying so)."""
    from simulator.object_types import GROUP_TYPE, SP_TYPE

    inv, changes = sim.inventory, sim.changes
    made = changes.day_of_changes(share=0.05, seed=3)
    g = inv.groups()
    changes.add_member(g[3]["id"], g[4]["id"], GROUP_TYPE)
    nested = next((gid, mid) for gid in (x["id"] for x in g) for t, mid in inv.direct_members(inv.group_index(gid))
                  if t == GROUP_TYPE)
    changes.remove_member(*nested)
    sps = [s["id"] for s in inv.apps.service_principals]
    changes.add_member(g[6]["id"], sps[0], SP_TYPE)
    member_sp = next(((x["id"], mid) for x in g for t, mid in inv.direct_members(inv.group_index(x["id"]))
                      if t == SP_TYPE and mid != sps[0]), None)
    if member_sp:
        changes.remove_member(*member_sp)
    return made


def test_group_members_by_delta_equal_a_full_read(tenant, tmp_path):
    out = tmp_path / "out"
    first, store = collect(tenant, out)
    assert first["datasets"]["group_members"]["delta"]["mode"] == "full"
    change_memberships(tenant)
    second, store = collect(tenant, out)
    assert second["status"] == "succeeded", second["warnings"]
    entry = second["datasets"]["group_members"]
    assert entry["delta"]["mode"] == "delta" and entry["delta"]["baseRun"] == first["runId"], entry["delta"]
    assert entry["usersRemoved"] >= 1 and entry["membershipChanges"] >= 1
    truth, truth_store = collect(tenant, tmp_path / "truth", full=True)
    got, want, before = members_of(store, second), members_of(truth_store, truth), members_of(store, first)
    assert got == want
    assert any(k[2] == "transitive" for k in set(want) - set(before))  # the nesting made transitive rows
    assert any(r["memberType"] == "servicePrincipal" for r in want.values())
    # the changes file says exactly what differs between the two snapshots
    lines = changes_of(store, second, "group_members")
    said = {(c["groupId"], c["memberId"], c["membership"]): c["change"] for c in lines}
    assert said == {**{k: "memberAdded" for k in set(want) - set(before)},
                    **{k: "memberRemoved" for k in set(before) - set(want)}}
    assert (entry["delta"]["added"], entry["delta"]["removed"]) == (len(set(want) - set(before)),
                                                                    len(set(before) - set(want)))
    # no member list of any group was read: only the rounds and the service principals' leg
    assert entry["requests"] < truth["datasets"]["group_members"]["requests"]
    assert entry["batches"] < truth["datasets"]["group_members"]["batches"]
    state = link_state(out, tenant, "group_members")[1]
    assert state["runId"] == second["runId"] and set(state["links"]) == {"/users/delta"}
    third, store3 = collect(tenant, out)  # nothing changed since: the same rows, no changes
    assert third["datasets"]["group_members"]["delta"]["mode"] == "delta"
    assert members_of(store3, third) == want and changes_of(store3, third, "group_members") == []


def test_group_members_requests_fall_to_a_small_share(tmp_path, monkeypatch):
    """With hundreds of groups the fan-out is most of a full read's requests; a delta run makes the rounds' pages
    and the service principals' leg only (the ratio from the runs' own manifests)."""
    with Simulator(TenantSpec(seed=12, users=3000, groups=600, pending_users=30)) as sim:
        apply_env(monkeypatch, sim.env(secret_in="env"))
        out = tmp_path / "out"
        collect(sim, out, M365_DATASETS="group_members")
        sim.changes.day_of_changes(share=0.01, seed=4)
        second, store = collect(sim, out, M365_DATASETS="group_members")
        truth, truth_store = collect(sim, tmp_path / "truth", full=True, M365_DATASETS="group_members")
    delta, full = second["datasets"]["group_members"], truth["datasets"]["group_members"]
    assert delta["delta"]["mode"] == "delta"
    assert members_of(store, second) == members_of(truth_store, truth)
    sp_leg = delta["batches"]  # the delta run's batches are the service principals' leg alone
    assert delta["requests"] <= 0.25 * full["requests"], (delta["requests"], full["requests"])
    assert delta["requests"] - sp_leg < full["requests"] - full["batches"] + 4


@pytest.mark.parametrize("refused", [False, True])
def test_hidden_membership_without_the_permission(tmp_path, monkeypatch, refused):
    """Without Member.Read.Hidden the full read has no rows for hidden-membership groups (Graph answers an empty list
    or 403); the delta path gives the same rows and warning, and reads a group that stops hiding its members."""
    from simulator.tenant import DEFAULT_ROLES

    spec = TenantSpec(seed=11, users=600, groups=40, pending_users=30, hidden_membership_refused=refused,
                      roles=frozenset(DEFAULT_ROLES) - {"Member.Read.Hidden"})
    with Simulator(spec) as sim:
        apply_env(monkeypatch, sim.env(secret_in="env"))
        out = tmp_path / "out"
        first, _ = collect(sim, out)
        groups = sim.inventory.groups()
        hidden = [g for g in groups if g["visibility"] == "HiddenMembership"]
        visible = [g for g in groups if g["visibility"] != "HiddenMembership" and sim.inventory.direct_members(
            sim.inventory.group_index(g["id"]))]
        assert hidden and visible
        assert link_state(out, sim, "group_members")[1]["hidden"] == sorted(g["id"] for g in hidden)
        sim.changes.set_group(hidden[0]["id"], visibility="Private")
        sim.changes.set_group(visible[0]["id"], visibility="HiddenMembership")
        sim.changes.add_member(hidden[-1]["id"], sim.tenant.user_id(5))  # a hidden change: not in the snapshot
        second, store = collect(sim, out)
        truth, truth_store = collect(sim, tmp_path / "truth", full=True)
    entry, want = second["datasets"]["group_members"], truth["datasets"]["group_members"]
    assert entry["delta"]["mode"] == "delta" and entry["groupsReadAgain"] == 1
    assert members_of(store, second) == members_of(truth_store, truth)
    assert any(r["groupId"] == hidden[0]["id"] for r in members_of(store, second).values())
    assert not any(r["groupId"] == visible[0]["id"] for r in members_of(store, second).values())
    codes = sorted(w["code"] for w in entry["warnings"])
    assert "hidden_membership_not_granted" in codes
    assert codes == sorted(w["code"] for w in want["warnings"]) or refused  # 403s are met only where read


def test_group_members_killed_run_and_reconcile(tenant, tmp_path, monkeypatch):
    """A delta run that fails while deriving leaves the previous link and snapshot; the next run is delta from
    the first and right; a reconcile finds no drift."""
    from connector.collect import memberships

    out = tmp_path / "out"
    first, _ = collect(tenant, out)
    change_memberships(tenant)

    async def broken(spool):
        raise RuntimeError("killed while deriving")
        yield []  # pragma: no cover

    fails_and_keeps_the_link(monkeypatch, (memberships, "derive_transitive", broken), tenant, out, "group_members",
                             first)
    second, store = collect(tenant, out)
    assert second["datasets"]["group_members"]["delta"]["baseRun"] == first["runId"]
    truth, truth_store = collect(tenant, tmp_path / "truth", full=True)
    assert members_of(store, second) == members_of(truth_store, truth)
    path, state = link_state(out, tenant, "group_members")
    path.write_bytes(orjson.dumps({**state, "fullAt": "2026-01-01T00:00:00.000Z"}))
    tenant.changes.add_member(tenant.inventory.groups()[2]["id"], tenant.tenant.user_id(7))
    third, store3 = collect(tenant, out, M365_RECONCILE_DAYS="7")
    delta = third["datasets"]["group_members"]["delta"]
    assert delta["mode"] == "reconcile" and delta["drift"]["total"] == 0, delta
    truth, truth_store = collect(tenant, tmp_path / "truth2", full=True)
    assert members_of(store3, third) == members_of(truth_store, truth)


# ------------------------------------------------------------------------------------------------ users' licences

def test_group_licensing_in_the_simulator(sim, http):
    """Joining a licensing group gives the group's licence (states, assignedLicenses, plans), leaving takes it
    away; neither makes the user appear in /users/delta (licenseAssignmentStates is not tracked: user-delta.md;
    for assignedLicenses the least favourable reading). `id in (...)` reads the user as it is now."""
    from simulator.licensing import LICENSE_GROUPS

    select = "id,assignedLicenses,licenseAssignmentStates,assignedPlans,jobTitle"
    _, link, _ = round_of(http, f"{sim.graph_endpoint}/v1.0/users/delta?$select={select}")
    inv, tenant = sim.inventory, sim.tenant
    group = LICENSE_GROUPS[0]
    sku = inv.groups()[inv.group_index(group)]["assignedLicenses"][0]["skuId"]
    members = {m for _t, m in inv.direct_members(inv.group_index(group))}
    joiner = next(tenant.user_id(i) for i in range(200, 400) if tenant.user_id(i) not in members and not any(
        lic["skuId"] == sku for lic in tenant.user(i, ["assignedLicenses"])["assignedLicenses"]))
    leaver = next(m for m in sorted(members) if [st["assignedByGroup"] for st in tenant.user(
        tenant.index_of(m), ["licenseAssignmentStates"])["licenseAssignmentStates"] if st["skuId"] == sku] == [group])

    def read(uid):
        url = f"{sim.graph_endpoint}/v1.0/users?$filter=id in ('{uid}')&$select={select}"
        (user,) = http.get(url).raise_for_status().json()["value"]
        return user

    sim.changes.add_member(group, joiner)
    sim.changes.remove_member(group, leaver)
    joined, left = read(joiner), read(leaver)
    assert {"assignedByGroup": group, "skuId": sku, "state": "Active"}.items() <= next(
        st for st in joined["licenseAssignmentStates"] if st["assignedByGroup"] == group).items()
    assert any(lic["skuId"] == sku for lic in joined["assignedLicenses"]) and joined["assignedPlans"]
    assert all(st["assignedByGroup"] != group for st in left["licenseAssignmentStates"])
    assert all(lic["skuId"] != sku for lic in left["assignedLicenses"])
    assert round_of(http, link)[0] == []  # not tracked
    too_many = ",".join(f"'{tenant.user_id(i)}'" for i in range(16))
    assert http.get(f"{sim.graph_endpoint}/v1.0/users?$filter=id in ({too_many})").status_code == 400


def licence_changes(sim):
    """Users joining and leaving licensing groups (one whose SKU has no seat left: CountViolation)."""
    from simulator.licensing import LICENSE_GROUPS

    inv, tenant = sim.inventory, sim.tenant
    moved = []
    for n, group in enumerate(LICENSE_GROUPS):
        members = {m for _t, m in inv.direct_members(inv.group_index(group))}
        outsider = next(tenant.user_id(i) for i in range(40 + 20 * n, 400) if tenant.user_id(i) not in members)
        sim.changes.add_member(group, outsider)
        insider = sorted(members)[n]
        sim.changes.remove_member(group, insider)
        moved += [outsider, insider]
    return moved


def test_users_by_delta_keep_licences_current(tmp_path, monkeypatch):
    """After a day of changes with users joining and leaving licensing groups: a delta run's users (and memberships)
    equal a full read's; a run that fails while reading licences again keeps the previous link; a reconcile finds
    no drift."""
    from connector.collect.licences import Licences

    with Simulator(TenantSpec(seed=13, users=6000, groups=60, pending_users=60)) as sim:
        apply_env(monkeypatch, sim.env(secret_in="env"))
        out = tmp_path / "out"
        first, _ = collect(sim, out)
        assert "licenceGroups" in link_state(out, sim, "users")[1]
        sim.changes.day_of_changes(share=0.01, seed=6)
        moved = licence_changes(sim)

        async def broken(*_args, **_kwargs):
            raise RuntimeError("killed while reading licences again")

        fails_and_keeps_the_link(monkeypatch, (Licences, "read_again", broken), sim, out, "users", first)
        second, store = collect(sim, out)
        truth, truth_store = collect(sim, tmp_path / "truth", full=True)
        third, store3 = collect(sim, out)
        path, state = link_state(out, sim, "users")
        path.write_bytes(orjson.dumps({**state, "fullAt": "2026-01-01T00:00:00.000Z"}))
        licence_changes(sim)
        fourth, _ = collect(sim, out, M365_RECONCILE_DAYS="7")
    assert second["datasets"]["users"]["delta"]["baseRun"] == first["runId"]
    reconciled = fourth["datasets"]["users"]["delta"]
    assert reconciled["mode"] == "reconcile" and reconciled["drift"]["total"] == 0, reconciled
    entry, full = second["datasets"]["users"], truth["datasets"]["users"]
    assert entry["delta"]["mode"] == "delta", entry["delta"]
    assert entry["delta"]["licenceCandidates"] >= len(moved)
    got, want = by_key(read_dataset(store, second, "users")), by_key(read_dataset(truth_store, truth, "users"))
    assert got == want
    before = by_key(read_dataset(store, first, "users"))
    assert all(got[(u,)]["licenseAssignmentStates"] != before[(u,)]["licenseAssignmentStates"] for u in moved)
    changed = {c["id"] for c in changes_of(store, second, "users") if c["change"] == "changed"}
    assert set(moved) <= changed
    for name, key in (("group_members", MEMBER_KEY), ("groups", ("id",))):
        assert by_key(read_dataset(store, second, name), key) == by_key(read_dataset(truth_store, truth, name), key)
    # requests: the rounds and the users read again, against the listing (the run's own counts)
    assert entry["requests"] <= 0.5 * full["requests"], (entry["requests"], full["requests"])
    assert third["datasets"]["users"]["delta"]["mode"] == "delta"
    assert by_key(read_dataset(store3, third, "users")) == want


def test_users_read_in_full_when_a_group_changes_its_licences(tenant, tmp_path):
    from simulator.licensing import LICENSE_GROUPS

    out = tmp_path / "out"
    collect(tenant, out)
    tenant.changes.set_group(LICENSE_GROUPS[1], assignedLicenses=[])
    second, store = collect(tenant, out)
    entry = second["datasets"]["users"]["delta"]
    assert entry["mode"] == "full" and entry["reason"].startswith("licence_group_changed"), entry
    assert link_state(out, tenant, "users")[1]["licenceGroups"].keys() == {
        g for g in LICENSE_GROUPS[:3] if g != LICENSE_GROUPS[1]} & link_state(out, tenant, "users")[1][
        "licenceGroups"].keys()
    third, _ = collect(tenant, out)  # the group's licences are known again: no longer a reason to read in full
    assert not third["datasets"]["users"]["delta"].get("reason", "").startswith("licence_group_changed")
