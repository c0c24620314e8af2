"""Issue 6 datasets end to end against the simulator: usage reports, MFA, groups and memberships,
roles, devices, Intune and subscriptions, each compared with what the simulated tenant holds."""

from __future__ import annotations

import collections
import math
import ssl

import pytest

from connector.catalog.datasets import DATASETS
from connector.collect.reports import CsvStream, field_name
from simulator import Simulator, TenantSpec
from simulator.tenant import DEFAULT_ROLES
from simulator.usage import REPORTS
from tests.conftest import apply_env
from tests.helpers import read_dataset, run

NEW = ("subscriptions", "mfa_registration", "groups", "group_members", "role_assignments", "devices",
       "managed_devices", "detected_apps") + tuple(n for n in DATASETS if n.startswith("report_"))
CORE = "organization,subscribed_skus,users,user_sign_in_activity"
REPORT_OF = {n: d.report for n, d in DATASETS.items() if d.report}


@pytest.fixture(scope="module")
def sim():
    with Simulator(TenantSpec(seed=21, users=400)) as s:
        yield s


@pytest.fixture
def env(sim, monkeypatch):
    sim.spec.roles, sim.spec.premium = DEFAULT_ROLES, True
    sim.spec.report_names_concealed, sim.spec.report_settings_wrapped = True, False
    values = sim.env(secret_in="env")
    apply_env(monkeypatch, values)
    return values


def _expected_members(sim) -> list[tuple[str, str, str, str]]:
    inv = sim.inventory
    out = []
    for index, group in enumerate(inv.groups()):
        direct = inv.direct_members(index)
        ids = {oid for _t, oid in direct}
        out += [(group["id"], oid, t.rsplit(".", 1)[-1], "direct") for t, oid in direct]
        out += [(group["id"], oid, t.rsplit(".", 1)[-1], "transitive")
                for t, oid in inv.transitive_members(index) if oid not in ids]
    return sorted(out)


def test_every_new_dataset_is_complete_and_equals_the_tenant(sim, env, tmp_path):
    sim.spec.report_names_concealed = False
    sim.clear_requests()
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_REPORT_PERIOD="D7")
    assert manifest["status"] == "succeeded", manifest["warnings"]
    inv = sim.inventory
    for name in NEW:
        assert manifest["datasets"][name]["status"] == "succeeded", name
        assert manifest["datasets"][name]["requests"] >= 1, name

    def by_id(records):
        return {r["id"]: r for r in records}

    assert read_dataset(store, manifest, "subscriptions") == inv.subscriptions()
    assert read_dataset(store, manifest, "mfa_registration") == inv.registration_details()
    assert read_dataset(store, manifest, "managed_devices") == inv.managed_devices()
    assert read_dataset(store, manifest, "detected_apps") == inv.detected_apps()
    groups = read_dataset(store, manifest, "groups")
    select = DATASETS["groups"].select
    assert [{k: g[k] for k in select} for g in inv.groups()] == groups
    devices = read_dataset(store, manifest, "devices")
    assert by_id(devices) == {d["id"]: {k: d[k] for k in DATASETS["devices"].select} for d in inv.devices()}

    roles = read_dataset(store, manifest, "role_assignments")
    names = {d["id"]: d["displayName"] for d in inv.role_definitions()}
    assert sorted((r["id"], r["principal"]["id"], r["roleDefinition"]["displayName"]) for r in roles) == sorted(
        (a["id"], p["id"], names[a["roleDefinitionId"]]) for a, p in inv.role_assignments())
    assert {r["principal"]["@odata.type"] for r in roles} >= {"#microsoft.graph.user",
                                                              "#microsoft.graph.servicePrincipal"}

    members = read_dataset(store, manifest, "group_members")
    got = sorted((m["groupId"], m["memberId"], m["memberType"], m["membership"]) for m in members)
    assert got == _expected_members(sim)
    assert {m[3] for m in got} == {"direct", "transitive"} and {m[2] for m in got} >= {"user", "group", "device"}

    for name, report in REPORT_OF.items():
        period = "D7" if REPORTS[report][1] else None
        records = read_dataset(store, manifest, name)
        assert records == sim.usage.rows(report, period, concealed=False), name
        entry = manifest["datasets"][name]
        assert entry["concealed"] is False and entry["requests"] == 1
        assert entry.get("period") == period
    # An undocumented column (Recipient Type) still comes through, named by the rule.
    assert read_dataset(store, manifest, "report_mailbox_usage_detail")[0]["recipientType"] == "User"
    assert not [w for w in manifest["warnings"] if w["code"] == "concealed_names"]
    # The report URL carried the configured period.
    calls = [r for r in sim.requests if "getMailboxUsageDetail" in r.path]
    assert [r.path.rsplit("/", 1)[-1] for r in calls] == ["getMailboxUsageDetail(period='D7')"]


def test_report_download_receives_no_authorization_header(sim, env, tmp_path):
    sim.clear_requests()
    manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="report_email_activity_user_detail")
    assert manifest["status"] == "succeeded", manifest["warnings"]
    graph_calls = [r for r in sim.requests if r.service == "graph" and "getEmailActivityUserDetail" in r.path]
    downloads = [r for r in sim.requests if r.service == "download"]
    assert len(graph_calls) == 1 and graph_calls[0].status == 302
    assert graph_calls[0].headers["authorization"].startswith("Bearer ")
    assert len(downloads) == 1 and downloads[0].status == 200
    assert "authorization" not in downloads[0].headers


def test_concealed_names_give_warning_flag_and_skip_the_domain_filter(sim, env, tmp_path):
    sim.spec.report_names_concealed = True
    sim.spec.report_settings_wrapped = True  # the doc sample's shape is read as well
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DOMAINS="contoso.com",
                          M365_DATASETS="report_mailbox_usage_detail,report_onedrive_usage_account_detail,users")
    assert manifest["status"] == "succeeded"
    for name in ("report_mailbox_usage_detail", "report_onedrive_usage_account_detail"):
        entry = manifest["datasets"][name]
        assert entry["concealed"] is True and entry["reportSettings"] == {"displayConcealedNames": True}
        assert entry["domainFilter"] == "not applied" and entry["excludedByDomainFilter"] == 0
        warning = [w for w in manifest["warnings"] if w["code"] == "concealed_names" and w["dataset"] == name]
        assert len(warning) == 1 and "untick 'Display concealed user, group, and site names" in warning[0]["message"]
        records = read_dataset(store, manifest, name)
        assert records == sim.usage.rows(REPORT_OF[name], "D30", concealed=True)
    # users are still filtered
    assert manifest["datasets"]["users"]["domainFilter"] == "applied"


def test_unconcealed_report_is_domain_filtered_without_warning(sim, env, tmp_path):
    sim.spec.report_names_concealed = False
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DOMAINS="contoso.com",
                          M365_DATASETS="report_mailbox_usage_detail")
    entry = manifest["datasets"]["report_mailbox_usage_detail"]
    assert entry["concealed"] is False and entry["domainFilter"] == "applied"
    assert not manifest["warnings"]
    expected = [r for r in sim.usage.rows("getMailboxUsageDetail", "D30", False)
                if r["userPrincipalName"].lower().endswith("@contoso.com")]
    assert 0 < len(expected) and read_dataset(store, manifest, "report_mailbox_usage_detail") == expected
    assert entry["excludedByDomainFilter"] > 0


def test_concealment_without_report_settings_permission_is_detected_from_the_data(sim, env, tmp_path):
    sim.spec.roles = DEFAULT_ROLES - {"ReportSettings.Read.All"}
    manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="report_teams_user_activity_user_detail")
    entry = manifest["datasets"]["report_teams_user_activity_user_detail"]
    assert entry["concealed"] is True and "reportSettings" not in entry
    assert "grant ReportSettings.Read.All" in manifest["warnings"][0]["message"]


@pytest.mark.parametrize(("removed", "premium", "skipped", "reason"), [
    ({"Reports.Read.All"}, True, [n for n in REPORT_OF], ("missingPermissions", ["Reports.Read.All"])),
    ({"Device.Read.All", "DeviceManagementManagedDevices.Read.All"}, True,
     ["devices", "managed_devices", "detected_apps", "detected_app_devices"], None),
    (set(), False, ["mfa_registration", "user_sign_in_activity", "role_eligibilities", "role_assignment_schedules"],
     ("missingLicence", None)),
])
def test_missing_permission_or_licence_skips_only_those_datasets(sim, env, tmp_path, removed, premium, skipped,
                                                                 reason):
    sim.spec.roles, sim.spec.premium = DEFAULT_ROLES - removed, premium
    manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path))
    assert manifest["status"] == "partial"
    for name, entry in manifest["datasets"].items():
        if name in skipped:
            assert entry["status"] == "skipped" and entry["file"] is None, name
            if reason:
                assert entry[reason[0]] == (reason[1] or DATASETS[name].licence), name
            else:
                assert entry["missingPermissions"] in (["Device.Read.All"],
                                                       ["DeviceManagementManagedDevices.Read.All"]), name
            code = "missing_licence" if reason and reason[0] == "missingLicence" else "missing_permission"
            assert any(w["code"] == code and w["dataset"] == name for w in manifest["warnings"]), name
        else:
            assert entry["status"] == "succeeded", (name, entry["warnings"])
    assert len(read_dataset(store, manifest, "group_members")) == len(_expected_members(sim))


def test_group_members_for_2000_groups_within_one_request_per_20_groups(monkeypatch, tmp_path):
    with Simulator(TenantSpec(seed=4, users=300, groups=2000, devices=20)) as big:
        env = big.env(secret_in="env")
        apply_env(monkeypatch, env)
        manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="group_members")
        assert manifest["status"] == "succeeded", manifest["warnings"]
        entry = manifest["datasets"]["group_members"]
        batches = big.request_count("/v1.0/$batch")
        # the groups listing's pages, without the delta links asked for the next run (/groups/delta, /users/delta)
        links = big.request_count("/v1.0/groups/delta") + big.request_count("/v1.0/users/delta")
        list_pages = big.request_count("/v1.0/groups") - big.request_count("/v1.0/groups/delta")
        sps = len(big.inventory.apps.service_principals)
        sp_pages = big.request_count("/v1.0/servicePrincipals")
        # member pages beyond the first: one batch item each (the 300-member "All Company" fits in one page);
        # plus one item per service principal for its memberOf (v1.0 group members omit service principals)
        extra_pages = sum(max(0, math.ceil(len(big.inventory.direct_members(i)) / 999) - 1) for i in range(2000))
        assert list_pages == math.ceil(2000 / 999) and sp_pages == math.ceil(sps / 999)
        assert batches <= math.ceil((2000 + sps + extra_pages) / 20) + 2
        assert links == 2  # `$deltatoken=latest` of the two rounds group_members follows by delta
        assert entry["requests"] == batches + list_pages + sp_pages + links
        members = read_dataset(store, manifest, "group_members")
        got = sorted((m["groupId"], m["memberId"], m["memberType"], m["membership"]) for m in members)
        assert got == _expected_members(big)
        assert entry["groups"] == 2000 and entry["batches"] == batches


def test_batch_items_throttled_alone_are_retried_after_their_own_retry_after(monkeypatch, tmp_path):
    with Simulator(TenantSpec(seed=9, users=120, groups=60, devices=10)) as s:
        env = s.env(secret_in="env")
        apply_env(monkeypatch, env)
        s.spec.throttle_rate, s.spec.retry_after = 0.2, 0.2
        manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="group_members", M365_MAX_RETRIES="10")
        s.spec.throttle_rate = 0.0
        assert manifest["status"] == "succeeded", manifest["warnings"]
        assert manifest["datasets"]["group_members"]["throttled"] > 0
        members = read_dataset(store, manifest, "group_members")
        assert sorted((m["groupId"], m["memberId"], m["membership"]) for m in members) == sorted(
            (g, m, k) for g, m, _t, k in _expected_members(s))


def test_report_requests_never_exceed_14_per_10_minutes(monkeypatch, tmp_path):
    """A report throttled on every attempt: the connector stops at 1 + 2 retries per run and, over
    runs, never sends more than 14 requests to one report API within the window."""
    # Graph's own 10-minute window (quota_scale=1): the pacer must refuse, not wait, past 14 in it.
    with Simulator(TenantSpec(seed=2, users=30, report_rate_limit=0, quota_scale=1)) as s:
        env = s.env(secret_in="env")
        apply_env(monkeypatch, env)
        s.spec.retry_after = 0.01
        s.fail_next("/v1.0/reports/getMailboxUsageDetail", 429, "TooManyRequests", "Please retry again later.",
                    times=1000)
        statuses = []
        for _ in range(6):
            manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="report_mailbox_usage_detail")
            entry = manifest["datasets"]["report_mailbox_usage_detail"]
            statuses.append((entry["status"], entry["error"]["code"]))
        sent = s.request_count("/v1.0/reports/getMailboxUsageDetail")
        assert sent == 14
        assert statuses[:4] == [("failed", "TooManyRequests")] * 4
        assert statuses[-1] == ("failed", "QuotaWouldBeExceeded")
        assert "14 requests" in manifest["datasets"]["report_mailbox_usage_detail"]["error"]["message"]


def test_simulator_report_rate_limit_answers_429_after_14():
    import httpx

    with Simulator(TenantSpec(seed=2, users=10)) as s, \
            httpx.Client(verify=ssl.create_default_context(cafile=s.ca_file)) as http:
        form = {"grant_type": "client_credentials", "client_id": s.client_id, "client_secret": s.client_secret,
                "scope": "https://graph.microsoft.com/.default"}
        token = http.post(f"{s.authority_host}/{s.tenant_id}/oauth2/v2.0/token", data=form).json()["access_token"]
        url = f"{s.graph_endpoint}/v1.0/reports/getTeamsUserActivityUserDetail(period='D7')"
        codes = [http.get(url, headers={"Authorization": f"Bearer {token}"}).status_code for _ in range(15)]
        assert codes == [302] * 14 + [429]
        other = http.get(f"{s.graph_endpoint}/v1.0/reports/getMailboxUsageDetail(period='D7')",
                         headers={"Authorization": f"Bearer {token}"})
        assert other.status_code == 302  # the limit is per report API
        bad = http.get(f"{s.graph_endpoint}/v1.0/reports/getMailboxUsageDetail(period='D8')",
                       headers={"Authorization": f"Bearer {token}"})
        assert bad.status_code == 400
        # The download host refuses a bearer token and serves the CSV without one.
        location = other.headers["location"]
        assert http.get(location, headers={"Authorization": f"Bearer {token}"}).status_code == 401
        body = http.get(location).content
        assert body.startswith(b"\xef\xbb\xbf\"Report Refresh Date\",")
        s.spec.roles = frozenset({"User.Read.All"})
        token = http.post(f"{s.authority_host}/{s.tenant_id}/oauth2/v2.0/token", data=form).json()["access_token"]
        denied = http.get(url.replace("Teams", "Email").replace("UserActivity", "Activity"),
                          headers={"Authorization": f"Bearer {token}"})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "S2SUnauthorized"


def test_simulator_batch_rules():
    import httpx

    with Simulator(TenantSpec(seed=2, users=10)) as s, \
            httpx.Client(verify=ssl.create_default_context(cafile=s.ca_file)) as http:
        form = {"grant_type": "client_credentials", "client_id": s.client_id, "client_secret": s.client_secret,
                "scope": "https://graph.microsoft.com/.default"}
        token = http.post(f"{s.authority_host}/{s.tenant_id}/oauth2/v2.0/token", data=form).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        too_many = {"requests": [{"id": str(i), "method": "GET", "url": "/groups"} for i in range(21)]}
        assert http.post(f"{s.graph_endpoint}/v1.0/$batch", json=too_many, headers=auth).status_code == 400
        dup = {"requests": [{"id": "1", "method": "GET", "url": "/groups"}] * 2}
        assert http.post(f"{s.graph_endpoint}/v1.0/$batch", json=dup, headers=auth).status_code == 400
        mixed = {"requests": [{"id": "a", "method": "GET", "url": "/groups?$top=1"},
                              {"id": "b", "method": "GET", "url": "/users?$top=1"},
                              {"id": "c", "method": "GET", "url": "/deviceManagement/managedDevices"}]}
        s.spec.roles = frozenset({"GroupMember.Read.All"})
        token = http.post(f"{s.authority_host}/{s.tenant_id}/oauth2/v2.0/token", data=form).json()["access_token"]
        reply = http.post(f"{s.graph_endpoint}/v1.0/$batch", json=mixed, headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 200
        by_id = {r["id"]: r for r in reply.json()["responses"]}
        assert by_id["a"]["status"] == 200 and "@odata.nextLink" in by_id["a"]["body"]
        assert by_id["b"]["status"] == 403 and by_id["b"]["body"]["error"]["code"] == "Authorization_RequestDenied"
        assert by_id["c"]["status"] == 403 and by_id["c"]["body"]["error"]["code"] == "Forbidden"
        assert http.post(f"{s.graph_endpoint}/v1.0/$batch", json=mixed).status_code == 401


# -- CSV parsing -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "name"), [
    ("User Principal Name", "userPrincipalName"), ("Exchange Last Activity Date", "exchangeLastActivityDate"),
    ("Storage Used (Byte)", "storageUsedInBytes"), ("Prohibit Send/Receive Quota (Byte)",
                                                   "prohibitSendReceiveQuotaInBytes"),
    ("Outlook (Windows)", "outlookWindows"), ("Site URL", "siteUrl"), ("iOS", "ios"),
    ("Windows 10 Mobile", "windows10Mobile"), ("OneDrive Last Activity Date", "oneDriveLastActivityDate"),
    ("Scheduled One-time Meetings Organized Count", "scheduledOneTimeMeetingsOrganizedCount"),
    ("Copilot Chat Last Activity Date", "copilotChatLastActivityDate"),
])
def test_header_names(header, name):
    assert field_name(header) == name


def test_every_simulated_header_maps_to_graphs_json_name():
    for columns, _ in REPORTS.values():
        for header, json_name, _kind in columns:
            assert field_name(header) == json_name, header


def test_csv_stream_types_values_and_survives_any_chunking():
    data = ("\ufeff\"Report Refresh Date\",\"User Principal Name\",\"Display Name\",\"Is Deleted\",\"Deleted Date\","
            "\"Item Count\",\"Has Archive\",\"Used Web\",\"Assigned Products\",\"New Column\"\r\n"
            "\"2024-05-01\",\"a@contoso.com\",\"Smith, \"\"Al\"\"\nSecond line\",\"False\",\"\",\"12\",\"True\","
            "\"No\",\"ENTERPRISE MOBILITY + SECURITY E3+MICROSOFT 365 E3\",\"x\"\r\n"
            "\"2024-05-01\",\"b@contoso.com\",\"1234\",\"True\",\"2024-04-02\",\"\",\"False\",\"Yes\",\"\",\"\"\r\n")
    raw = data.encode("utf-8")
    expected = [
        {"reportRefreshDate": "2024-05-01", "userPrincipalName": "a@contoso.com",
         "displayName": 'Smith, "Al"\nSecond line', "isDeleted": False, "deletedDate": None, "itemCount": 12,
         "hasArchive": True, "usedWeb": False,
         "assignedProducts": ["ENTERPRISE MOBILITY + SECURITY E3", "MICROSOFT 365 E3"], "newColumn": "x"},
        {"reportRefreshDate": "2024-05-01", "userPrincipalName": "b@contoso.com", "displayName": "1234",
         "isDeleted": True, "deletedDate": "2024-04-02", "itemCount": None, "hasArchive": False, "usedWeb": True,
         "assignedProducts": [], "newColumn": None},
    ]
    for size in (1, 2, 3, 7, 64, len(raw)):
        parser = CsvStream()
        rows = []
        for i in range(0, len(raw), size):
            rows += parser.feed(raw[i:i + size])
        rows += parser.feed(b"", final=True)
        assert rows == expected, size


def test_truncated_csv_is_an_error_not_a_short_file():
    parser = CsvStream()
    parser.feed(b'"A","B"\r\n"1","unterminated')
    with pytest.raises(ValueError, match="quoted field"):
        parser.feed(b"", final=True)


def test_report_period_setting_is_validated():
    from connector.config import SETTING_NAMES, ConfigError, load_settings

    base = {"M365_TENANT_ID": "contoso.onmicrosoft.com", "M365_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
            "M365_CLIENT_SECRET": "x"}
    assert "M365_REPORT_PERIOD" in SETTING_NAMES
    assert load_settings(base).report_period == "D30"
    assert load_settings({**base, "M365_REPORT_PERIOD": "d90"}).report_period == "D90"
    with pytest.raises(ConfigError) as err:
        load_settings({**base, "M365_REPORT_PERIOD": "D31"})
    assert "M365_REPORT_PERIOD" in str(err.value) and "D7, D30, D90 or D180" in str(err.value)


def test_request_counts_are_recorded_per_dataset(sim, env, tmp_path):
    manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS=CORE + ",groups,group_members,mfa_registration")
    counts = collections.Counter({n: d["requests"] for n, d in manifest["datasets"].items()})
    # groups, service principals, and the delta links of its two rounds for the next run (/groups/delta, /users/delta)
    assert counts["group_members"] == 2 + manifest["datasets"]["group_members"]["batches"] + 2
    assert counts["mfa_registration"] == math.ceil(400 / 100)
    assert counts["groups"] == 2  # one page, and the delta link for the next run ($deltatoken=latest)
