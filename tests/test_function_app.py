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
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobLeaseClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

import function_app
from connector import runs
from connector.config import SETTING_NAMES, ConfigError, load_settings
from connector.datasets import DATASETS
from connector.store import read_json
from simulator import Simulator, TenantSpec
from simulator.tenant import DEFAULT_ROLES
from tests.conftest import ROOT, apply_env

FUNCTION_KEY = "k3y-" + "x" * 20  # must never come back in a response
BASE = "http://localhost:7071/api"
ALL_ROLES = DEFAULT_ROLES  # every dataset's least-privileged permission (simulator default)


# -- fixtures ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def indexed():
    """app.get_functions() is not idempotent: index once per process."""
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


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
    for name in runs.FUNCTION_SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    apply_env(monkeypatch, e)
    for q in (runs.RUNS_QUEUE, runs.POISON_QUEUE):
        client = QueueClient.from_connection_string(azurite.connection_string, q)
        try:
            client.create_queue()
        except Exception:
            client.clear_messages()
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
    assert set(indexed) == {"runs_request", "runs_list", "runs_get", "permissions", "health", "scheduled_run",
                            "run_worker", "run_poison"}
    http = {
        "runs_request": ("runs", ["POST"], "FUNCTION"),
        "runs_list": ("runs", ["GET"], "FUNCTION"),
        "runs_get": ("runs/{runId}", ["GET"], "FUNCTION"),
        "permissions": ("permissions", ["GET"], "FUNCTION"),
        "health": ("health", ["GET"], "ANONYMOUS"),
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
    for path in ("function_app.py", "connector/runs.py", "connector/api.py", "connector/telemetry.py"):
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
        "t = time.perf_counter(); import function_app; took = time.perf_counter() - t\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('msgraph', 'kiota_http', 'httpx') or "
        "m.startswith(('azure.storage', 'azure.identity', 'azure.keyvault', 'azure.monitor')))\n"
        "print(took); print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    took, heavy = out.stdout.splitlines()[:2] if out.stdout.count("\n") >= 2 else (out.stdout.strip(), "")
    assert heavy == "", f"heavy modules imported: {heavy}"
    assert float(took) < 1.0


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
    assert record["requestedAt"] and record["startedAt"] is None and set(record["datasets"]) == set(DATASETS)

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
    (b'{"datasets": ["users"], "pad": "' + b"x" * 70000 + b'"}', 413, "body_too_large", "65536"),
])
def test_bad_post_bodies(env, body, status, code, fragment):
    got, reply, _ = post(body)
    assert got == status
    assert reply["error"]["code"] == code and fragment in reply["error"]["message"]
    assert reply["error"]["validDatasets"] == list(DATASETS)
    assert queued_count(env) == 0


def test_unknown_dataset_message_lists_valid_names(env):
    _, reply, _ = post(b'{"datasets": ["nope"]}')
    for name in DATASETS:
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
    from connector.store import LocalStore

    store = LocalStore(tmp_path)
    first, second = runs.TenantLock(store, "t"), runs.TenantLock(store, "t")
    assert first.acquire() and not second.acquire()
    first.release()
    assert second.acquire()
    second.release()
