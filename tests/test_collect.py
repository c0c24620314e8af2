"""End-to-end collection against the simulator, with Blob Storage in Azurite and local folders."""

from __future__ import annotations

import collections
import logging
import re

import pytest

from connector.catalog.datasets import DATASETS, DEFAULT_DATASETS, USER_FIELDS
from connector.store.contract import read_json
from simulator import Simulator, TenantSpec
from simulator.tenant import DEFAULT_ROLES
from tests.conftest import apply_env
from tests.helpers import as_written, blob_env, latest, read_dataset, run

ALL_ROLES = DEFAULT_ROLES  # every dataset's least-privileged permissions
# Most tests here are about the core engine; the full-collection test runs every dataset.
CORE = "organization,subscribed_skus,users,user_sign_in_activity"


@pytest.fixture(scope="module")
def sim5000():
    with Simulator(TenantSpec(seed=7, users=5000)) as sim:
        yield sim


@pytest.fixture
def sim_env(sim5000, monkeypatch):
    sim5000.spec.roles = ALL_ROLES
    sim5000.spec.premium = True
    sim5000.spec.throttle_rate = 0.0
    sim5000.spec.foreign_next_link = False
    sim5000.spec.secret_expired = False
    env = sim5000.env(secret_in="env")
    env["M365_DATASETS"] = CORE
    apply_env(monkeypatch, env)
    return env


def _expected_users(sim, domains=None):
    users = list(sim.tenant.users())
    if domains:
        users = [u for u in users if u["userPrincipalName"].lower().endswith(tuple("@" + d for d in domains))]
    return users


@pytest.mark.parametrize("where", ["blob", "folder"])
def test_full_collection_is_complete_and_verifiable(sim5000, sim_env, azurite, tmp_path, where):
    dest = blob_env(azurite) if where == "blob" else {"SNAPSHOT_DIR": str(tmp_path)}
    manifest, store = run(sim_env, **dest, M365_DATASETS="*")

    assert manifest["status"] == "succeeded", manifest["warnings"]
    assert manifest["tenantId"] == sim5000.tenant_id
    assert set(manifest["datasets"]) == set(DEFAULT_DATASETS) == set(DATASETS) - {"copilot_usage_user_detail"}  # opt-in

    users = read_dataset(store, manifest, "users")
    ids = collections.Counter(u["id"] for u in users)
    assert len(users) == 5000 and max(ids.values()) == 1
    expected = {u["id"]: u for u in _expected_users(sim5000)}
    assert set(ids) == set(expected)
    for user in users:
        want = expected[user["id"]]
        assert {k: user.get(k) for k in USER_FIELDS} == {k: want.get(k) for k in USER_FIELDS}
        assert "signInActivity" not in user

    sign_ins = read_dataset(store, manifest, "user_sign_in_activity")
    assert len(sign_ins) == 5000 and len({s["id"] for s in sign_ins}) == 5000
    for rec in sign_ins:
        assert rec.get("signInActivity") == as_written(expected[rec["id"]].get("signInActivity"))

    skus = read_dataset(store, manifest, "subscribed_skus")
    assert sorted(s["skuId"] for s in skus) == sorted(s["skuId"] for s in sim5000.tenant.subscribed_skus())
    org = read_dataset(store, manifest, "organization")
    assert [o["id"] for o in org] == [sim5000.tenant_id]

    pointer = latest(store, sim5000.tenant_id)
    assert pointer["runId"] == manifest["runId"] and pointer["status"] == "succeeded"
    assert read_json(store, pointer["manifest"]) == manifest
    # Requests: users at $top=999 and the sign-in chain at 500 per page (one chain, the floor of its quota); users
    # also asks the delta links of its two rounds for the next run and lists the licensing groups (one page).
    assert manifest["datasets"]["users"]["requests"] == 6 + 2 + 1
    sign_in = manifest["datasets"]["user_sign_in_activity"]
    assert sign_in["requests"] == 10 and sign_in["plan"] == {"strategy": "sequential", "pageSize": 500}


def test_domain_filter_keeps_only_matching_users(sim5000, sim_env, tmp_path):
    manifest, store = run(sim_env, SNAPSHOT_DIR=str(tmp_path), M365_DOMAINS="Contoso.com, fabrikam.com")
    assert manifest["status"] == "succeeded"
    users = read_dataset(store, manifest, "users")
    expected = _expected_users(sim5000, ["contoso.com", "fabrikam.com"])
    assert 0 < len(users) < 5000
    assert sorted(u["id"] for u in users) == sorted(u["id"] for u in expected)
    assert manifest["datasets"]["users"]["excludedByDomainFilter"] == 5000 - len(expected)
    assert manifest["domainFilter"]["domains"] == ["contoso.com", "fabrikam.com"]
    assert set(manifest["domainFilter"]["organisationWide"]) == {"organization", "subscribed_skus"}
    # Seat counts stay organisation-wide.
    assert len(read_dataset(store, manifest, "subscribed_skus")) == len(list(sim5000.tenant.subscribed_skus()))


def test_missing_permission_skips_only_that_dataset(sim5000, sim_env, tmp_path):
    sim5000.spec.roles = frozenset({"User.Read.All", "Organization.Read.All"})
    manifest, store = run(sim_env, SNAPSHOT_DIR=str(tmp_path))
    assert manifest["status"] == "partial"
    signin = manifest["datasets"]["user_sign_in_activity"]
    assert signin["status"] == "skipped" and signin["missingPermissions"] == ["AuditLog.Read.All"]
    assert any(w["code"] == "missing_permission" and "AuditLog.Read.All" in w["message"]
               and "Grant admin consent" in w["message"] for w in manifest["warnings"])
    assert len(read_dataset(store, manifest, "users")) == 5000
    assert latest(store, sim5000.tenant_id)["status"] == "partial"


def test_missing_premium_licence_keeps_users(sim5000, sim_env, tmp_path):
    sim5000.spec.premium = False
    manifest, store = run(sim_env, SNAPSHOT_DIR=str(tmp_path))
    assert manifest["status"] == "partial"
    signin = manifest["datasets"]["user_sign_in_activity"]
    assert signin["status"] == "skipped" and signin["missingLicence"] == "Microsoft Entra ID P1 or P2"
    assert signin["file"] is None
    assert any(w["code"] == "missing_licence" for w in manifest["warnings"])
    assert len(read_dataset(store, manifest, "users")) == 5000


def test_throttling_storm_is_absorbed(sim5000, sim_env, tmp_path):
    sim5000.spec.throttle_rate = 0.3
    sim5000.spec.retry_after = 1
    manifest, store = run(sim_env, SNAPSHOT_DIR=str(tmp_path), M365_MAX_RETRIES="10")
    assert manifest["status"] == "succeeded", manifest["warnings"]
    assert sum(d["throttled"] for d in manifest["datasets"].values()) > 0
    users = read_dataset(store, manifest, "users")
    assert sorted(u["id"] for u in users) == sorted(u["id"] for u in sim5000.tenant.users())


def test_exhausted_retries_fail_one_dataset_with_graph_details(sim5000, sim_env, tmp_path):
    sim5000.fail_next("/v1.0/subscribedSkus", 503, "serviceNotAvailable", "Service unavailable", times=50)
    try:
        manifest, store = run(sim_env, SNAPSHOT_DIR=str(tmp_path), M365_MAX_RETRIES="2")
    finally:
        sim5000.fail_next("/v1.0/subscribedSkus", 503, "serviceNotAvailable", "x", times=0)
    skus = manifest["datasets"]["subscribed_skus"]
    assert skus["status"] == "failed"
    assert skus["error"]["code"] == "serviceNotAvailable" and skus["error"]["status"] == 503
    assert re.fullmatch(r"[0-9a-f-]{36}", skus["error"]["requestId"])
    assert manifest["status"] == "partial"
    assert manifest["datasets"]["users"]["status"] == "succeeded"


def test_failed_run_keeps_previous_latest(sim5000, sim_env, azurite):
    dest = blob_env(azurite)
    first, store = run(sim_env, **dest)
    assert first["status"] == "succeeded"
    sim5000.spec.secret_expired = True
    second, _ = run(sim_env, **dest)
    assert second["status"] == "failed"
    assert second["error"]["code"] == "AADSTS7000222"
    assert "new client secret" in second["error"]["remedy"]
    assert latest(store, sim5000.tenant_id)["runId"] == first["runId"]
    # The failed run still leaves its manifest for diagnosis, next to no data files.
    prefix = f"tenants/{second['tenantId']}/runs/{second['runId']}/"
    assert store.list(prefix) == [prefix + "manifest.json"]


def test_foreign_next_link_is_refused_and_receives_nothing(sim5000, sim_env, tmp_path):
    sim5000.spec.foreign_next_link = True
    sim5000.clear_requests()
    manifest, store = run(sim_env, SNAPSHOT_DIR=str(tmp_path))
    users = manifest["datasets"]["users"]
    assert users["status"] == "failed" and users["error"]["code"] == "ForeignNextLink"
    assert not [r for r in sim5000.requests if r.service == "decoy"]
    assert manifest["status"] == "partial"
    assert manifest["datasets"]["users"]["file"] is None


def test_no_secret_or_token_reaches_logs_outputs_or_snapshots(sim5000, sim_env, tmp_path, caplog, capsys):
    from connector.cli.main import main

    caplog.set_level(logging.DEBUG)
    code = main(["-v", "run", "--out", str(tmp_path)])
    assert code == 0
    code = main(["check", "--json"])
    out = capsys.readouterr()
    texts = [out.out, out.err, caplog.text]
    texts += [p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file()]
    import gzip

    texts += [gzip.decompress(p.read_bytes()).decode() for p in tmp_path.rglob("*.gz")]
    secret = sim5000.client_secret
    assert len(secret) >= 20
    for text in texts:
        assert secret not in text
        assert not re.search(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", text), "a JWT leaked"


def test_no_user_model_objects_are_built(sim5000, sim_env, tmp_path, monkeypatch):
    """Raw pages only: a spy on the SDK's User model counts constructions during a run."""
    import asyncio

    from msgraph.generated.models.user import User

    built = []
    original = User.__init__

    def spy(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(User, "__init__", spy)
    manifest, _ = run(sim_env, SNAPSHOT_DIR=str(tmp_path))
    assert manifest["datasets"]["users"]["records"] == 5000
    assert built == []

    # The spy does see the model-object way, so the zero above means something.
    from connector.config import load_settings
    from connector.graph.auth import GraphCredential, read_client_secret
    from connector.graph.client import Graph

    async def model_way():
        settings = load_settings(sim_env)
        graph = Graph(settings, GraphCredential(settings, read_client_secret(settings)))
        try:
            from kiota_abstractions.base_request_configuration import RequestConfiguration

            config = RequestConfiguration(query_parameters=graph.client.users.UsersRequestBuilderGetQueryParameters(
                top=5, select=["id"]))
            return await graph.client.users.get(request_configuration=config)
        finally:
            await graph.aclose()

    page = asyncio.run(model_way())
    assert len(page.value) == 5 and len(built) >= 5


def test_secret_from_key_vault_with_managed_identity(sim5000, monkeypatch, tmp_path):
    env = sim5000.env(secret_in="keyvault")
    assert "M365_CLIENT_SECRET" not in env
    apply_env(monkeypatch, env)
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="organization")
    assert manifest["status"] == "succeeded", manifest["warnings"]
    assert manifest["datasets"]["organization"]["records"] == 1
