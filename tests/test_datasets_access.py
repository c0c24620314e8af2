"""Issue 14 datasets (apps, service principals, owners, grants, app roles, group owners, managers, PIM,
detected apps' devices) and issue 10.6/10.7 (service principals' memberships, hidden-membership groups)
end to end against the simulator, each compared with what the simulated tenant holds."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import math
import ssl

import httpx
import orjson
import pytest

from connector.catalog.datasets import APPLICATION_SELECT, DATASETS, ENTRA_P2, SERVICE_PRINCIPAL_SELECT, Leg
from connector.collect.apps import ExpiryFinding, scrub
from connector.collect.batch import _row
from connector.collect.delta import rounds
from simulator import Simulator, TenantSpec
from simulator.object_types import SP_TYPE
from simulator.tenant import DEFAULT_ROLES
from tests.conftest import apply_env
from tests.helpers import read_dataset, run

NEW = ("detected_app_devices", "applications", "service_principals", "app_owners", "oauth2_grants",
       "app_role_assignments", "group_owners", "user_managers", "role_eligibilities", "role_assignment_schedules")
FAN_OUT = ("detected_app_devices", "app_owners", "app_role_assignments", "group_owners", "user_managers",
           "group_members")
SELECTED = ",".join((*NEW, "group_members"))


@pytest.fixture(scope="module")
def sim():
    # 1,100 users: "All Company", group 9's owners, application 1's owners and application 3's assignments
    # each pass 999 objects, so their second pages travel as batch items of their own.
    with Simulator(TenantSpec(seed=31, users=1100, groups=40, applications=24, devices=60)) as s:
        yield s


@pytest.fixture
def env(sim, monkeypatch):
    sim.spec.roles, sim.spec.premium, sim.spec.p2 = DEFAULT_ROLES, True, True
    sim.spec.throttle_rate, sim.spec.retry_after = 0.0, 1
    values = sim.env(secret_in="env")
    apply_env(monkeypatch, values)
    return values


def _type(odata: str) -> str:
    return odata.rsplit(".", 1)[-1]


def expected(sim, name: str) -> list:
    """What the simulated tenant holds, in the dataset's record shape (sorted where order is not defined)."""
    inv, apps, t = sim.inventory, sim.inventory.apps, sim.tenant
    if name == "applications":
        return [scrub({k: orjson.loads(orjson.dumps(a[k])) for k in APPLICATION_SELECT}) for a in apps.applications]
    if name == "service_principals":
        return [scrub({k: orjson.loads(orjson.dumps(s[k])) for k in SERVICE_PRINCIPAL_SELECT})
                for s in apps.service_principals]
    if name == "app_owners":
        kinds = {a["id"]: "application" for a in apps.applications}
        return sorted((oid, kinds.get(oid, "servicePrincipal"), owner, _type(ot))
                      for oid, owners in apps.owners.items() for ot, owner in owners)
    if name == "group_owners":
        return sorted((g["id"], owner, _type(ot)) for g, owners in zip(inv.groups(), apps.group_owners, strict=True)
                      for ot, owner in owners)
    if name == "oauth2_grants":
        return apps.grants
    if name == "app_role_assignments":
        return sorted((a for items in apps.app_role_assignments.values() for a in items), key=lambda a: a["id"])
    if name == "user_managers":
        return sorted((t.user_id(i), t.user_id(apps.manager_of(i)), "user") for i in range(t.user_count)
                      if apps.manager_of(i) is not None)
    if name == "role_eligibilities":
        return apps.eligibility_schedules
    if name == "role_assignment_schedules":
        return apps.assignment_schedules
    if name == "detected_app_devices":
        return sorted((a["id"], a["displayName"], a["version"], a["platform"], d["id"], d["deviceName"])
                      for a in inv.detected_apps() for d in inv.detected_app_devices(a["id"]))
    if name == "group_members":
        out = []
        for index, group in enumerate(inv.groups()):
            direct = inv.direct_members(index)
            ids = {oid for _t, oid in direct}
            out += [(group["id"], oid, _type(ot), "direct") for ot, oid in direct]
            out += [(group["id"], oid, _type(ot), "transitive") for ot, oid in inv.transitive_members(index)
                    if oid not in ids]
        return sorted(out)
    raise KeyError(name)


def collected(store, manifest, name: str) -> list:
    records = read_dataset(store, manifest, name)
    keys = {"app_owners": ("objectId", "objectType", "ownerId", "ownerType"),
            "group_owners": ("groupId", "ownerId", "ownerType"),
            "user_managers": ("userId", "managerId", "managerType"),
            "detected_app_devices": ("appId", "appDisplayName", "appVersion", "platform", "deviceId", "deviceName"),
            "group_members": ("groupId", "memberId", "memberType", "membership")}
    if name in keys:
        return sorted(tuple(r[k] for k in keys[name]) for r in records)
    if name == "app_role_assignments":
        return sorted(records, key=lambda a: a["id"])
    return records


def test_every_access_dataset_equals_the_tenant_with_requests_near_the_minimum(sim, env, tmp_path):
    sim.clear_requests()
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS=SELECTED)
    assert manifest["status"] == "succeeded", manifest["warnings"]
    for name in (*NEW, "group_members"):
        assert manifest["datasets"][name]["status"] == "succeeded", name
        assert collected(store, manifest, name) == expected(sim, name), name
    members = collected(store, manifest, "group_members")
    sps = {(g, m, k) for g, m, t, k in members if t == "servicePrincipal"}
    assert {k for _g, _m, k in sps} == {"direct", "transitive"}  # through nested groups too (10.6)
    assert any(t == "servicePrincipal" for _g, _o, t in collected(store, manifest, "group_owners"))
    inv, apps = sim.inventory, sim.inventory.apps
    # $batch: one request per 20 items; items = parents + extra pages (the objects with > 999 related ones)
    entries = manifest["datasets"]
    parents = {"group_owners": len(inv.groups()) + len(apps.service_principals),
               "app_owners": len(apps.applications) + len(apps.service_principals),
               "app_role_assignments": len(apps.service_principals),
               "detected_app_devices": len(inv.detected_apps()),
               "group_members": len(inv.groups()) + len(apps.service_principals)}
    for name, items in parents.items():
        assert entries[name]["batches"] <= math.ceil((items + 2) / 20) + 2, name
        list_pages = sum(1 for leg in DATASETS[name].fan_out.legs if leg.parents)
        # a dataset read by delta also asks each of its rounds' delta link for the next run ($deltatoken=latest)
        links = len(rounds(DATASETS[name])) if DATASETS[name].delta else 0
        assert entries[name]["requests"] == entries[name]["batches"] + list_pages + links, name
    # user managers: 1,100 users at 100 per page ($expand), in 44 first-character chains, plus one $count
    pages = sum(math.ceil(len(sim.tenant.prefix_matches((c,))) / 100) or 1 for c in
                "abcdefghijklmnopqrstuvwxyz0123456789'.-_!#^~")
    assert entries["user_managers"]["batches"] <= math.ceil(pages / 20) + 4
    assert entries["user_managers"]["objectCount"] == entries["user_managers"]["objectsRead"] == 1100
    assert entries["group_members"]["groups"] == len(inv.groups())
    # no secret value or key material anywhere in the snapshot
    prefix = f"tenants/{manifest['tenantId']}/runs/{manifest['runId']}"
    for name in ("applications", "service_principals"):
        raw = gzip.decompress(store.read_bytes(f"{prefix}/{entries[name]['file']}"))
        assert b"secretText" not in raw and b'"key"' not in raw, name
        assert b'"hint"' in raw or name == "service_principals"


@contextlib.contextmanager
def own_secret_expiring_in(sim, days: int):
    """The connector's own app registration with its secret ending in `days` days (rebuilt, then restored)."""
    apps = sim.inventory.apps
    sim.spec.own_secret_days = days
    apps.__dict__.pop("applications", None)
    try:
        yield
    finally:
        sim.spec.own_secret_days = 200
        apps.__dict__.pop("applications", None)


def test_credential_expiry_finding_names_the_connectors_own_app(sim, env, tmp_path):
    with own_secret_expiring_in(sim, 12):
        manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="applications,service_principals")
        apps = sim.inventory.apps.applications
    assert manifest["status"] == "succeeded"
    finding = manifest["datasets"]["applications"]["credentialExpiry"]
    own = finding["credentials"][0]
    assert own["connectorOwnApp"] and own["appId"] == sim.client_id and own["status"] == "expiring"
    assert own["daysLeft"] in (11, 12) and own["hint"] == "Sim" and "secretText" not in own
    warning = [w for w in manifest["warnings"] if w["code"] == "own_credential_expiring"]
    assert len(warning) == 1 and sim.client_id in warning[0]["message"]
    # every flagged credential of the tenant, and only those
    horizon = ExpiryFinding("application", "", sim.tenant.now)
    for app in apps:
        horizon.add(scrub(orjson.loads(orjson.dumps(app))))
    assert finding["expired"] == horizon.expired and finding["expiring"] == horizon.expiring
    assert finding["expired"] + finding["expiring"] > 1
    assert any(w["code"] == "credentials_expiring" and w["dataset"] == "applications" for w in manifest["warnings"])
    # managed identities' certificates (rotated by Azure, 9 to 27 days left here) are not findings
    sp_items = manifest["datasets"]["service_principals"]["credentialExpiry"]["credentials"]
    identities = {s["id"] for s in sim.inventory.apps.service_principals if s["servicePrincipalType"] ==
                  "ManagedIdentity"}
    assert identities and not [i for i in sp_items if i["objectId"] in identities]


def test_expired_own_secret_is_its_own_warning(sim, env, tmp_path):
    with own_secret_expiring_in(sim, -3):
        manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="applications")
    assert [w["code"] for w in manifest["warnings"] if w["code"].startswith("own_")] == ["own_credential_expired"]


@pytest.mark.parametrize(("removed", "skipped", "missing"), [
    ({"Application.Read.All"}, ["applications", "service_principals", "app_owners", "app_role_assignments"],
     "Application.Read.All"),
    ({"DelegatedPermissionGrant.Read.All"}, ["oauth2_grants"], "DelegatedPermissionGrant.Read.All"),
    ({"User.Read.All"}, ["user_managers"], "User.Read.All"),
    ({"GroupMember.Read.All"}, ["group_owners", "group_members"], "GroupMember.Read.All"),
    ({"DeviceManagementManagedDevices.Read.All"}, ["detected_app_devices"], "DeviceManagementManagedDevices.Read.All"),
    ({"RoleManagement.Read.Directory"}, ["role_eligibilities", "role_assignment_schedules"], None),
])
def test_missing_permission_skips_only_those_datasets(sim, env, tmp_path, removed, skipped, missing):
    sim.spec.roles = DEFAULT_ROLES - removed
    sim.clear_requests()
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS=SELECTED)
    assert manifest["status"] == "partial"
    for name, entry in manifest["datasets"].items():
        if name in skipped:
            assert entry["status"] == "skipped" and entry["file"] is None, name
            want = [missing] if missing else [DATASETS[name].requires[0][0]]
            assert entry["missingPermissions"] == want, name
            assert any(w["code"] == "missing_permission" and w["dataset"] == name and want[0] in w["message"]
                       for w in manifest["warnings"]), name
        else:
            assert entry["status"] == "succeeded", (name, entry["warnings"])
    # skipped before any request: nothing was sent for them
    assert not [r for r in sim.requests if r.path.startswith("/v1.0/oauth2PermissionGrants")] or \
        "oauth2_grants" not in skipped


def test_without_application_read_all_memberships_and_ownerships_of_service_principals_are_named_missing(
        sim, env, tmp_path):
    sim.spec.roles = DEFAULT_ROLES - {"Application.Read.All"}
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="group_members,group_owners")
    assert manifest["status"] == "succeeded"  # nothing required is missing; what is not collected is said
    for name, leg in (("group_members", "servicePrincipalMemberships"), ("group_owners", "servicePrincipalOwnerships")):
        entry = manifest["datasets"][name]
        assert entry["notCollected"] == {leg: "needs Application.Read.All"}, name
        warning = [w for w in entry["warnings"] if w["code"] == "optional_permission_missing"]
        assert len(warning) == 1 and "Application.Read.All" in warning[0]["message"], name
    members = collected(store, manifest, "group_members")
    assert members == [m for m in expected(sim, "group_members") if m[2] != "servicePrincipal"]
    owners = collected(store, manifest, "group_owners")
    assert owners == [o for o in expected(sim, "group_owners") if o[2] != "servicePrincipal"]


def test_hidden_membership_groups_refused_are_warned_per_group_and_the_rest_collected(sim, env, tmp_path):
    sim.spec.roles = DEFAULT_ROLES - {"Member.Read.Hidden"}
    hidden = {g["id"] for g in sim.inventory.groups() if g["visibility"] == "HiddenMembership"}
    assert hidden
    sim.spec.hidden_membership_refused = True  # the 403 variant; by default the members are left out silently
    try:
        manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="group_members")
    finally:
        sim.spec.hidden_membership_refused = False
    entry = manifest["datasets"]["group_members"]
    assert manifest["status"] == "succeeded" and entry["status"] == "succeeded"
    assert set(entry["refused"]["groupMembers"]) == hidden
    warnings = [w for w in entry["warnings"] if w["code"] == "hidden_membership"]
    assert {next(h for h in hidden if h in w["message"]) for w in warnings} == hidden
    assert all("Member.Read.Hidden" in w["message"] for w in warnings)
    assert not [w for w in manifest["warnings"] if w["code"] == "missing_permission"]
    assert collected(store, manifest, "group_members") == [m for m in expected(sim, "group_members")
                                                           if m[0] not in hidden]


def test_a_403_on_an_ordinary_parent_is_a_missing_permission_not_a_warning(sim, env, tmp_path):
    app = sim.inventory.apps.applications[5]
    sim.fail_next(f"/v1.0/applications/{app['id']}/owners", 403, "Authorization_RequestDenied",
                  "Insufficient privileges to complete the operation.")
    manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="app_owners,oauth2_grants")
    entry = manifest["datasets"]["app_owners"]
    assert manifest["status"] == "partial" and entry["status"] == "skipped" and entry["file"] is None
    assert entry["missingPermissions"] == ["Application.Read.All"]
    assert entry["error"]["code"] == "Authorization_RequestDenied"
    assert manifest["datasets"]["oauth2_grants"]["status"] == "succeeded"


def test_missing_p2_licence_skips_the_pim_datasets_only(sim, env, tmp_path):
    sim.spec.p2 = False
    manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="role_eligibilities,role_assignment_schedules,"
                                                                     "applications,user_managers")
    assert manifest["status"] == "partial"
    for name in ("role_eligibilities", "role_assignment_schedules"):
        entry = manifest["datasets"][name]
        assert entry["status"] == "skipped" and entry["missingLicence"] == ENTRA_P2 and not entry["missingPermissions"]
        assert any(w["code"] == "missing_licence" and w["dataset"] == name for w in manifest["warnings"])
    assert manifest["datasets"]["applications"]["status"] == "succeeded"
    assert manifest["datasets"]["user_managers"]["status"] == "succeeded"


def test_throttled_batch_items_and_pages_are_retried_and_nothing_is_lost(sim, env, tmp_path):
    sim.spec.throttle_rate, sim.spec.retry_after = 0.15, 0.05
    try:
        manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS=SELECTED, M365_MAX_RETRIES="10")
    finally:
        sim.spec.throttle_rate = 0.0
    assert manifest["status"] == "succeeded", manifest["warnings"]
    for name in (*NEW, "group_members"):
        assert collected(store, manifest, name) == expected(sim, name), name
    # The 429s are drawn at random (15% of requests): a dataset of few requests may draw none, so they are
    # required across the fan-out datasets, and every one of them retried.
    entries = [manifest["datasets"][name] for name in FAN_OUT]
    assert sum(e["throttled"] for e in entries) > 0
    for name, entry in zip(FAN_OUT, entries, strict=True):
        assert entry["retries"] >= entry["throttled"], name


# -- the simulator keeps Graph's documented behaviour ------------------------------------------------------------


@pytest.fixture
def graph(sim, env):
    form = {"grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret,
            "scope": "https://graph.microsoft.com/.default"}
    with httpx.Client(verify=ssl.create_default_context(cafile=sim.ca_file)) as http:
        def call(path: str, roles: frozenset | None = None, **headers: str) -> httpx.Response:
            sim.spec.roles = roles if roles is not None else DEFAULT_ROLES
            token = http.post(f"{sim.authority_host}/{sim.tenant_id}/oauth2/v2.0/token", data=form).json()
            return http.get(f"{sim.graph_endpoint}/v1.0{path}",
                            headers={"Authorization": f"Bearer {token['access_token']}", **headers})
        yield call


def test_simulator_group_members_omit_service_principals_which_memberof_lists(sim, graph):
    inv = sim.inventory
    group = inv.groups()[7]
    sp_id = next(oid for t, oid in inv.direct_members(7) if t == SP_TYPE)
    members = graph(f"/groups/{group['id']}/members?$top=999").json()["value"]
    assert sp_id not in {m["id"] for m in members}
    member_of = graph(f"/servicePrincipals/{sp_id}/memberOf").json()["value"]
    assert group["id"] in {g["id"] for g in member_of}
    assert graph(f"/servicePrincipals/{sp_id}/memberOf", frozenset({"GroupMember.Read.All"})).status_code == 403


def test_simulator_hidden_membership_needs_member_read_hidden(sim, graph):
    hidden = next(i for i, g in enumerate(sim.inventory.groups()) if g["visibility"] == "HiddenMembership")
    group_id = sim.inventory.groups()[hidden]["id"]
    # As reported (microsoft-graph-docs #12552, #12285; msgraph-sdk-dotnet #1255): an empty list, not a refusal.
    silent = graph(f"/groups/{group_id}/members", DEFAULT_ROLES - {"Member.Read.Hidden"})
    assert silent.status_code == 200 and silent.json()["value"] == []
    sim.spec.hidden_membership_refused = True
    try:
        refused = graph(f"/groups/{group_id}/members", DEFAULT_ROLES - {"Member.Read.Hidden"})
    finally:
        sim.spec.hidden_membership_refused = False
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "Authorization_RequestDenied"
    granted = graph(f"/groups/{group_id}/members?$top=999")
    members = {oid for t, oid in sim.inventory.direct_members(hidden) if t != SP_TYPE}
    assert granted.status_code == 200 and {m["id"] for m in granted.json()["value"]} == members and members


def test_simulator_expand_manager_pages_of_100_and_no_advanced_query(sim, graph):
    page = graph("/users?$select=id&$expand=manager&$top=999").json()
    assert len(page["value"]) == 100 and "@odata.nextLink" in page
    assert any("manager" in u for u in page["value"])
    assert graph("/users?$expand=manager&$count=true", ConsistencyLevel="eventual").status_code == 400
    assert graph("/users?$expand=manager($levels=max;$select=id)").status_code == 400


def test_simulator_key_credentials_only_with_select_and_limited_per_minute(sim, graph):
    plain = graph("/servicePrincipals").json()["value"]
    assert all(c["key"] is None for s in plain for c in s["keyCredentials"])
    keyed = graph("/applications?$select=id,keyCredentials&$top=999").json()["value"]
    assert any(c["key"] for a in keyed for c in a["keyCredentials"])
    listed = graph("/applications").json()["value"]
    assert all(c["secretText"] is None for a in listed for c in a["passwordCredentials"])
    codes = [graph("/applications?$select=keyCredentials&$top=1").status_code for _ in range(150)]
    assert codes[-1] == 429 and codes.count(429) >= 1  # 150 a minute per tenant, the first call above included


def test_simulator_grants_take_no_top_and_pim_needs_p2(sim, graph):
    assert graph("/oauth2PermissionGrants?$top=5").status_code == 400
    assert graph("/oauth2PermissionGrants").status_code == 200
    assert graph("/oauth2PermissionGrants", frozenset({"Application.Read.All"})).status_code == 403
    sim.spec.p2 = False
    refused = graph("/roleManagement/directory/roleEligibilitySchedules")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "AadPremiumLicenseRequired"
    sim.spec.p2 = True
    assert graph("/roleManagement/directory/roleAssignmentSchedules").status_code == 200


# -- pieces -------------------------------------------------------------------------------------------------------


def test_rows_are_built_from_the_declared_sources():
    leg = Leg(name="x", child="", parent_kind="application",
              row=(("objectId", "parent.id"), ("objectType", "parent.kind"), ("ownerType", "child.@type"),
                   ("boss", "child.manager.id"), ("bossType", "child.manager.@type"), ("fixed", "=direct")))
    child = {"@odata.type": "#microsoft.graph.user", "id": "u1",
             "manager": {"@odata.type": "#microsoft.graph.orgContact", "id": "m1"}}
    assert _row(leg, {"id": "a1"}, child) == {"objectId": "a1", "objectType": "application", "ownerType": "user",
                                              "boss": "m1", "bossType": "orgContact", "fixed": "direct"}
    whole = Leg(name="y", child="", row=(("*", "child.*"),))
    assert _row(whole, None, {"id": "z", "appRoleId": "r"}) == {"id": "z", "appRoleId": "r"}


def test_scrub_removes_secret_text_and_keys_whatever_graph_sends():
    record = {"passwordCredentials": [{"hint": "abc", "secretText": "abc-the-whole-secret"}],
              "keyCredentials": [{"keyId": "k", "key": "MIIB..."}]}
    assert scrub(record) == {"passwordCredentials": [{"hint": "abc"}], "keyCredentials": [{"keyId": "k"}]}


def test_large_tenants_read_managers_in_two_character_chains(sim, env, tmp_path, monkeypatch):
    """From FanOut.fine_from users on (here lowered to 1,000), every letter gets a chain per second character;
    the chains still cover every user exactly once."""
    ds = DATASETS["user_managers"]
    monkeypatch.setitem(DATASETS, "user_managers",
                        dataclasses.replace(ds, fan_out=dataclasses.replace(ds.fan_out, fine_from=1000)))
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="user_managers")
    entry = manifest["datasets"]["user_managers"]
    assert entry["status"] == "succeeded" and entry["plan"] == {"strategy": "chains", "chains": 26 * 45 + 18}
    assert collected(store, manifest, "user_managers") == expected(sim, "user_managers")
    assert entry["objectsRead"] == entry["objectCount"] == 1100 and not entry["warnings"]


def test_permission_report_shows_optional_permissions_and_probes_a_fan_outs_parent_list(sim, env):
    import asyncio

    from connector.collect.permissions import permission_report
    from connector.config import load_settings

    sim.spec.roles = DEFAULT_ROLES - {"Member.Read.Hidden"}
    settings = load_settings({**env, "M365_DATASETS": "group_members,detected_app_devices,role_eligibilities"})
    sim.clear_requests()
    report = asyncio.run(permission_report(settings))
    members = report["datasets"]["group_members"]
    assert members["status"] == "ok"
    assert {o["roles"][0]: o["granted"] for o in members["optional"]} == {"Member.Read.Hidden": False,
                                                                          "Application.Read.All": True}
    # licence-dependent datasets are probed with one small request; a fan-out's probe is its parent list
    assert report["datasets"]["detected_app_devices"]["status"] == "ok"
    assert report["datasets"]["role_eligibilities"]["status"] == "ok" and report["ok"]
    paths = [r.path for r in sim.requests if r.service == "graph"]
    assert "/v1.0/deviceManagement/detectedApps" in paths and not [p for p in paths if "{id}" in p]
    sim.spec.p2 = False
    report = asyncio.run(permission_report(settings))
    assert report["datasets"]["role_eligibilities"]["status"] == "missing_licence" and not report["ok"]
