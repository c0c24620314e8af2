"""A worker killed with SIGKILL mid-run, into a local folder and into Blob Storage (issues 11.6, 11.7).

The run's message is delivered to a worker process, which is killed while datasets are half written.
Nothing of the killed attempt may look like a published run, the status must not claim a live run
once the worker's lease is gone, and the next delivery must finish the run with every record and
nothing orphaned (no .partial file, no uncommitted block, no in-progress marker, no spool file).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from connector.config import load_settings
from connector.service import runs
from connector.service.appconfig import store_for, tenant_key
from connector.store.contract import read_json
from simulator import Simulator, TenantSpec
from simulator.tenant import DEFAULT_ROLES
from tests.conftest import ROOT, apply_env

DATASETS = "organization,subscribed_skus,users,user_sign_in_activity,groups,group_members"
WORKER = ("import sys\n"
          "from connector.service.worker import process_message\n"
          "process_message(sys.stdin.buffer.read(), 1, lease_seconds=15, renew_seconds=0.2)\n")


@pytest.fixture(scope="module")
def sim():
    with Simulator(TenantSpec(seed=5, users=1200)) as s:
        yield s


@pytest.fixture(params=["folder", "blob"])
def env(request, sim, azurite, monkeypatch, tmp_path):
    sim.spec.roles, sim.spec.premium, sim.spec.latency = DEFAULT_ROLES, True, 0.0
    e = sim.env(secret_in="env")
    e.update({"M365_DATASETS": DATASETS, "AzureWebJobsStorage": azurite.connection_string})
    if request.param == "folder":
        e["SNAPSHOT_DIR"] = str(tmp_path / "out")
    else:
        e.update({"SNAPSHOT_CONNECTION_STRING": azurite.connection_string,
                  "SNAPSHOT_CONTAINER": f"k{uuid.uuid4().hex[:12]}"})
    for name in runs.FUNCTION_SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    apply_env(monkeypatch, e)
    queue = QueueClient.from_connection_string(azurite.connection_string, runs.RUNS_QUEUE,
                                               message_decode_policy=TextBase64DecodePolicy())
    try:
        queue.create_queue()
    except Exception:
        queue.clear_messages()
    e["_kind"] = request.param
    return e


def _receive(env) -> bytes:
    queue = QueueClient.from_connection_string(env["AzureWebJobsStorage"], runs.RUNS_QUEUE,
                                               message_decode_policy=TextBase64DecodePolicy())
    msgs = list(queue.receive_messages(max_messages=1, visibility_timeout=60))
    assert msgs
    return msgs[0].content.encode()


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _everything(store, kind: str, root: str | None) -> list[str]:
    """Every name in the destination, including what readers cannot see (.partial, uncommitted blobs)."""
    if kind == "folder":
        return sorted(str(p.relative_to(root)) for p in __import__("pathlib").Path(root).rglob("*") if p.is_file())
    return sorted(b.name for b in store.container.list_blobs(include=["uncommittedblobs"]))


def test_killed_worker_then_redelivery_finishes_the_run(sim, env, tmp_path):
    settings = load_settings(env)
    store, key = store_for(settings), tenant_key(settings)
    request = runs.request_run(settings, "http", None, env)
    run_id = request.record["runId"]
    body = _receive(env)
    spool_dir = tmp_path / "tmp"
    spool_dir.mkdir()
    sim.spec.latency = 0.3  # slow enough Graph that the kill lands mid-run
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("_")}
    worker = subprocess.Popen([sys.executable, "-c", WORKER], cwd=ROOT, stdin=subprocess.PIPE,
                              env={**worker_env, "TMPDIR": str(spool_dir)})
    worker.stdin.write(body)
    worker.stdin.close()
    try:
        def staged() -> list[str]:
            """Data written but not yet visible: .partial files, or blobs with only uncommitted blocks."""
            if env["_kind"] == "folder":
                return [str(p) for p in (tmp_path / "out").rglob("*.partial") if p.stat().st_size > 0]
            return [b.name for b in store.container.list_blobs(include=["uncommittedblobs"])
                    if b.name.endswith(".jsonl.gz")]

        def halfway():
            record = runs.read_status(store, key, run_id)
            if not record or record["status"] != "running":
                return None
            states = [d["status"] for d in record["datasets"].values()]
            return record if "succeeded" in states and "running" in states and staged() else None

        killed_at = _wait(halfway, 90, "the worker to be half-way")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    sim.spec.latency = 0.0
    tid = killed_at["tenantId"]
    prefix = f"tenants/{tid}/runs/{run_id}"

    # Nothing of the killed attempt looks like a published run, and no spool file is left.
    assert [p for p in store.list(f"tenants/{tid}/") if p.endswith(".jsonl.gz")] == []
    assert store.read_bytes(f"{prefix}/manifest.json") is None
    assert list(spool_dir.iterdir()) == []
    assert runs.read_status(store, key, run_id)["status"] == "running"  # what the dead worker left

    # Once its lease is gone, callers are told the truth, and the next delivery collects it again.
    _wait(lambda: store.lease_holder(f"tenants/{key}/run.lock") is None, 30, "the dead worker's lease to expire")
    view = runs.current_view(store, key, runs.read_status(store, key, run_id))
    assert view["status"] == "queued" and view["stale"] is True
    assert runs.process_message(body, 2, lease_seconds=15) == "collected"

    record = runs.read_status(store, key, run_id)
    assert record["status"] == "succeeded" and record["attempts"] == 2, record
    manifest = read_json(store, f"{prefix}/manifest.json")
    expected = {"users": 1200, "user_sign_in_activity": 1200, "groups": len(sim.inventory.groups())}
    for name, count in expected.items():
        assert manifest["datasets"][name]["records"] == count, name  # records lost: 0
    for entry in manifest["files"]:
        data = store.read_bytes(f"{prefix}/{entry['path']}")
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
        if entry["path"].endswith(".jsonl.gz"):  # data files and the insights' JSON Lines
            assert len(gzip.decompress(data).splitlines()) == entry["records"]
    assert read_json(store, f"tenants/{tid}/latest.json")["runId"] == run_id

    # Nothing orphaned: exactly the run's files, its status, the pointers, the lock and the index.
    everything = _everything(store, env["_kind"], env.get("SNAPSHOT_DIR"))
    run_files = {f"{prefix}/{e['path']}" for e in manifest["files"]}
    assert {p for p in everything if p.startswith(prefix + "/")} == \
        run_files | {f"{prefix}/manifest.json", f"{prefix}/status.json"}
    assert not [p for p in everything if p.endswith(".partial") or "/in-progress/" in p], everything
    latest = {p for p in everything if p.startswith(f"tenants/{tid}/latest/")}
    assert latest == {f"tenants/{tid}/latest/{e['path']}" for e in manifest["files"]} | \
        {f"tenants/{tid}/latest/manifest.json"}
    assert store.read_bytes(f"tenants/{key}/active-run.json") is None
    assert list(spool_dir.iterdir()) == []
