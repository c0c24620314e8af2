"""Issue 21, point 6: facts found in a documentation audit, each enforced by the simulator (with its source
there) and handled by the collector: LicenseAssignment.Read.All for subscribedSkus, no createdDateTime on v1.0
devices, hidden-membership groups left out silently, RoleManagement.Read.Directory for the PIM assignment
schedules, startswith() in every case for the managers, Intune without a licence and a managedDevices listing
shorter than its documented count."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import unquote

import httpx
import pytest

from connector.catalog.datasets import DATASETS, INTUNE, USER_MANAGERS
from connector.collect.permissions import permission_report
from simulator import Simulator, TenantSpec
from simulator.graph.users import parse_upn_prefix_filter
from simulator.tenant import DEFAULT_ROLES, UPN_LOCAL_CHARS
from tests.conftest import apply_env
from tests.helpers import read_dataset, run, settings_for
from tests.test_datasets_access import collected, expected

INTUNE_DATASETS = ("managed_devices", "detected_apps", "detected_app_devices")


def _documented_defaults(spec: TenantSpec) -> None:
    """The options these tests turn, back to the simulator's defaults (the simulator is shared by the module)."""
    spec.roles, spec.intune_licensed, spec.managed_devices_left_out = DEFAULT_ROLES, True, 0
    spec.hidden_membership_refused = spec.assignment_schedule_role_refused = False


@pytest.fixture(scope="module")
def sim():
    """A small tenant with groups of hidden membership, Intune devices and PIM schedules, shared by the module."""
    spec = TenantSpec(seed=41, users=400, groups=40, applications=10, devices=80)
    assert spec.intune_licensed and not spec.hidden_membership_refused  # the documented defaults
    with Simulator(spec) as s:
        yield s


@pytest.fixture
def env(sim, monkeypatch):
    _documented_defaults(sim.spec)
    apply_env(monkeypatch, values := sim.env())
    yield values
    _documented_defaults(sim.spec)


@pytest.fixture
def graph(sim, env):
    """A GET with a token holding `roles` (the simulator's defaults unless given)."""
    form = {"grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret,
            "scope": "https://graph.microsoft.com/.default"}
    with httpx.Client(verify=ssl.create_default_context(cafile=sim.ca_file)) as http:
        def call(path: str, roles: frozenset[str] | None = None) -> httpx.Response:
            sim.spec.roles = roles if roles is not None else DEFAULT_ROLES
            token = http.post(f"{sim.authority_host}/{sim.tenant_id}/oauth2/v2.0/token", data=form).json()
            return http.get(f"{sim.graph_endpoint}/v1.0{path}",
                            headers={"Authorization": f"Bearer {token['access_token']}"})
        yield call


def _warnings(manifest: dict, code: str) -> list[dict]:
    return [w for w in manifest["warnings"] if w["code"] == code]


# ------------------------------------------------------------------------------- subscribedSkus


def test_subscribed_skus_with_license_assignment_read_all_only(sim, env, tmp_path, graph):
    only = frozenset({"LicenseAssignment.Read.All"})
    assert DATASETS["subscribed_skus"].requires[0][0] == "LicenseAssignment.Read.All"  # published least privileged
    assert graph("/subscribedSkus", only).status_code == 200
    assert graph("/organization", only).status_code == 403  # /organization does not take it
    sim.spec.roles = only
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="subscribed_skus")
    entry = manifest["datasets"]["subscribed_skus"]
    assert manifest["status"] == "succeeded" and entry["status"] == "succeeded"
    assert {r["skuId"] for r in read_dataset(store, manifest, "subscribed_skus")} == \
        {s["skuId"] for s in sim.tenant.subscribed_skus()}


# ------------------------------------------------------------------------------- devices


def test_devices_ask_only_v1_properties_and_the_simulator_refuses_created_date_time(sim, env, tmp_path, graph):
    refused = graph("/devices?$select=id,createdDateTime")
    assert refused.status_code == 400 and "createdDateTime" in refused.json()["error"]["message"]
    assert graph("/devices?$select=id,registrationDateTime").status_code == 200
    assert "createdDateTime" not in DATASETS["devices"].select
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="devices")
    assert manifest["datasets"]["devices"]["status"] == "succeeded"
    records = read_dataset(store, manifest, "devices")
    assert len(records) == len(sim.inventory.devices())
    assert all("createdDateTime" not in r and r["registrationDateTime"] for r in records)


# ------------------------------------------------------------------------------- hidden membership


def test_hidden_membership_left_out_silently_is_warned_in_every_run(sim, env, tmp_path):
    hidden = {g["id"] for g in sim.inventory.groups() if g["visibility"] == "HiddenMembership"}
    assert hidden
    sim.spec.roles = DEFAULT_ROLES - {"Member.Read.Hidden"}
    for attempt in range(2):  # every run says it, not only the first
        manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path / str(attempt)), M365_DATASETS="group_members")
        entry = manifest["datasets"]["group_members"]
        assert manifest["status"] == "succeeded" and entry["status"] == "succeeded"
        warned = _warnings(manifest, "hidden_membership_not_granted")
        assert len(warned) == 1 and f"{len(hidden)} group(s)" in warned[0]["message"]
        assert "Member.Read.Hidden" in warned[0]["message"] and "#12552" in warned[0]["message"]
        assert entry["unverifiable"] == {"groupMembers": len(hidden)} and "refused" not in entry
        assert not _warnings(manifest, "hidden_membership")  # nothing was refused: Graph answered 200
    assert collected(store, manifest, "group_members") == [m for m in expected(sim, "group_members")
                                                           if m[0] not in hidden]
    sim.spec.roles = DEFAULT_ROLES
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path / "granted"), M365_DATASETS="group_members")
    assert not _warnings(manifest, "hidden_membership_not_granted")
    assert collected(store, manifest, "group_members") == expected(sim, "group_members")


# ------------------------------------------------------------------------------- PIM assignment schedules


def test_assignment_schedules_refused_with_the_schedule_role_name_role_management_read_directory(sim, env, tmp_path):
    only = frozenset({"RoleAssignmentSchedule.Read.Directory"})
    assert DATASETS["role_assignment_schedules"].requires[0][:2] == ("RoleManagement.Read.Directory",
                                                                    "RoleAssignmentSchedule.Read.Directory")
    sim.spec.roles = only  # accepted unless the simulator is told otherwise (Graph's behaviour is not verified)
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path / "accepted"), M365_DATASETS="role_assignment_schedules")
    assert manifest["datasets"]["role_assignment_schedules"]["status"] == "succeeded"
    assert len(read_dataset(store, manifest, "role_assignment_schedules")) == len(expected(sim,
                                                                                          "role_assignment_schedules"))
    sim.spec.assignment_schedule_role_refused = True
    manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path / "refused"), M365_DATASETS="role_assignment_schedules")
    entry = manifest["datasets"]["role_assignment_schedules"]
    assert manifest["status"] == "failed" and entry["status"] == "skipped"  # the run's only dataset
    assert entry["missingPermissions"] == ["RoleManagement.Read.Directory"]
    [warned] = _warnings(manifest, "missing_permission")
    assert "Grant RoleManagement.Read.Directory" in warned["message"]
    assert "although the app holds RoleAssignmentSchedule.Read.Directory" in warned["message"]
    report = asyncio.run(permission_report(settings_for(env, M365_DATASETS="role_assignment_schedules")))
    entry = report["datasets"]["role_assignment_schedules"]
    assert entry["status"] == "missing_permission" and "Grant RoleManagement.Read.Directory" in entry["remedy"]
    sim.spec.roles = only | {"RoleManagement.Read.Directory"}
    manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path / "fixed"), M365_DATASETS="role_assignment_schedules")
    assert manifest["datasets"]["role_assignment_schedules"]["status"] == "succeeded"


# ------------------------------------------------------------------------------- managers: startswith in every case


def test_manager_chains_ask_every_case_within_graph_limits():
    leg = USER_MANAGERS.legs[0]
    for seeds in (leg.seeds, leg.fine_seeds):
        covered: set[str] = set()
        for url in seeds:
            prefixes = parse_upn_prefix_filter(unquote(url.split("$filter=", 1)[1]))
            assert len(prefixes) <= 15, url
            folded = {p.lower() for p in prefixes}
            assert len(folded) == 1, url  # one folded prefix per chain, in all its cases
            [prefix] = folded
            assert set(prefixes) == {"".join(c) for c in _cases(prefix)}, url
            covered.add(prefix)
        # every allowed first character is the start of some chain
        assert {c.lower() for c in UPN_LOCAL_CHARS} == {p[0] for p in covered}


def _cases(prefix: str) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [()]
    for ch in prefix:
        out = [head + (c,) for head in out for c in {ch, ch.upper()}]
    return out


@pytest.mark.parametrize("case_sensitive", [True, False])
def test_every_manager_is_collected_with_mixed_case_initials(case_sensitive, monkeypatch, tmp_path):
    with Simulator(TenantSpec(seed=42, users=600, upn_initials=UPN_LOCAL_CHARS,
                              startswith_case_sensitive=case_sensitive)) as s:
        assert any(s.tenant.upn(i)[0].isupper() for i in range(s.tenant.user_count))
        env = s.env()
        apply_env(monkeypatch, env)
        manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="user_managers")
        entry = manifest["datasets"]["user_managers"]
        assert entry["status"] == "succeeded" and not _warnings(manifest, "count_mismatch")
        assert entry["objectsRead"] == s.tenant.user_count
        assert collected(store, manifest, "user_managers") == expected(s, "user_managers")


# ------------------------------------------------------------------------------- Intune


def test_intune_without_a_licence_is_skipped_as_a_licence_matter(sim, env, tmp_path, graph):
    sim.spec.intune_licensed = False
    answer = graph("/deviceManagement/managedDevices")
    assert answer.status_code == 400 and answer.json()["error"]["message"] == "Request not applicable to target tenant."
    manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS=",".join((*INTUNE_DATASETS, "devices")))
    assert manifest["status"] == "partial"
    for name in INTUNE_DATASETS:
        entry = manifest["datasets"][name]
        assert entry["status"] == "skipped" and entry["missingLicence"] == INTUNE, name
        assert not entry.get("missingPermissions"), name
    assert {w["dataset"] for w in _warnings(manifest, "missing_licence")} == set(INTUNE_DATASETS)
    assert not _warnings(manifest, "dataset_failed")
    assert manifest["datasets"]["devices"]["status"] == "succeeded"


def test_check_names_the_intune_licence(sim, env):
    sim.spec.intune_licensed = False
    report = asyncio.run(permission_report(settings_for(env, M365_DATASETS="managed_devices,devices")))
    assert report["datasets"]["managed_devices"]["status"] == "missing_licence"
    assert INTUNE in report["datasets"]["managed_devices"]["remedy"]
    assert report["datasets"]["devices"]["status"] == "ok"


def test_managed_devices_are_checked_against_the_documented_enrolled_count(sim, env, tmp_path, graph):
    total = len(sim.inventory.managed_devices())
    overview = graph("/deviceManagement/managedDeviceOverview").json()
    assert overview["enrolledDeviceCount"] == total > 3
    manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path / "whole"), M365_DATASETS="managed_devices")
    entry = manifest["datasets"]["managed_devices"]
    assert entry["status"] == "succeeded" and entry["records"] == total
    assert entry["documentedCount"] == {"path": "/deviceManagement/managedDeviceOverview",
                                        "property": "enrolledDeviceCount", "value": total, "listed": total}
    assert not _warnings(manifest, "listing_shortfall")
    sim.spec.managed_devices_left_out = 3  # microsoft-graph-docs #21659: the unfiltered listing is short
    manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path / "short"), M365_DATASETS="managed_devices")
    entry = manifest["datasets"]["managed_devices"]
    assert entry["records"] == total - 3 and entry["documentedCount"]["listed"] == total - 3
    [warned] = _warnings(manifest, "listing_shortfall")
    assert f"{total - 3} records" in warned["message"] and "3 missing" in warned["message"]
    assert "#21659" in warned["message"]
