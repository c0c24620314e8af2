"""Graph's documented quotas: the declaration, the pacer, the settings, and runs that keep under them.

The simulator enforces the same quotas independently (simulator/graph/limits.py); a run that paces well
gets (almost) no 429 from it. Timing goals are in bench/run.py, not here: these tests count requests.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time

import httpx
import pytest

from connector.catalog.quotas import DEFAULTS, QuotaError, classify, parse_overrides, parse_scale, quotas
from connector.collect.estimate import estimates
from connector.config import ConfigError, load_settings
from connector.graph.client import request_buckets
from connector.graph.pacer import Pacer
from connector.store.local import LocalStore
from simulator import Simulator, TenantSpec
from tests.conftest import ROOT, apply_env
from tests.helpers import as_written, read_dataset, run

GRAPH = "https://graph.microsoft.com/v1.0"


def test_requests_are_classified_into_their_documented_buckets():
    sign_in = classify("GET", f"{GRAPH}/users?$select=id,userPrincipalName,signInActivity&$top=500")
    assert sign_in == [("sign_in_activity", "", 1), ("identity_reports", "", 1), ("identity", "", 1)]
    assert classify("GET", f"{GRAPH}/users?$top=999") == [("identity", "", 2)]  # GET users 2
    assert classify("GET", f"{GRAPH}/users?$select=id&$top=999") == [("identity", "", 1)]  # $select -1
    assert classify("GET", f"{GRAPH}/subscribedSkus") == [("identity", "", 3)]
    assert classify("GET", f"{GRAPH}/groups/1/transitiveMembers?$top=10") == [("identity", "", 4)]  # $top<20 -1
    assert classify("GET", f"{GRAPH}/users/1?$expand=manager") == [("identity", "", 2)]  # $expand +1
    assert classify("GET", f"{GRAPH}/reports/authenticationMethods/userRegistrationDetails") == [
        ("identity_reports", "", 1)]
    assert classify("GET", f"{GRAPH}/deviceManagement/managedDevices?$top=1000") == [("intune", "", 1)]
    report = classify("GET", f"{GRAPH}/reports/getMailboxUsageDetail(period='D30')")
    assert report == [("usage_report", "getmailboxusagedetail", 1), ("usage_reports_tenant", "", 1)]
    copilot = classify("GET", "https://graph.microsoft.com/beta/copilot/reports/"
                              "getMicrosoft365CopilotUsageUserDetail(period='D30')")
    assert copilot == [("usage_report", "getmicrosoft365copilotusageuserdetail", 1), ("usage_reports_tenant", "", 1)]


def test_a_batch_draws_on_each_of_its_items():
    body = (b'{"requests":[{"id":"1","method":"GET","url":"/groups/a/members?$select=id&$top=999"},'
            b'{"id":"2","method":"GET","url":"users?$select=id,signInActivity"}]}')
    request = httpx.Request("POST", f"{GRAPH}/$batch", content=body)
    assert request_buckets(request) == [("identity", "", 2), ("sign_in_activity", "", 1),
                                        ("identity_reports", "", 1), ("identity", "", 1)]


def test_the_pacer_keeps_every_window_under_its_limit_and_shares_buckets():
    limits = quotas(scale=1)
    pacer = Pacer(limits)
    start = time.monotonic()
    sign_in = [("sign_in_activity", "", 1), ("identity_reports", "", 1)]
    times = [pacer.reserve(sign_in).at - start for _ in range(12)]
    # identity reports: 5 per 10 s; sign-in activity: 10 per 60 s. Any window holds no more than its limit.
    for window, limit in ((10.0, 5), (60.0, 10)):
        assert all(sum(1 for u in times if t <= u < t + window) <= limit for t in times), (window, times)
    assert times[10] >= 60  # the eleventh sign-in page waits for the minute
    # MFA registration draws on identity reports too: it queues behind the sign-in pages in that bucket.
    mfa = pacer.reserve([("identity_reports", "", 1)]).at - start
    assert mfa >= times[4] + 10
    # A request that would wait past max_wait is not reserved at all.
    assert pacer.reserve(sign_in, max_wait=5) is None
    assert pacer.sent["sign_in_activity"] == 12


def test_the_sign_in_chain_keeps_its_place_in_the_shared_reports_bucket():
    """Sign-in pages (10 a minute) and MFA pages share identity reports (5 per 10 s). Once a sign-in page is
    answered, its place one minute on is kept, so MFA pages asked for meanwhile fill the rest of the bucket and
    the chain's next window opens on time instead of waiting for MFA's pages to leave the bucket."""
    pacer = Pacer(quotas(scale=1))
    start = time.monotonic()
    sign_in = [("sign_in_activity", "", 1), ("identity_reports", "", 1), ("identity", "", 1)]
    first = [pacer.reserve(sign_in) for _ in range(10)]
    for reservation in first:
        pacer.settle(reservation)  # answered (the later five are still reserved ahead: counted there)
    mfa = [pacer.reserve([("identity_reports", "", 1)]).at - start for _ in range(40)]
    eleventh = pacer.reserve(sign_in).at - start
    span = pacer._window("sign_in_activity", "").span
    assert eleventh == pytest.approx(first[0].at - start + span, abs=0.05), (eleventh, mfa)
    # Every window of the reports bucket still holds at most 5, counting the sign-in page and the MFA pages.
    times = sorted([*mfa, eleventh, *(r.at - start for r in first)])
    assert all(sum(1 for u in times if t <= u < t + 10.0) <= 5 for t in times)
    # MFA was not starved: it had the reports bucket's windows between the sign-in groups (20 s to 50 s).
    assert sum(1 for t in mfa if t < eleventh) >= 15


def test_a_429_pauses_the_bucket_for_every_dataset_and_size_sets_resource_units():
    pacer = Pacer(quotas())
    pacer.pause([("identity_reports", "", 1)], 3.0)
    assert pacer.reserve([("identity_reports", "", 1)]).delay() > 2.5
    assert pacer.reserve([("identity", "", 1)]).delay() == 0  # another bucket is not held up
    assert pacer.limits["identity"].limit == 3500  # unknown size: the smallest
    pacer.set_tenant_size(100_000)
    assert pacer.limits["identity"].limit == 8000
    pacer.set_tenant_size(200)
    assert pacer.limits["identity"].limit == 5000


def test_quota_settings_are_validated_and_name_the_setting():
    assert parse_overrides("sign_in_activity=20/60, identity_reports=5/10") == {
        "sign_in_activity": (20.0, 60.0), "identity_reports": (5.0, 10.0)}
    assert parse_scale("60") == 60.0
    for bad in ("signin=10/60", "sign_in_activity=0/60", "sign_in_activity=10/-1", "sign_in_activity=ten/60",
                "sign_in_activity=10"):
        with pytest.raises(QuotaError, match="M365_GRAPH_QUOTAS"):
            parse_overrides(bad)
    for bad in ("0", "-2", "abc", "nan", "inf"):
        with pytest.raises(QuotaError, match="M365_GRAPH_QUOTA_SCALE"):
            parse_scale(bad)
    base = {"M365_TENANT_ID": "contoso.onmicrosoft.com", "M365_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
            "M365_CLIENT_SECRET": "not-a-real-secret-0123"}
    with pytest.raises(ConfigError) as err:
        load_settings({**base, "M365_GRAPH_QUOTAS": "not-a-real-secret-0123=1/1", "M365_GRAPH_QUOTA_SCALE": "0"})
    text = str(err.value)
    assert "M365_GRAPH_QUOTAS" in text and "M365_GRAPH_QUOTA_SCALE" in text
    assert "not-a-real-secret-0123" not in text  # a value is never echoed
    settings = load_settings({**base, "M365_GRAPH_QUOTAS": "sign_in_activity=20/60", "M365_GRAPH_QUOTA_SCALE": "4"})
    limits = settings.quota_limits()
    assert (limits["sign_in_activity"].limit, limits["sign_in_activity"].window) == (20.0, 15.0)
    assert limits["identity_reports"].window == DEFAULTS["identity_reports"].window / 4


def test_estimates_follow_the_documented_floor():
    limits = quotas()
    got = estimates(["users", "user_sign_in_activity", "mfa_registration"], 1_000_000, limits)
    sign_in = got["user_sign_in_activity"]
    assert sign_in.pages == 2000 and sign_in.quota == "sign_in_activity"
    # 2,000 pages at 10 a minute, the first 10 at once; the last ten go five and five, one identity-reports
    # window (5 per 10 s) apart: no client can send the last page sooner
    assert sign_in.seconds == pytest.approx(199 * 60 + 10)
    text = sign_in.text()
    assert "1,000,000 users at Graph's limit of 5,000 a minute" in text and "about 199 minutes" in text
    mfa = got["mfa_registration"]  # 10,000 pages of 100 sharing 5 per 10 s with the 2,000 sign-in pages
    assert mfa.quota == "identity_reports" and mfa.seconds == pytest.approx((12_000 / 5 - 1) * 10)
    small = estimates(["user_sign_in_activity"], 2000, limits)["user_sign_in_activity"]
    assert small.pages == 4 and small.seconds == 0  # four pages fit in the first minute's ten
    # 20 pages: ten at once (five, and five 10 s later), the next ten a minute on, again five and five
    assert estimates(["user_sign_in_activity"], 10_000, limits)["user_sign_in_activity"].seconds == 70
    # 11 pages: the eleventh a minute after the first, alone in its reports window
    assert estimates(["user_sign_in_activity"], 5_500, limits)["user_sign_in_activity"].seconds == 60
    assert not got["users"].quota

    # Graph honouring $top=999 (not documented): 1,002 pages, and sign-in activity sets the run's length.
    honoured = estimates(["user_sign_in_activity", "mfa_registration"], 1_000_000, limits,
                         page_sizes={"mfa_registration": 999})["mfa_registration"]
    assert honoured.pages == 1002 and honoured.seconds < sign_in.seconds


def test_time_left_follows_the_page_size_graph_answers_with():
    from connector.collect.estimate import seconds_left

    mfa = estimates(["mfa_registration"], 10_000, quotas())["mfa_registration"]  # assumes pages of 100
    assert mfa.pages == 100
    assumed = seconds_left(mfa, 1998, 10.0)
    answered = seconds_left(mfa, 1998, 10.0, requests=2)  # pages of 999: 9 pages left, not 81
    assert answered == pytest.approx(9 / mfa.per_minute * 60)
    assert assumed == pytest.approx(81 / mfa.per_minute * 60)

@pytest.fixture
def quota_sim():
    # Graph's own quotas (not scaled): 1,200 users are 3 sign-in pages and 12 MFA pages sharing the identity
    # reports' 5 per 10 s, so the run waits on that bucket for about 20 s.
    with Simulator(TenantSpec(seed=31, users=1200, quota_scale=1)) as sim:
        yield sim


def test_a_run_under_every_quota_is_hardly_ever_throttled(quota_sim, tmp_path):
    """The collector in a process of its own (as in Azure: Graph's clock is not the client's), the simulator
    enforcing every quota: at most 1% of the run's requests are answered 429, and nothing is lost."""
    env = quota_sim.env()
    assert "M365_GRAPH_QUOTA_SCALE" not in env
    quota_sim.clear_requests()
    before = quota_sim.throttled_count
    child = {k: v for k, v in os.environ.items() if not k.startswith(("M365_", "SNAPSHOT_", "AZURE_"))}
    child.update(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="*")  # every dataset: every quota
    proc = subprocess.run([sys.executable, "-m", "connector", "run", "--json"], cwd=ROOT, env=child,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads(proc.stdout)
    assert manifest["status"] == "succeeded", manifest["warnings"]
    graph_requests = [r for r in quota_sim.requests if r.service == "graph"]
    throttled = quota_sim.throttled_count - before
    assert graph_requests and throttled <= 0.01 * len(graph_requests), (throttled, len(graph_requests))
    assert throttled == sum(d["throttled"] for d in manifest["datasets"].values())
    # The app-wide quotas were drawn from the machine's ledger, where other processes of this app see them.
    from connector.store.quota_rows import FileRows

    app = re.sub(r"[^A-Za-z0-9._-]", "_", f"{env['M365_GRAPH_ENDPOINT']}|{env['M365_CLIENT_ID']}")
    ledger = {p.name for p in FileRows().folder.glob(f"{app}_app_*.json")}
    assert {n.rsplit("_app_", 1)[-1] for n in ledger} >= {"any.json", "identity.json", "sign_in_activity.json"}
    sign_in = manifest["datasets"]["user_sign_in_activity"]
    assert sign_in["requests"] == math.ceil(1200 / 500) and sign_in["plan"]["pageSize"] == 500
    assert manifest["datasets"]["mfa_registration"]["requests"] == 12
    store = LocalStore(str(tmp_path))
    expected = {u["id"]: u["signInActivity"] for u in quota_sim.tenant.users()}
    got = {r["id"]: r.get("signInActivity") for r in read_dataset(store, manifest, "user_sign_in_activity")}
    assert got == as_written(expected)
    # The expected durations are in the manifest, from /users/$count and the scaled quotas.
    assert manifest["estimates"]["user_sign_in_activity"]["pages"] == 3
    # Three sign-in pages fit in a minute's ten; with MFA's they fill the reports bucket: 10 s for sign-in
    # activity (its 3 and MFA's first 3), 20 s for MFA (all 15).
    assert manifest["estimates"]["user_sign_in_activity"]["quota"] == "identity_reports"
    assert manifest["estimates"]["user_sign_in_activity"]["seconds"] == 10
    assert manifest["estimates"]["mfa_registration"]["seconds"] == 20


def test_the_older_cap_of_120_is_asked_for_once_and_said_in_the_manifest(monkeypatch, tmp_path):
    spec = TenantSpec(seed=32, users=700, sign_in_page_limit=120, sign_in_top_fails=True)
    with Simulator(spec) as sim:
        env = sim.env()
        apply_env(monkeypatch, env)
        manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="user_sign_in_activity")
        entry = manifest["datasets"]["user_sign_in_activity"]
        assert manifest["status"] == "succeeded", manifest["warnings"]
        assert entry["plan"]["pageSize"] == 120 and entry["plan"]["pageSizeRefused"] == 500
        assert [w["code"] for w in manifest["warnings"]] == ["page_size_fallback"]
        tops = [r.query.get("$top") for r in sim.requests if r.path == "/v1.0/users"]
        assert tops[0] == "500" and set(tops[1:]) == {"120"}  # refused once, then the older page size
        assert entry["requests"] == 1 + math.ceil(700 / 120)
        expected = {u["id"]: u["signInActivity"] for u in sim.tenant.users()}
        got = {r["id"]: r.get("signInActivity") for r in read_dataset(store, manifest, "user_sign_in_activity")}
        assert got == as_written(expected)


@pytest.mark.parametrize("mode", ["ignore", "honour", "refuse"])
def test_mfa_registration_asks_for_999_a_page_and_drops_it_once_if_refused(monkeypatch, tmp_path, mode):
    """userRegistrationDetails documents no $top: asked for all the same (10 times fewer requests in the
    tightest bucket if Graph honours it), every record whatever Graph does with it."""
    users = 1500
    with Simulator(TenantSpec(seed=34, users=users, registration_top=mode)) as sim:
        env = sim.env()
        apply_env(monkeypatch, env)
        manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="mfa_registration")
        entry = manifest["datasets"]["mfa_registration"]
        assert manifest["status"] == "succeeded", manifest["warnings"]
        path = "/v1.0/reports/authenticationMethods/userRegistrationDetails"
        tops = [r.query.get("$top") for r in sim.requests if r.path == path]
        page = 999 if mode == "honour" else 100
        if mode == "refuse":
            assert tops[0] == "999" and set(tops[1:]) == {None}
            assert entry["plan"]["pageSizeRefused"] == 999
            assert [w["code"] for w in manifest["warnings"]] == ["page_size_fallback"]
            assert entry["requests"] == 1 + math.ceil(users / page)
        else:
            assert set(tops) == {"999"} and not manifest["warnings"]
            assert entry["requests"] == math.ceil(users / page)
        ids = [r["id"] for r in read_dataset(store, manifest, "mfa_registration")]
        assert sorted(ids) == sorted(r["id"] for r in sim.inventory.registration_details())


def test_check_says_how_long_each_per_user_dataset_will_take(monkeypatch, capsys):
    from connector.cli.main import main

    with Simulator(TenantSpec(seed=33, users=1200)) as sim:
        apply_env(monkeypatch, sim.env())
        monkeypatch.setenv("M365_DATASETS", "users,user_sign_in_activity,mfa_registration")
        assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "expected: user_sign_in_activity: 1,200 users at Graph's limit of" in out
    assert "expected: mfa_registration: 1,200 users" in out


def test_a_request_counts_at_its_answer_so_a_slow_one_cannot_crowd_the_next_window():
    pacer = Pacer(quotas({"identity_reports": (1, 10)}))  # one request per 10 s, to see it plainly
    bucket = [("identity_reports", "", 1)]
    first = pacer.reserve(bucket)
    assert pacer.confirm(first)
    sent = first.at
    assert pacer.reserve([("identity_reports", "x", 1)]).at - sent < 0.05  # another key is a bucket of its own
    time.sleep(0.2)  # the answer comes 0.2 s after the request was sent: Graph counted it by then at the latest
    pacer.settle(first)
    second = pacer.reserve(bucket)
    assert second.at - sent >= 10.2  # a window after the answer, not after the sending


def test_a_throttled_batch_item_pauses_its_bucket_for_every_dataset(monkeypatch, tmp_path):
    """Graph counts each $batch item in its buckets: an item's 429 pauses them in the shared pacer, not only
    in the dataset that sent it."""
    from connector.graph.pacer import SLACK_FLOOR, pacer_for
    from tests.helpers import settings_for

    with Simulator(TenantSpec(seed=34, users=200, retry_after=0.2)) as sim:
        env = sim.env()
        apply_env(monkeypatch, env)
        sim.fail_next("/v1.0/groups/", 429, "TooManyRequests", "Please retry again later.", times=1)
        # M365_DELTA=off: no /groups/delta request for the fault to land on before the batch items.
        manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="groups,group_members", M365_DELTA="off")
        assert manifest["status"] == "succeeded", manifest["warnings"]
        assert manifest["datasets"]["group_members"]["throttled"] == 1
        settings = settings_for(env, SNAPSHOT_DIR=str(tmp_path))
        pacer = pacer_for((settings.graph_endpoint, settings.tenant_id.lower(), settings.client_id),
                          settings.quota_limits())
        identity = pacer._windows[("identity", "")]
        assert identity.paused_until > 0 and identity.slack > SLACK_FLOOR  # paused, and keeps more room since
