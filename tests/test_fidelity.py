"""Graph's documented limits and reported quirks, enforced by the simulator, and how the collector copes:
the 15-clause `or` limit, UPN characters, throttling of one scope, long Retry-After, broken connections
and pages, the run's time limit, national clouds and the Directory.Read.All remedy."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from pathlib import Path

import httpx
import pytest

from connector.collect.engine import collect
from connector.config import ConfigError, load_settings
from connector.graph.retry import MAX_WAIT, AdaptiveLimiter, retry_after_seconds
from connector.store.destination import open_store
from simulator import Simulator, TenantSpec
from simulator.tenant import DEFAULT_ROLES, Tenant
from tests.conftest import apply_env
from tests.helpers import as_written, read_dataset, settings_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sim():
    with Simulator(TenantSpec(seed=21, users=1200)) as s:
        yield s


@pytest.fixture
def env(sim, monkeypatch):
    s = sim.spec
    s.roles, s.retry_after, s.identity_reports_limit, s.sign_in_is_identity_report = DEFAULT_ROLES, 1, None, False
    s.registration_needs_directory_read = False
    sim.fail_next("/v1.0/", 500, "x", "x", times=0)
    values = sim.env()
    apply_env(monkeypatch, values)
    return values


def run_bounded(env: dict[str, str], seconds: float = 120, **extra: str):
    """One collection; a run that hangs (the old limiter paused everything for a whole Retry-After)
    fails the test instead of blocking the suite."""
    settings = settings_for(env, **extra)
    store = open_store(settings)
    manifest = asyncio.run(asyncio.wait_for(collect(settings, store, trigger="test"), seconds))
    return manifest, store


def _token(sim: Simulator, client: httpx.Client) -> str:
    return client.post(f"{sim.authority_host}/{sim.tenant_id}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret,
        "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]


# --------------------------------------------------------------------------- simulator: Graph's rules


def test_simulator_refuses_a_sixteenth_or_clause(sim):
    with httpx.Client(verify=ssl.create_default_context(cafile=sim.ca_file), timeout=30) as client:
        headers = {"Authorization": f"Bearer {_token(sim, client)}"}
        clauses = [f"startswith(userPrincipalName,'{c}')" for c in "abcdefghijklmnop"]
        ok = client.get(f"{sim.graph_endpoint}/v1.0/users", headers=headers,
                        params={"$filter": " or ".join(clauses[:15])})
        assert ok.status_code == 200
        refused = client.get(f"{sim.graph_endpoint}/v1.0/users", headers=headers,
                             params={"$filter": " or ".join(clauses)})
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "Request_UnsupportedQuery"
        assert refused.json()["error"]["message"] == (
            "Too many child clauses specified in search filter expression containing 'OR' operators: 16. "
            "Max allowed: 15.")


def test_simulator_refuses_upns_entra_forbids():
    for bad in ("$", "%", "&", "*", "+", "=", "?", "{", "}", "|", "`", "/", " ", "é"):
        with pytest.raises(ValueError, match="does not allow"):
            Tenant(TenantSpec(users=3, upn_initials=bad))
    tenant = Tenant(TenantSpec(users=3))
    with pytest.raises(ValueError):
        tenant.rename(0, "a&b@contoso.com")
    with pytest.raises(ValueError):
        tenant.rename(0, "ends.with.dot.@contoso.com")


def test_simulator_identity_reports_limit_answers_429_after_five():
    with Simulator(TenantSpec(seed=2, users=50, identity_reports_limit=5, sign_in_is_identity_report=True)) as s:
        with httpx.Client(verify=ssl.create_default_context(cafile=s.ca_file), timeout=30) as client:
            headers = {"Authorization": f"Bearer {_token(s, client)}"}
            codes = [client.get(f"{s.graph_endpoint}/v1.0/users", headers=headers,
                                params={"$select": "id,signInActivity"}).status_code for _ in range(6)]
            assert codes == [200] * 5 + [429]
            # Plain user listing is not an identity report.
            assert client.get(f"{s.graph_endpoint}/v1.0/users", headers=headers).status_code == 200
            r = client.get(f"{s.graph_endpoint}/v1.0/reports/authenticationMethods/userRegistrationDetails",
                           headers=headers)
            assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 10


# --------------------------------------------------------------------------- the retry policy


def test_retry_after_parsing_and_capped_pauses():
    assert retry_after_seconds("10") == 10 and retry_after_seconds("2.128") == pytest.approx(2.128)
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait

    async def scenario():
        limiter = AdaptiveLimiter(4)
        limiter.throttled(3600)
        loop = asyncio.get_running_loop()
        assert limiter._resume_at - loop.time() <= MAX_WAIT  # never an hour-long pause

    asyncio.run(scenario())


def test_retry_after_of_an_hour_fails_one_dataset_and_holds_up_no_other(sim, env, tmp_path):
    sim.spec.retry_after = 3600
    sim.fail_next("/v1.0/subscribedSkus", 429, "TooManyRequests", "Please retry again later.", times=1)
    manifest, store = run_bounded(env, SNAPSHOT_DIR=str(tmp_path),
                                  M365_DATASETS="organization,subscribed_skus,users,user_sign_in_activity")
    skus = manifest["datasets"]["subscribed_skus"]
    assert skus["status"] == "failed" and skus["error"]["status"] == 429 and skus["retries"] == 0
    warning = next(w for w in manifest["warnings"] if w.get("dataset") == "subscribed_skus")
    assert warning["code"] == "throttled_gave_up" and "3600" in warning["message"]
    assert manifest["status"] == "partial"
    for name in ("organization", "users", "user_sign_in_activity"):
        entry = manifest["datasets"][name]
        assert entry["status"] == "succeeded" and "retryWaitSeconds" not in entry, name
    assert len(read_dataset(store, manifest, "users")) == 1200


def test_a_batch_item_with_an_hour_long_retry_after_fails_only_its_dataset(sim, env, tmp_path):
    """Inside a $batch every item carries its own Retry-After (json-batching.md): the same policy applies."""
    sim.spec.retry_after = 3600
    sim.fail_next("/v1.0/groups/", 429, "TooManyRequests", "Please retry again later.", times=1)
    # M365_DELTA=off: no /groups/delta request for the fault to land on before the batch items.
    manifest, store = run_bounded(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="users,groups,group_members",
                                  M365_DELTA="off")
    members = manifest["datasets"]["group_members"]
    assert members["status"] == "failed" and members["error"]["status"] == 429
    warning = next(w for w in manifest["warnings"] if w.get("dataset") == "group_members")
    assert warning["code"] == "throttled_gave_up" and "3600" in warning["message"]
    assert [manifest["datasets"][n]["status"] for n in ("users", "groups")] == ["succeeded", "succeeded"]
    assert len(read_dataset(store, manifest, "users")) == 1200


def test_a_quota_stricter_than_documented_slows_its_bucket_only_and_loses_nothing(env, monkeypatch, tmp_path):
    """Graph enforcing identity reports at 5 per 10 s while the collector paces them a hundred times faster (as if
    Microsoft lowered the quota): 429s pause that bucket for sign-in activity, the resource units of `users`
    are not held up, and every record arrives."""
    # 720 users at 120 a page: 6 sign-in pages against 5 requests per 10 s, while users are listed alongside.
    spec = TenantSpec(seed=21, users=720, identity_reports_limit=5, sign_in_is_identity_report=True,
                      sign_in_page_limit=120)
    with Simulator(spec) as s:
        values = s.env()
        apply_env(monkeypatch, values)
        manifest, store = run_bounded(values, SNAPSHOT_DIR=str(tmp_path),
                                      M365_DATASETS="users,user_sign_in_activity", M365_MAX_RETRIES="0")
        assert manifest["status"] == "succeeded", manifest["warnings"]
        assert [w["dataset"] for w in manifest["warnings"] if w["code"] == "throttled"] == ["user_sign_in_activity"]
        sign_in = manifest["datasets"]["user_sign_in_activity"]
        assert sign_in["throttled"] >= 1 and sign_in["retryWaitSeconds"] > 0
        users = manifest["datasets"]["users"]
        assert users["throttled"] == 0 and "retryWaitSeconds" not in users
        expected = {u["id"]: u["signInActivity"] for u in s.tenant.users()}
        got = {r["id"]: r.get("signInActivity") for r in read_dataset(store, manifest, "user_sign_in_activity")}
        assert got == as_written(expected)


@pytest.mark.parametrize("kind", ["reset", "cut", "truncated", "garbage"])
def test_broken_connections_and_pages_are_retried(sim, env, tmp_path, kind):
    sim.break_next("/v1.0/users", kind, times=3, exact=True)  # pages, not the $count
    try:
        manifest, store = run_bounded(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="users")
    finally:
        sim.break_next("/v1.0/users", kind, times=0, exact=True)
    users = manifest["datasets"]["users"]
    assert manifest["status"] == "succeeded", manifest["warnings"]
    assert users["brokenResponsesRetried"] == 3 and users["retries"] == 3
    records = read_dataset(store, manifest, "users")
    assert sorted(r["id"] for r in records) == sorted(u["id"] for u in sim.tenant.users())


def test_broken_batch_answers_are_retried(sim, env, tmp_path):
    sim.break_next("/v1.0/$batch", "cut", times=2)
    try:
        manifest, store = run_bounded(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="group_members")
    finally:
        sim.break_next("/v1.0/$batch", "cut", times=0)
    entry = manifest["datasets"]["group_members"]
    assert manifest["status"] == "succeeded", manifest["warnings"]
    assert entry["brokenResponsesRetried"] == 2 and entry["records"] > 0


def test_broken_answers_beyond_the_retry_budget_fail_only_that_dataset(sim, env, tmp_path):
    sim.break_next("/v1.0/subscribedSkus", "reset", times=10)
    try:
        manifest, _ = run_bounded(env, SNAPSHOT_DIR=str(tmp_path), M365_MAX_RETRIES="2",
                                  M365_DATASETS="organization,subscribed_skus")
    finally:
        sim.break_next("/v1.0/subscribedSkus", "reset", times=0)
    skus = manifest["datasets"]["subscribed_skus"]
    assert skus["status"] == "failed" and skus["error"]["code"] == "ConnectionFailed"
    assert "M365_MAX_RETRIES=2" in skus["error"]["message"] and skus["retries"] == 2
    assert manifest["datasets"]["organization"]["status"] == "succeeded"


def test_a_wait_past_the_run_time_limit_is_not_waited(sim, env, tmp_path):
    sim.spec.retry_after = 100  # below the 180 s cap, but more than a 1-minute run has left
    sim.fail_next("/v1.0/organization", 503, "serviceNotAvailable", "Service unavailable", times=1)
    manifest, _ = run_bounded(env, SNAPSHOT_DIR=str(tmp_path), M365_RUN_TIME_LIMIT="1",
                              M365_DATASETS="organization,subscribed_skus")
    org = manifest["datasets"]["organization"]
    assert org["status"] == "failed" and "M365_RUN_TIME_LIMIT=1" in org["error"]["message"]
    assert manifest["datasets"]["subscribed_skus"]["status"] == "succeeded"


def test_run_time_limit_setting_stays_below_the_function_timeout():
    base = {"M365_TENANT_ID": "contoso.onmicrosoft.com", "M365_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
            "M365_CLIENT_SECRET": "x"}
    default = load_settings(base).run_time_limit
    host = json.loads((ROOT / "host.json").read_text())
    h, m, s = (int(x) for x in host["functionTimeout"].split(":"))
    assert default * 60 < h * 3600 + m * 60 + s
    with pytest.raises(ConfigError, match="M365_RUN_TIME_LIMIT"):
        load_settings({**base, "M365_RUN_TIME_LIMIT": "0"})


# --------------------------------------------------------------------------- clouds and remedies


def test_national_cloud_skips_usage_reports_before_any_request(sim, env, tmp_path):
    sim.clear_requests()
    manifest, store = run_bounded(env, SNAPSHOT_DIR=str(tmp_path), M365_CLOUD="usgov",
                                  M365_DATASETS="users,report_mailbox_usage_detail,report_m365_app_user_detail")
    for name in ("report_mailbox_usage_detail", "report_m365_app_user_detail"):
        entry = manifest["datasets"][name]
        assert entry["status"] == "skipped" and entry["unavailableInCloud"] == "usgov" and entry["error"] is None
    skipped = [w for w in manifest["warnings"] if w["code"] == "not_in_cloud"]
    assert len(skipped) == 2 and all("usgov" in w["message"] for w in skipped)
    assert manifest["status"] == "succeeded"  # nothing the cloud offers is missing
    assert not [r for r in sim.requests if r.path.startswith("/v1.0/reports")]
    assert len(read_dataset(store, manifest, "users")) == 1200


def test_registration_licence_check_failure_names_directory_read_all(sim, env, tmp_path):
    sim.spec.registration_needs_directory_read = True
    manifest, _ = run_bounded(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="users,mfa_registration")
    entry = manifest["datasets"]["mfa_registration"]
    assert entry["status"] == "skipped" and entry["missingPermissions"] == ["Directory.Read.All"]
    assert entry["error"]["code"] == "Authentication_ApplicationHasNoDirectoryReadAccess"
    warning = next(w for w in manifest["warnings"] if w.get("dataset") == "mfa_registration")
    assert warning["code"] == "missing_permission" and re.search(r"Grant Directory\.Read\.All", warning["message"])
    sim.spec.roles = DEFAULT_ROLES | {"Directory.Read.All"}
    manifest, _ = run_bounded(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="mfa_registration")
    assert manifest["datasets"]["mfa_registration"]["status"] == "succeeded"


def test_check_reports_cloud_gaps_as_no_failure_and_the_directory_read_remedy(sim, env):
    from connector.collect.permissions import permission_report

    sim.spec.registration_needs_directory_read = True
    settings = settings_for(env, M365_CLOUD="china", M365_DATASETS="users,report_mailbox_usage_detail")
    report = asyncio.run(permission_report(settings))
    assert report["datasets"]["report_mailbox_usage_detail"]["status"] == "not_in_cloud"
    assert report["ok"] is True
    report = asyncio.run(permission_report(settings_for(env, M365_DATASETS="mfa_registration")))
    entry = report["datasets"]["mfa_registration"]
    assert entry["status"] == "missing_permission" and "Grant Directory.Read.All" in entry["remedy"]
