"""The Function app: its index, its HTTP API and its queue worker, with real Azurite and the simulator.

Handlers are called directly with real azure.functions request/message objects; messages travel
through a real Azurite queue (dequeued here the way the host would, then handed to the handler).
"""

from __future__ import annotations

import base64
import inspect
import json
import logging
import re
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobLeaseClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

import function_app
from connector.catalog.datasets import DEFAULT_DATASETS
from connector.config import SETTING_NAMES, ConfigError, load_settings
from connector.service import runs
from connector.store.contract import read_json
from simulator import Simulator, TenantSpec
from simulator.tenant import DEFAULT_ROLES
from tests.conftest import ROOT, apply_function_env

FUNCTION_KEY = "k3y-" + "x" * 20  # must never come back in a response
BASE = "http://localhost:7071/api"
ALL_ROLES = DEFAULT_ROLES  # every dataset's least-privileged permission (simulator default)


# -- fixtures ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sim():
    with Simulator(TenantSpec(seed=11, users=300)) as s:
        yield s


@pytest.fixture
def env(sim, azurite, monkeypatch):
    sim.spec.roles = ALL_ROLES
    sim.spec.premium = True
    sim.spec.secret_expired = False
    sim.spec.latency = 0.0
    sim.spec.throttle_rate = 0.0
    e = sim.env(secret_in="env")
    e.update({"SNAPSHOT_CONNECTION_STRING": azurite.connection_string,
              "SNAPSHOT_CONTAINER": f"f{uuid.uuid4().hex[:12]}",
              "AzureWebJobsStorage": azurite.connection_string})
    apply_function_env(monkeypatch, e, azurite.connection_string)
    return e


def _queue(env, name=runs.RUNS_QUEUE, decode=True) -> QueueClient:
    kw = {"message_decode_policy": TextBase64DecodePolicy()} if decode else {}
    return QueueClient.from_connection_string(env["AzureWebJobsStorage"], name, **kw)


def _store(env):
    return runs.store_for(load_settings(env))


def post(body: bytes = b"") -> tuple[int, dict, dict]:
    req = func.HttpRequest("POST", f"{BASE}/runs?code={FUNCTION_KEY}", body=body,
                           headers={"x-functions-key": FUNCTION_KEY})
    resp = function_app.runs_request(req)
    text = resp.get_body().decode()
    assert FUNCTION_KEY not in text and all(FUNCTION_KEY not in v for v in resp.headers.values())
    return resp.status_code, json.loads(text), dict(resp.headers)


def get(run_id: str) -> tuple[int, dict]:
    req = func.HttpRequest("GET", f"{BASE}/runs/{run_id}?code={FUNCTION_KEY}", body=b"",
                           route_params={"runId": run_id})
    resp = function_app.runs_get(req)
    return resp.status_code, json.loads(resp.get_body())


def list_runs(limit: str | None = None) -> tuple[int, dict]:
    params = {} if limit is None else {"limit": limit}
    req = func.HttpRequest("GET", f"{BASE}/runs", body=b"", params=params)
    resp = function_app.runs_list(req)
    return resp.status_code, json.loads(resp.get_body())


def receive(env) -> QueueMessage:
    """Dequeue one message the way the host does and wrap it as the trigger would."""
    msgs = list(_queue(env).receive_messages(max_messages=1, visibility_timeout=60))
    assert msgs, "no message in the queue"
    m = msgs[0]
    return QueueMessage(id=m.id, body=m.content.encode(), dequeue_count=m.dequeue_count, pop_receipt=m.pop_receipt)


def queued_count(env, name=runs.RUNS_QUEUE) -> int:
    return len(list(_queue(env, name).peek_messages(max_messages=32)))


def collections(sim) -> int:
    """Each collection reads /organization exactly once."""
    return sim.request_count("/v1.0/organization")


# -- the index ----------------------------------------------------------------------------------------------

def test_index_contract(indexed):
    assert set(indexed) == {"runs_request", "runs_list", "runs_get", "permissions", "health", "openapi",
                            "scheduled_run", "run_worker", "run_poison", "tenants_list"}
    http = {
        "runs_request": ("runs", ["POST"], "FUNCTION"),
        "runs_list": ("runs", ["GET"], "FUNCTION"),
        "runs_get": ("runs/{runId}", ["GET"], "FUNCTION"),
        "permissions": ("permissions", ["GET"], "FUNCTION"),
        "tenants_list": ("tenants", ["GET"], "FUNCTION"),
        "health": ("health", ["GET"], "ANONYMOUS"),
        "openapi": ("openapi.json", ["GET"], "FUNCTION"),
    }
    for name, (route, methods, auth) in http.items():
        trigger = json.loads(indexed[name].get_function_json())["bindings"][0]
        assert trigger["type"] == "httpTrigger" and trigger["direction"] == "IN"
        assert (trigger["route"], trigger["methods"], trigger["authLevel"].upper()) == (route, methods, auth), name
    timer = json.loads(indexed["scheduled_run"].get_function_json())["bindings"]
    assert timer == [{"type": "timerTrigger", "direction": "IN", "name": "timer", "schedule": runs.DEFAULT_SCHEDULE,
                      "runOnStartup": False, "useMonitor": True}]
    for name, queue in (("run_worker", "m365-runs"), ("run_poison", "m365-runs-poison")):
        bindings = json.loads(indexed[name].get_function_json())["bindings"]
        assert bindings == [{"type": "queueTrigger", "direction": "IN", "name": "msg", "queueName": queue,
                             "connection": "AzureWebJobsStorage"}]
    # The worker rejects functions whose parameter names differ from their binding names.
    for fn in indexed.values():
        params = set(inspect.signature(fn.get_user_function()).parameters)
        assert params == {b.name for b in fn.get_bindings()} - {"$return"}, fn.get_function_name()


def test_settings_names_cover_what_the_code_reads():
    names = set(runs.FUNCTION_SETTING_NAMES)
    assert not names & set(SETTING_NAMES)
    assert {"M365_SCHEDULE", "AzureWebJobsStorage", "APPLICATIONINSIGHTS_CONNECTION_STRING"} <= names
    pattern = re.compile(r"""["'](M365_\w+|KEY_VAULT_\w+|SNAPSHOT_\w+|AzureWebJobsStorage\w*|APPLICATIONINSIGHTS_\w+|"""
                         r"""PYTHON_APPLICATIONINSIGHTS_\w+)["']""")
    read = set()
    service = ("runs", "api", "telemetry", "appconfig", "run_queue", "worker", "schedule", "tenants_view")
    for path in ("function_app.py", *(f"connector/service/{name}.py" for name in service),
                 "connector/store/status.py", "connector/store/locks.py", "connector/store/registry.py"):
        read |= set(pattern.findall((ROOT / path).read_text()))
    assert read - names - set(SETTING_NAMES) == set()
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    assert set(example) - {"FUNCTIONS_WORKER_RUNTIME"} <= names | set(SETTING_NAMES)


def test_host_json():
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
    queues = host["extensions"]["queues"]
    assert queues["batchSize"] == 1 and queues["newBatchThreshold"] == 0 and 1 < queues["maxDequeueCount"] <= 5
    assert queues.get("messageEncoding", "base64") == "base64"
    h, m, s = map(int, host["functionTimeout"].split(":"))
    assert h * 3600 + m * 60 + s >= 3600


def test_import_is_light_and_offline():
    code = (
        "import socket, sys, time\n"
        "def refuse(*a, **k): raise AssertionError('network I/O during import')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
        "t = time.process_time(); import function_app; took = time.process_time() - t\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('msgraph', 'kiota_http', 'httpx') or "
        "m.startswith(('azure.storage', 'azure.identity', 'azure.keyvault', 'azure.monitor')))\n"
        "print(took); print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    took, heavy = out.stdout.splitlines()[:2] if out.stdout.count("\n") >= 2 else (out.stdout.strip(), "")
    assert heavy == "", f"heavy modules imported: {heavy}"
    assert float(took) < 1.0  # CPU seconds of this process: other work on a busy machine does not count


def test_schedule_setting(caplog):
    assert runs.timer_schedule({}) == "0 0 2 * * *"
    assert runs.timer_schedule({"M365_SCHEDULE": "0 30 1 * * MON-FRI"}) == "0 30 1 * * MON-FRI"
    with caplog.at_level(logging.ERROR, logger="m365_connector"):
        assert runs.timer_schedule({"M365_SCHEDULE": "0 2 * * *"}) == runs.DEFAULT_SCHEDULE
    assert "M365_SCHEDULE" in caplog.text and "six-field" in caplog.text


# -- run-now through the queue --------------------------------------------------------------------------------

def test_post_enqueues_and_the_worker_collects(sim, env, caplog):
    caplog.set_level(logging.INFO, logger="m365_connector")
    status, body, headers = post()
    assert status == 202
    run_id = body["runId"]
    assert runs.RUN_ID_RE.match(run_id)
    assert body["status"] == "queued" and body["statusUrl"] == f"{BASE}/runs/{run_id}"
    assert headers["Location"] == body["statusUrl"] and int(headers["Retry-After"]) > 0

    code, record = get(run_id)
    assert code == 200 and record["status"] == "queued" and record["trigger"] == "http"
    assert record["requestedAt"] and record["startedAt"] is None and set(record["datasets"]) == set(DEFAULT_DATASETS)

    raw = list(_queue(env, decode=False).peek_messages())
    assert len(raw) == 1
    message = json.loads(base64.b64decode(raw[0].content))  # Base64, as the queue trigger expects
    assert message["runId"] == run_id and message["trigger"] == "http"

    before = collections(sim)
    function_app.run_worker(receive(env))
    assert collections(sim) == before + 1

    code, record = get(run_id)
    assert code == 200 and record["status"] == "succeeded", record
    manifest = read_json(_store(env), record["manifest"])
    assert record["manifest"] == f"tenants/{sim.tenant_id}/runs/{run_id}/manifest.json"
    assert record["manifestUrl"].endswith(record["manifest"])
    assert record["tenantId"] == manifest["tenantId"] == sim.tenant_id
    assert (record["status"], record["startedAt"], record["finishedAt"], record["warnings"]) == \
        (manifest["status"], manifest["startedAt"], manifest["finishedAt"], manifest["warnings"])
    assert {n: (d["status"], d["records"]) for n, d in record["datasets"].items()} == \
        {n: (d["status"], d["records"]) for n, d in manifest["datasets"].items()}
    assert record["datasets"]["users"]["records"] == 300 and record["error"] is None
    # Status lives beside the snapshot (the tenant setting is the GUID here).
    assert _store(env).read_bytes(f"tenants/{sim.tenant_id}/runs/{run_id}/status.json") is not None

    summaries = [r for r in caplog.records if getattr(r, "event", None) == "collection_finished"]
    assert len(summaries) == 1
    text = summaries[0].getMessage()
    assert run_id in text and "trigger=http" in text and "status=succeeded" in text and "users=succeeded/300" in text
    assert sim.client_secret not in caplog.text

    code, listing = list_runs()
    assert code == 200 and listing["runs"][0]["runId"] == run_id
    # The finished run no longer blocks: the next request queues a new run.
    status, again, _ = post()
    assert status == 202 and again["runId"] != run_id and not again.get("existing")
    code, listing = list_runs("1")
    assert [r["runId"] for r in listing["runs"]] == [again["runId"]]


def test_datasets_in_the_body_limit_the_run(sim, env):
    status, body, _ = post(b'{"datasets": ["users", "organization"]}')
    assert status == 202
    function_app.run_worker(receive(env))
    _, record = get(body["runId"])
    assert record["status"] == "succeeded" and set(record["datasets"]) == {"users", "organization"}


def test_full_in_the_body_reads_every_dataset_in_full(sim, env):
    status, body, _ = post(b'{"datasets": ["groups"]}')
    function_app.run_worker(receive(env))
    status, body, _ = post(b'{"datasets": ["groups"], "full": true}')
    assert status == 202
    _, record = get(body["runId"])
    assert record["full"] is True
    function_app.run_worker(receive(env))
    _, record = get(body["runId"])
    manifest = read_json(_store(env), record["manifest"])
    assert manifest["datasets"]["groups"]["delta"]["mode"] == "full"
    assert manifest["datasets"]["groups"]["delta"]["reason"].startswith("full_requested")
    status, body, _ = post(b'{"datasets": ["groups"], "full": false}')
    assert status == 202
    function_app.run_worker(receive(env))
    _, record = get(body["runId"])
    assert record["full"] is False
    assert read_json(_store(env), record["manifest"])["datasets"]["groups"]["delta"]["mode"] == "delta"


def test_concurrent_posts_queue_one_run(sim, env):
    results: list[tuple[int, dict, dict]] = []
    barrier = threading.Barrier(8)

    def one():
        barrier.wait()
        results.append(post())

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r[0] for r in results] == [202] * 8
    assert len({r[1]["runId"] for r in results}) == 1
    assert sum(1 for r in results if r[1].get("existing")) == 7
    assert queued_count(env) == 1


def test_duplicate_deliveries_collect_once(sim, env):
    post()
    first = receive(env)
    copy = QueueMessage(id=first.id, body=first.get_body(), dequeue_count=2, pop_receipt=None)
    before = collections(sim)
    sim.spec.latency = 0.05  # keep the first collection going while the copy arrives
    outcomes: list[str] = []

    def deliver(m):
        try:
            function_app.run_worker(m)
            outcomes.append("ok")
        except runs.TenantBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=deliver, args=(m,)) for m in (first, copy)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert collections(sim) == before + 1, outcomes
    run_id = json.loads(first.get_body())["runId"]
    assert get(run_id)[1]["status"] == "succeeded"
    # A late redelivery of a finished run is acknowledged without collecting.
    function_app.run_worker(copy)
    assert collections(sim) == before + 1


def test_lease_is_held_while_collecting_and_released(sim, env):
    post()
    msg = receive(env)
    run_id = json.loads(msg.get_body())["runId"]
    store = _store(env)
    key = runs.tenant_key(load_settings(env))
    lock_blob = store.container.get_blob_client(f"tenants/{key}/run.lock")
    sim.spec.latency = 0.1
    seen: dict[str, object] = {}
    done = threading.Event()

    def watch():
        while not done.is_set():
            record = runs.read_status(store, key, run_id)
            if record and record["status"] == "running":
                seen["lease"] = lock_blob.get_blob_properties().lease.state
                other = runs.TenantLock(store, key, seconds=15)
                seen["second_acquire"] = other.acquire()
                other.release()
                return
            done.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert runs.process_message(msg.get_body(), 1, renew_seconds=0.05) == "collected"
    finally:
        done.set()
        watcher.join()
    assert seen == {"lease": "leased", "second_acquire": False}
    assert lock_blob.get_blob_properties().lease.state == "available"


def test_crashed_runs_lease_expires_and_the_next_run_proceeds(sim, env):
    post()
    msg = receive(env)
    run_id = json.loads(msg.get_body())["runId"]
    store = _store(env)
    key = runs.tenant_key(load_settings(env))
    crashed = runs.TenantLock(store, key, seconds=15)
    assert crashed.acquire()  # a worker that died without releasing
    before = collections(sim)
    with pytest.raises(runs.TenantBusy):
        function_app.run_worker(msg)
    assert collections(sim) == before and get(run_id)[1]["status"] == "queued"
    # The lease runs out (broken here instead of waiting for it), and the redelivery collects.
    BlobLeaseClient(store.container.get_blob_client(f"tenants/{key}/run.lock")).break_lease(lease_break_period=0)
    function_app.run_worker(msg)
    assert collections(sim) == before + 1 and get(run_id)[1]["status"] == "succeeded"


def test_failed_run_reports_error_and_remedy(sim, env):
    sim.spec.secret_expired = True
    _, body, _ = post()
    function_app.run_worker(receive(env))
    _, record = get(body["runId"])
    assert record["status"] == "failed"
    assert record["error"]["message"] and "secret" in record["error"]["remedy"].lower()
    assert sim.client_secret not in json.dumps(record)


# -- timer and poison ------------------------------------------------------------------------------------------

def test_timer_requests_a_run_like_run_now(sim, env, caplog):
    function_app.scheduled_run(TimerRequest(past_due=True))
    assert "past due" in caplog.text
    assert queued_count(env) == 1
    message = json.loads(next(iter(_queue(env).peek_messages())).content)
    status, body, _ = post()
    assert status == 202 and body["existing"] and body["runId"] == message["runId"]
    function_app.run_worker(receive(env))
    _, record = get(body["runId"])
    assert record["trigger"] == "timer" and record["status"] == "succeeded"
    assert read_json(_store(env), record["manifest"])["trigger"] == "timer"


def test_poison_message_marks_the_run_failed(sim, env):
    _, body, _ = post()
    msg = receive(env)
    store = _store(env)
    key = runs.tenant_key(load_settings(env))
    other = runs.TenantLock(store, key, seconds=15)
    assert other.acquire("20200101T000000Z-000000", "http")  # another run holds the tenant all along
    try:
        for attempt in (1, 2, 3):
            with pytest.raises(runs.TenantBusy):
                function_app.run_worker(QueueMessage(id=msg.id, body=msg.get_body(), dequeue_count=attempt))
    finally:
        other.release()
    assert "waiting for the tenant's lock" in get(body["runId"])[1]["error"]["message"]
    function_app.run_poison(QueueMessage(id=msg.id, body=msg.get_body(), dequeue_count=1))
    _, record = get(body["runId"])
    assert record["status"] == "failed" and record["finishedAt"]
    assert body["runId"] in record["error"]["remedy"] and "POST /api/runs" in record["error"]["remedy"]
    status, again, _ = post()  # no longer blocks the tenant
    assert status == 202 and again["runId"] != body["runId"]


# -- bad input -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "status", "code", "fragment"), [
    (b"{", 400, "malformed_json", "not valid JSON"),
    (b"[]", 400, "wrong_type", "must be a JSON object"),
    (b'{"datasets": "users"}', 400, "wrong_type", "list of dataset names"),
    (b'{"datasets": [1]}', 400, "wrong_type", "list of dataset names"),
    (b'{"datasets": []}', 400, "empty_datasets", "omit it"),
    (b'{"datasets": ["users", "mailboxes"]}', 400, "unknown_dataset", "mailboxes"),
    (b'{"dataset": ["users"]}', 400, "unknown_field", "dataset"),
    (b'{"full": "yes"}', 400, "wrong_type", "\"full\" must be true"),
    (b'{"datasets": ["users"], "pad": "' + b"x" * 70000 + b'"}', 413, "body_too_large", "65536"),
])
def test_bad_post_bodies(env, body, status, code, fragment):
    got, reply, _ = post(body)
    assert got == status
    assert reply["error"]["code"] == code and fragment in reply["error"]["message"]
    assert reply["error"]["validDatasets"] == list(DEFAULT_DATASETS)  # opt-in ones only when M365_DATASETS has them
    assert queued_count(env) == 0


def test_unknown_dataset_message_lists_valid_names(env):
    _, reply, _ = post(b'{"datasets": ["nope"]}')
    for name in DEFAULT_DATASETS:
        assert name in reply["error"]["message"]


@pytest.mark.parametrize("run_id", ["latest", "../../etc", "20261122T020000Z-XYZ", "x" * 300])
def test_malformed_run_ids(env, run_id):
    code, reply = get(run_id)
    assert code == 400 and reply["error"]["code"] == "malformed_run_id"


def test_unknown_run_id(env):
    code, reply = get("20200101T000000Z-abcdef")
    assert code == 404 and reply["error"]["code"] == "unknown_run"


@pytest.mark.parametrize("limit", ["0", "101", "ten", "-1"])
def test_bad_limit(env, limit):
    code, reply = list_runs(limit)
    assert code == 400 and reply["error"]["code"] == "bad_limit"


def test_invalid_configuration_answers_500_naming_the_setting(env, monkeypatch):
    monkeypatch.setenv("M365_CLIENT_ID", "my-app")
    status, reply, _ = post()
    assert status == 500 and reply["error"]["code"] == "configuration"
    assert [p["setting"] for p in reply["error"]["problems"]] == ["M365_CLIENT_ID"]
    assert queued_count(env) == 0


# -- permissions and health ------------------------------------------------------------------------------------

def _call(handler, route: str) -> tuple[int, dict, str]:
    resp = handler(func.HttpRequest("GET", f"{BASE}/{route}", body=b""))
    text = resp.get_body().decode()
    return resp.status_code, json.loads(text), text


def test_permissions_report(sim, env):
    code, report, text = _call(function_app.permissions, "permissions")
    assert code == 200 and report["ok"] is True and report["token"]["ok"]
    sim.spec.roles = frozenset({"User.Read.All", "Organization.Read.All"})
    code, report, text = _call(function_app.permissions, "permissions")
    assert code == 200 and report["ok"] is False
    assert report["datasets"]["user_sign_in_activity"]["status"] == "missing_permission"
    assert "AuditLog.Read.All" in report["datasets"]["user_sign_in_activity"]["remedy"]
    assert sim.client_secret not in text


def test_permissions_without_a_token_is_502(sim, env):
    sim.spec.secret_expired = True
    code, report, text = _call(function_app.permissions, "permissions")
    assert code == 502 and report["token"]["ok"] is False
    assert report["token"]["error"]["remedy"] and sim.client_secret not in text


def test_health(sim, env, monkeypatch):
    code, body, _ = _call(function_app.health, "health")
    assert code == 200 and body["status"] == "ok" and body["configuration"] == {"valid": True, "settings": []}
    assert re.match(r"^\d+\.\d+", body["version"])
    monkeypatch.setenv("M365_SCHEDULE", "every day")
    monkeypatch.delenv("AzureWebJobsStorage")
    code, body, text = _call(function_app.health, "health")
    assert code == 503 and body["configuration"] == {"valid": False,
                                                     "settings": ["AzureWebJobsStorage", "M365_SCHEDULE"]}
    assert set(body) == {"status", "version", "configuration"}
    assert sim.client_secret not in text


# -- storage connection forms and the local lock -----------------------------------------------------------------

def test_queue_connection_forms():
    from azure.identity import ManagedIdentityCredential

    client = runs.queue_client({"AzureWebJobsStorage__queueServiceUri": "https://st1.queue.core.windows.net",
                                "AzureWebJobsStorage__credential": "managedidentity",
                                "AzureWebJobsStorage__clientId": "11111111-1111-1111-1111-111111111111"})
    assert client.url.startswith("https://st1.queue.core.windows.net/m365-runs")
    assert isinstance(client.credential, ManagedIdentityCredential)
    client = runs.queue_client({"AzureWebJobsStorage__accountName": "st2",
                                "AzureWebJobsStorage__credential": "managedidentity"})
    assert client.url.startswith("https://st2.queue.core.windows.net/")
    client = runs.queue_client({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert client.url.startswith("http://127.0.0.1:10001/devstoreaccount1/m365-runs")
    with pytest.raises(ConfigError) as err:
        runs.queue_client({})
    assert err.value.problems[0].setting == "AzureWebJobsStorage"


def test_local_folder_lock_is_exclusive(tmp_path: Path):
    from connector.store.local import LocalStore

    store = LocalStore(tmp_path)
    first, second = runs.TenantLock(store, "t"), runs.TenantLock(store, "t")
    assert first.acquire() and not second.acquire()
    first.release()
    assert second.acquire()
    second.release()


# -- forged and malformed queue messages (issue 11.2, 11.3) ---------------------------------------------------

ARABIC_INDIC_RUN_ID = "\u0662\u0660\u0662\u0666\u0661\u0661\u0662\u0662T020000Z-3f9a1c"  # Unicode digits


def _message(**fields) -> bytes:
    return json.dumps({"v": 1, "trigger": "http", "datasets": None, "requestedAt": "2026-01-01T00:00:00.000Z",
                       **fields}).encode()


def _blob_names(env) -> list[str]:
    return _store(env).list("")


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'"20261122T020000Z-3f9a1c"', b"{}",
    _message(runId=ARABIC_INDIC_RUN_ID, tenant="{tenant}"),
    _message(runId="20261122T020000Z-3f9a1c\n", tenant="{tenant}"),
    _message(runId="../../20261122T020000Z-3f9a1c", tenant="{tenant}"),
    _message(runId="20261122T020000Z-3f9a1c", tenant="../../other"),
    _message(runId="20261122T020000Z-3f9a1c", tenant="{tenant}", datasets="users"),
    _message(runId="20261122T020000Z-3f9a1c", tenant="{tenant}", datasets=[1]),
    _message(runId="20261122T020000Z-3f9a1c", tenant="{tenant}", v=2),
    b'{"runId": "20261122T020000Z-3f9a1c", "tenant": "' + b"x" * 70000 + b'"}',
], ids=["text", "list", "string", "empty", "unicode-digits", "trailing-newline", "path-run-id", "path-tenant",
        "datasets-string", "datasets-number", "version", "oversized"])
def test_malformed_messages_are_ignored_without_touching_storage(sim, env, body):
    body = body.replace(b"{tenant}", env["M365_TENANT_ID"].lower().encode())
    before, names = collections(sim), _blob_names(env)
    assert runs.process_message(body, 1) == "ignored"
    assert runs.process_poison(body) == "ignored"
    assert collections(sim) == before and _blob_names(env) == names


def test_forged_messages_collect_nothing_and_write_nowhere(sim, env):
    key = env["M365_TENANT_ID"].lower()
    other = "11111111-2222-3333-4444-555555555555"
    before, names = collections(sim), _blob_names(env)
    # A run id that was never requested through this app: no status record, so nothing to collect.
    assert runs.process_message(_message(runId="20261122T020000Z-3f9a1c", tenant=key), 1) == "ignored"
    # Another tenant's run (collecting it would write under that tenant's folder).
    assert runs.process_message(_message(runId="20261122T020000Z-3f9a1c", tenant=other), 1) == "ignored"
    assert runs.process_poison(_message(runId="20261122T020000Z-3f9a1c", tenant=other)) == "ignored"
    assert runs.process_poison(_message(runId="20261122T020000Z-3f9a1c", tenant=key)) == "ignored"
    assert collections(sim) == before and _blob_names(env) == names
    assert not [n for n in _blob_names(env) if n.startswith(f"tenants/{other}")]


def test_poison_cannot_fail_a_run_that_is_still_queued(sim, env):
    _, body, _ = post()
    forged = _message(runId=body["runId"], tenant=env["M365_TENANT_ID"].lower())
    assert runs.process_poison(forged) == "ignored"
    assert get(body["runId"])[1]["status"] == "queued"
    function_app.run_worker(receive(env))  # the real delivery still collects it
    assert get(body["runId"])[1]["status"] == "succeeded"


def test_a_message_that_disagrees_with_the_record_is_refused_not_obeyed(sim, env, monkeypatch, caplog):
    """Issue 22 item 4: a forged message with the right run id and tenant but other datasets (disjoint, or more),
    another request time or another trigger neither fails the queued run nor widens it; it is refused and
    logged, and the genuine message then collects what the record says (within M365_DATASETS)."""
    monkeypatch.setenv("M365_DATASETS", "organization,users")
    status, body, _ = post(b'{"datasets": ["users"]}')
    assert status == 202
    genuine = receive(env)
    key, run_id = env["M365_TENANT_ID"].lower(), body["runId"]
    record = get(run_id)[1]
    right = {"runId": run_id, "tenant": key, "requestedAt": record["requestedAt"], "trigger": "http"}
    forged = [_message(**{**right, "datasets": ["groups"]}),  # disjoint: used to fail the run
              _message(**{**right, "datasets": ["users", "organization", "groups", "role_assignments"]}),
              _message(**{**right, "datasets": ["users"], "requestedAt": "2026-01-01T00:00:00.000Z"}),
              _message(**{**right, "datasets": ["users"], "trigger": "timer"})]
    before, names = collections(sim), _blob_names(env)
    for message in forged:
        assert runs.process_message(message, 1) == "ignored"
        assert runs.process_poison(message) == "ignored"
    assert collections(sim) == before and _blob_names(env) == names
    assert get(run_id)[1]["status"] == "queued"
    refused = [r for r in caplog.records if getattr(r, "event", None) == "message_refused"]
    assert len(refused) == 2 * len(forged) and all(run_id in r.getMessage() for r in refused)
    function_app.run_worker(genuine)  # the genuine message still collects it, as its record says
    code, record = get(run_id)
    assert record["status"] == "succeeded" and set(record["datasets"]) == {"users"}
    manifest = read_json(_store(env), record["manifest"])
    assert set(manifest["datasets"]) == {"users"}


def test_a_finished_run_cannot_be_revived_by_a_message(sim, env):
    _, body, _ = post()
    msg = receive(env)
    function_app.run_worker(msg)
    before = collections(sim)
    again = _message(runId=body["runId"], tenant=env["M365_TENANT_ID"].lower())
    assert runs.process_message(again, 5) == "duplicate"
    assert runs.process_poison(again) == "ignored"
    assert collections(sim) == before and get(body["runId"])[1]["status"] == "succeeded"


@pytest.mark.parametrize("run_id", ["20261122T020000Z-3f9a1c\n", ARABIC_INDIC_RUN_ID, "20261122T020000Z-3f9a1c/../x"])
def test_run_ids_are_matched_whole_and_ascii(env, run_id):
    code, reply = get(run_id)
    assert code == 400 and reply["error"]["code"] == "malformed_run_id"
    assert run_id not in json.dumps(reply)


@pytest.mark.parametrize("limit", ["5\n", " 5", "+5", "1_0", "\u0665", "5.0"])
def test_limit_is_ascii_digits_only(env, limit):
    code, reply = list_runs(limit)
    assert code == 400 and reply["error"]["code"] == "bad_limit"


# -- what the configuration messages give away (issue 11.1) ----------------------------------------------------

SAS = "sv=2024-05-04&ss=b&srt=sco&sp=rwdlac&se=2030-01-01&sig=c2VjcmV0U0lHbmF0dXJlZm9ydGVzdHM%3D"
ACCOUNT_KEY = "QWNjb3VudEtleVRoYXRNdXN0TmV2ZXJMZWFrMTIzNDU2Nzg5MA=="
PASTED_SECRET = "Xq98Q~pAstEd.ClientSecret-ValueThatMustNotShow"


def test_health_and_logs_never_echo_setting_values(sim, env, monkeypatch, caplog):
    """A SAS in SNAPSHOT_ACCOUNT_URL, a connection string with an AccountKey and a secret pasted into
    M365_CLIENT_ID: health names the settings, and neither it nor the timer's and worker's logs repeat them."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("SNAPSHOT_CONNECTION_STRING")
    monkeypatch.setenv("SNAPSHOT_ACCOUNT_URL", f"https://stm365.blob.core.windows.net/?{SAS}")
    monkeypatch.setenv("AzureWebJobsStorage", f"DefaultEndpointsProtocol=https;AccountKey={ACCOUNT_KEY};Foo=1")
    monkeypatch.setenv("M365_CLIENT_ID", PASTED_SECRET)
    monkeypatch.setenv("M365_DOMAINS", f"contoso.com,{PASTED_SECRET}")
    code, body, text = _call(function_app.health, "health")
    assert code == 503 and body == {"status": "misconfigured", "version": body["version"], "configuration": {
        "valid": False, "settings": ["AzureWebJobsStorage", "M365_CLIENT_ID", "M365_DOMAINS", "SNAPSHOT_ACCOUNT_URL"]}}
    with pytest.raises(ConfigError):
        function_app.scheduled_run(TimerRequest(past_due=False))
    with pytest.raises(ConfigError):
        runs.process_message(_message(runId="20261122T020000Z-3f9a1c", tenant="x"), 1)
    status, reply, _ = post()  # the keyed API says what is wrong with each, still without the values
    assert status == 500
    problems = {p["setting"]: p["message"] for p in reply["error"]["problems"]}
    assert "https://stm365.blob.core.windows.net" in problems["SNAPSHOT_ACCOUNT_URL"]
    assert "2nd entry" in problems["M365_DOMAINS"]
    for leak in (SAS, "sig=", ACCOUNT_KEY, PASTED_SECRET, "Foo=1"):
        assert leak not in text and leak not in caplog.text and leak not in json.dumps(reply), leak
    assert "M365_CLIENT_ID" in caplog.text and "SNAPSHOT_ACCOUNT_URL" in caplog.text


# -- a worker that died: stale runs (issue 11.6) -----------------------------------------------------------------

def test_running_without_a_live_lease_is_stale_in_get_and_post(sim, env):
    _, body, _ = post()
    msg = receive(env)
    store, key = _store(env), runs.tenant_key(load_settings(env))
    record = runs.read_status(store, key, body["runId"])
    record.update(status="running", attempts=1, worker={"host": "gone", "pid": "1"})
    from connector.store.status import write_status

    write_status(store, record)  # what a worker killed mid-run leaves: running, and its lease expired
    code, seen = get(body["runId"])
    assert code == 200 and seen["status"] == "queued" and seen["stale"] is True
    assert "stopped" in seen["error"]["message"] and "run.lock" in seen["error"]["message"]
    assert list_runs()[1]["runs"][0]["stale"] is True
    # While a live lease names the run, it is running.
    lock = runs.TenantLock(store, key, seconds=15)
    assert lock.acquire(body["runId"], "http")
    try:
        assert get(body["runId"])[1]["status"] == "running"
        status, again, _ = post()
        assert again["runId"] == body["runId"] and again["existing"]
    finally:
        lock.release()
    # Without it, a new request gets the dead run back, queued again to resume from its checkpoints (a second
    # run of the tenant is never started while one can be resumed: issue 21).
    status, again, _ = post()
    assert status == 202 and again["runId"] == body["runId"] and again.get("existing")
    assert get(body["runId"])[1]["status"] == "queued"
    assert runs.process_message(msg.get_body(), 2) == "collected"
    assert get(body["runId"])[1]["status"] == "succeeded"


def test_redelivery_of_an_abandoned_run_collects_it_again(sim, env):
    _, body, _ = post()
    msg = receive(env)
    store, key = _store(env), runs.tenant_key(load_settings(env))
    record = runs.read_status(store, key, body["runId"])
    record.update(status="running", attempts=1)
    from connector.store.status import write_status

    write_status(store, record)
    before = collections(sim)
    assert runs.process_message(msg.get_body(), 2) == "collected"
    code, record = get(body["runId"])
    assert record["status"] == "succeeded" and record["attempts"] == 2 and collections(sim) == before + 1
    assert record["worker"]["runid"] == body["runId"] and record["worker"]["lock"].endswith("/run.lock")


# -- storage that cannot be reached (issue 11.8) --------------------------------------------------------------

class _DeadStorage:
    """A TCP port that accepts and hangs up at once, counting connection attempts (every retry is one)."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()

    def connection_string(self) -> str:
        from tests.conftest import AZURITE_ACCOUNT, AZURITE_KEY

        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};"
                f"QueueEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};")


@pytest.fixture
def dead_storage():
    server = _DeadStorage()
    yield server
    server.close()


def test_unreachable_storage_is_a_503_json_after_few_attempts(sim, env, monkeypatch, dead_storage):
    monkeypatch.setenv("SNAPSHOT_CONNECTION_STRING", dead_storage.connection_string())
    monkeypatch.setenv("SNAPSHOT_CONTAINER", f"d{uuid.uuid4().hex[:12]}")
    for call in (lambda: post(), lambda: get("20261122T020000Z-3f9a1c"), lambda: list_runs()):
        dead_storage.accepted = 0
        result = call()
        code, reply = result[0], result[1]
        assert code == 503 and reply["error"]["code"] == "storage_unavailable", reply
        assert reply["error"]["setting"] == "SNAPSHOT_CONNECTION_STRING"
        assert 1 <= dead_storage.accepted <= 2  # one try and at most one quick retry, not four with long waits
        assert env["AzureWebJobsStorage"] not in json.dumps(reply)


def test_unreachable_queue_gives_up_after_few_attempts(dead_storage):
    client = runs.queue_client({"AzureWebJobsStorage": dead_storage.connection_string()})
    with pytest.raises(Exception):  # noqa: B017 - whatever the transport raises, it must raise soon
        client.send_message("x")
    assert 1 <= dead_storage.accepted <= 2  # the SDK default is 4 attempts over about 86 s
    assert client._config.retry_policy.total_retries <= 1


def test_post_when_only_the_queue_is_down_is_a_503_and_the_run_is_not_left_queued(sim, env, monkeypatch,
                                                                                 dead_storage):
    monkeypatch.setenv("AzureWebJobsStorage", dead_storage.connection_string())
    status, reply, headers = post()
    assert status == 503 and reply["error"]["code"] == "queue_unavailable" and headers.get("Retry-After")
    code, listing = list_runs("1")
    assert listing["runs"][0]["status"] == "failed"
    monkeypatch.setenv("AzureWebJobsStorage", env["AzureWebJobsStorage"])
    status, again, _ = post()  # the failed attempt does not block the tenant
    assert status == 202 and not again.get("existing")


# -- listing runs does not grow with the history (issue 11.13) ------------------------------------------------

def test_listing_recent_runs_costs_the_same_at_50_and_500_runs(env):
    from connector.store.blob import BlobStore
    from connector.store.status import create_status, list_statuses, new_record

    store = BlobStore(f"l{uuid.uuid4().hex[:12]}", connection_string=env["SNAPSHOT_CONNECTION_STRING"])
    key = "contoso.onmicrosoft.com"
    base = datetime(2026, 1, 1, tzinfo=UTC)
    costs = {}
    created = 0
    def make(i: int) -> None:
        when = base + timedelta(minutes=i)
        run_id = f"{when:%Y%m%dT%H%M%SZ}-{i:06x}"
        create_status(store, new_record(run_id, key, "timer", ["users"], when.isoformat().replace("+00:00", "Z")))

    for total in (50, 500):
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(make, range(created, total)))
        created = total
        list_statuses(store, key, 20)  # the one-time backfill check of an index that is complete
        before = store.requests
        listed = list_statuses(store, key, 20)
        costs[total] = store.requests - before
        newest = [f"{base + timedelta(minutes=i):%Y%m%dT%H%M%SZ}-{i:06x}" for i in range(total - 1, total - 21, -1)]
        assert [r["runId"] for r in listed] == newest
    assert costs[50] == costs[500] == 1 + 20  # one List Blobs page of 20 names, then 20 records
