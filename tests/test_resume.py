"""Long listings resume (issue 21, point 4): a run interrupted half-way and collected again under the same
run id continues from its checkpoints, and its snapshot equals a run that was never interrupted.

The interruptions are real: the run's task is cancelled (what the worker's invocation budget does), or a
worker process is killed with SIGKILL. Requests are counted in the simulator's own log.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import orjson
import pytest

from connector.collect.checkpoint import FORMAT, checkpoint_path, latest_resumable
from connector.collect.engine import Run, new_run_id
from connector.config import ConfigError, load_settings
from connector.store.contract import read_json, write_json
from connector.store.destination import open_store
from simulator import Simulator, TenantSpec
from tests.conftest import ROOT, apply_env
from tests.helpers import blob_env, read_dataset

USERS = 3000
# The older service's sign-in page of 120 (capped, not refused): 25 pages to interrupt, on a small tenant.
PAGE = 120
SIGNIN = "user_sign_in_activity"
DATASETS = f"organization,subscribed_skus,groups,{SIGNIN}"


@pytest.fixture(scope="module")
def sim():
    with Simulator(TenantSpec(seed=21, users=USERS, sign_in_page_limit=PAGE)) as s:
        yield s


@pytest.fixture(params=["folder", "blob"])
def env(request, sim, tmp_path, azurite, monkeypatch):
    sim.spec.latency = 0.0
    e = sim.env(secret_in="env")
    e["M365_DATASETS"] = DATASETS
    if request.param == "folder":
        e["SNAPSHOT_DIR"] = str(tmp_path / "out")
    else:
        e.update(blob_env(azurite))
    apply_env(monkeypatch, e)  # the simulator's CA for token requests (REQUESTS_CA_BUNDLE) is read from the process
    return e


def _signin_pages(sim) -> list[Any]:
    return [r for r in sim.requests if r.service == "graph" and r.path == "/v1.0/users"
            and "signInActivity" in (r.query.get("$select") or "")]


def _files(store, manifest: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Every data file of a run: sha256 and records, checked against the file itself."""
    out = {}
    for name, entry in manifest["datasets"].items():
        if entry["status"] == "succeeded":
            read_dataset(store, manifest, name)  # bytes, sha256 and records agree with the manifest
            out[name] = (entry["sha256"], entry["records"])
    return out


async def _interrupted(settings, store, run_id: str, *, after_records: int, pause: bool) -> None:
    """Collect until the sign-in checkpoint holds `after_records` records, then cancel the run (`pause`:
    as the worker's budget does, letting chains save where they stand first)."""
    runs: list[Run] = []
    task = asyncio.ensure_future(Run(settings, store, trigger="test", run_id=run_id, progress=runs.append,
                                     progress_every=None).execute())
    path = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.05)
        if runs and path is None and runs[-1].publication is not None:
            path = checkpoint_path(runs[-1].tenant_id, run_id, SIGNIN)
        state = read_json(store, path) if path else None
        if state and state["records"] >= after_records:
            break
    assert not task.done(), "the run finished before it could be interrupted"
    if pause:
        runs[-1].pausing = True
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _clean_run(env) -> tuple[dict[str, Any], dict[str, tuple[str, int]]]:
    """The same tenant collected without interruption, into a destination of its own."""
    other = ({"SNAPSHOT_DIR": env["SNAPSHOT_DIR"] + "-clean"} if "SNAPSHOT_DIR" in env
             else {"SNAPSHOT_CONTAINER": env["SNAPSHOT_CONTAINER"] + "c"})
    settings = load_settings({**env, **other})
    store = open_store(settings)
    manifest = asyncio.run(Run(settings, store, trigger="test", progress_every=None).execute())
    assert manifest["status"] == "succeeded", manifest["warnings"]
    return manifest, _files(store, manifest)


@pytest.mark.parametrize("pause", [True, False], ids=["paused", "cancelled"])
def test_interrupted_sign_in_listing_resumes_to_the_same_snapshot(sim, env, pause):
    clean_manifest, clean = _clean_run(env)
    pages_clean = clean_manifest["datasets"][SIGNIN]["requests"]
    assert pages_clean >= 10  # a listing long enough to stop half-way

    settings = load_settings(env)
    store = open_store(settings)
    run_id = new_run_id()
    sim.spec.latency = 0.15  # slow enough that the run can be stopped half-way
    sim.clear_requests()
    try:
        asyncio.run(_interrupted(settings, store, run_id, after_records=USERS // 2, pause=pause))
    finally:
        time.sleep(0.5)  # a request in flight when the run stopped is logged when its answer is sent
        sim.spec.latency = 0.0
    first = len(_signin_pages(sim))
    tid = clean_manifest["tenantId"]
    state = read_json(store, checkpoint_path(tid, run_id, SIGNIN))
    assert state["nextLink"] and USERS // 2 <= state["records"] < USERS
    # Nothing of the interrupted attempt is visible, and the checkpoints are not in the run folder.
    assert store.read_bytes(f"tenants/{tid}/runs/{run_id}/manifest.json") is None
    assert not [p for p in store.list(f"tenants/{tid}/runs/{run_id}/") if p.endswith(".jsonl.gz")]
    assert latest_resumable(store, tid) == run_id

    manifest = _resume(sim, settings, store, run_id)
    resumed = _files(store, manifest)
    assert resumed == clean  # same records, same order, same sha256 for every dataset

    entry = manifest["datasets"][SIGNIN]
    assert entry["resumed"]["continuedFromNextLink"] is True
    assert entry["resumed"]["recordsReplayed"] == state["records"]
    # The second attempt asked only for the pages the checkpoint did not hold...
    second = len(_signin_pages(sim))
    assert second == pages_clean - state["records"] // PAGE
    # ... the stopped attempt lost at most the page requested ahead (prefetch) and the page being written when
    # the cancellation landed (paused or not: it may land inside the write; shielding the write was tried and
    # taken out, as httpx's connection racing delivers cancellations again and the run ended before the
    # shielded write); no dataset finished before the interruption was requested again.
    assert first + second <= pages_clean + 2
    for name in ("organization", "subscribed_skus", "groups"):  # finished long before the sign-in half-way
        assert manifest["datasets"][name]["resumed"]["complete"] is True, name
        assert manifest["datasets"][name]["requests"] == 0, name
    # Besides the sign-in pages only the run's /users/$count (its expected durations) reaches Graph.
    assert [r.path for r in sim.requests if r.service == "graph" and r.path != "/v1.0/users/$count"] == [
        r.path for r in _signin_pages(sim)]
    # Published: the checkpoints are gone, and never listed in the manifest.
    assert store.list(f"tenants/{tid}/checkpoints/") == []
    assert not [f for f in manifest["files"] if "checkpoint" in f["path"]]


def _stop_half_way(sim, settings, store, run_id: str) -> None:
    sim.spec.latency = 0.1
    try:
        asyncio.run(_interrupted(settings, store, run_id, after_records=USERS // 3, pause=True))
    finally:
        time.sleep(0.4)  # the request in flight when the run stopped is logged when answered
        sim.spec.latency = 0.0


def _half_done(sim, env) -> tuple[dict[str, Any], dict[str, tuple[str, int]], Any, Any, str]:
    """A clean run's manifest and files, and a run of the same tenant stopped half-way through sign-in."""
    clean_manifest, clean = _clean_run(env)
    settings = load_settings(env)
    store = open_store(settings)
    run_id = new_run_id()
    _stop_half_way(sim, settings, store, run_id)
    return clean_manifest, clean, settings, store, run_id


def _resume(sim, settings, store, run_id: str) -> dict[str, Any]:
    """Collect the run again under its id, with a fresh request log; it must succeed."""
    sim.clear_requests()
    manifest = asyncio.run(Run(settings, store, trigger="test", run_id=run_id, progress_every=None).execute())
    assert manifest["status"] == "succeeded", manifest["warnings"]
    return manifest


def _spoil(store, path: str, how: str, tid: str) -> None:
    state = read_json(store, path)
    if how == "corrupt":
        store.write_bytes(path, orjson.dumps(state)[:-20], "application/json")
        return
    if how == "other_tenant":
        state["tenantId"] = str(uuid.uuid4())
    elif how == "other_run":
        state["runId"] = new_run_id()
    elif how == "other_settings":
        state["inputs"] = "0" * 16  # as if M365_DOMAINS or M365_REPORT_PERIOD had changed since
    elif how == "older_format":
        state["format"] = FORMAT - 1
    elif how == "altered_chunk":
        chunk = f"tenants/{tid}/checkpoints/{state['runId']}/{state['chunks'][0]['name']}"
        store.write_bytes(chunk, gzip.compress(b'{"id": "invented"}\n'), "application/gzip")
    write_json(store, path, state)


@pytest.mark.parametrize("how", ["corrupt", "other_tenant", "other_run", "other_settings", "older_format",
                                 "altered_chunk"])
def test_a_checkpoint_that_cannot_be_trusted_is_set_aside_and_the_listing_restarts(sim, env, how, caplog):
    if "SNAPSHOT_CONTAINER" in env and how not in ("corrupt", "other_tenant"):
        pytest.skip("Blob Storage: one corrupt and one foreign checkpoint are enough")
    clean_manifest, clean, settings, store, run_id = _half_done(sim, env)
    tid = clean_manifest["tenantId"]
    path = checkpoint_path(tid, run_id, SIGNIN)
    _spoil(store, path, how, tid)

    manifest = _resume(sim, settings, store, run_id)
    assert _files(store, manifest) == clean  # nor poisons it: every record, once, in order
    assert len(_signin_pages(sim)) == clean_manifest["datasets"][SIGNIN]["requests"]  # the listing restarted
    warning = next(w for w in manifest["warnings"] if w["code"] == "checkpoint_refused")
    assert path in warning["message"] and "set aside as" in warning["message"]
    assert "SNAPSHOT_DIR or SNAPSHOT_CONTAINER" in warning["message"]  # the fix
    assert any(path in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    aside = store.list(f"tenants/{tid}/checkpoints-set-aside/{run_id}/")
    assert len(aside) == 1 and aside[0] in warning["message"]  # kept for inspection, not deleted silently
    assert "resumed" not in manifest["datasets"][SIGNIN]
    assert manifest["datasets"]["organization"]["resumed"]["complete"] is True  # the others still resume
    assert store.list(f"tenants/{tid}/checkpoints/") == []


def test_a_next_link_graph_refuses_restarts_that_listing(sim, env):
    """Graph's page tokens expire; the simulator answers a token it did not issue as Graph does (400)."""
    clean_manifest, clean, settings, store, run_id = _half_done(sim, env)
    tid = clean_manifest["tenantId"]
    path = checkpoint_path(tid, run_id, SIGNIN)
    state = read_json(store, path)
    token = state["nextLink"].split("$skiptoken=")[1]
    state["nextLink"] = state["nextLink"].replace(token, token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB"))
    write_json(store, path, state)

    manifest = _resume(sim, settings, store, run_id)
    assert _files(store, manifest) == clean
    entry = manifest["datasets"][SIGNIN]
    assert entry["plan"]["resumeRestarted"] == "400 Request_BadRequest"
    assert [w for w in entry["warnings"] if w["code"] == "resume_restarted"]
    assert len(_signin_pages(sim)) == clean_manifest["datasets"][SIGNIN]["requests"] + 1  # the refused link


# -- the queue worker: its invocation budget, and a worker killed outright ----------------------------------

WORKER = ("import sys\n"
          "from connector.service.worker import process_message\n"
          "process_message(sys.stdin.buffer.read(), 1, lease_seconds=15, renew_seconds=0.2)\n")


@pytest.fixture
def queued(env, azurite, monkeypatch):
    """The Function app's settings on Azurite's queue, and a way to take the next run message."""
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy

    from connector.service import runs

    env = {**env, "AzureWebJobsStorage": azurite.connection_string}
    apply_env(monkeypatch, env)
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    queue = QueueClient.from_connection_string(azurite.connection_string, f"{runs.RUNS_QUEUE}",
                                               message_decode_policy=TextBase64DecodePolicy())
    try:
        queue.create_queue()
    except Exception:
        queue.clear_messages()

    def receive() -> bytes | None:
        msgs = list(queue.receive_messages(max_messages=1, visibility_timeout=60))
        if not msgs:
            return None
        queue.delete_message(msgs[0])
        return msgs[0].content.encode()

    return env, receive


def _requested(env) -> tuple[dict[str, Any], dict[str, tuple[str, int]], Any, Any, str, str]:
    """A clean run's manifest and files, and a run of the same tenant requested through the Function app."""
    from connector.service import runs

    clean_manifest, clean = _clean_run(env)
    settings = load_settings(env)
    store, key = runs.store_for(settings), runs.tenant_key(settings)
    return clean_manifest, clean, settings, store, key, runs.request_run(settings, "http", None, env).record["runId"]


def _deliver(sim, env, store, key: str, body: bytes, count: int, clean: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """Deliver the run's message to the worker (fresh request log): it finishes the run, equal to the clean one."""
    from connector.service import runs

    sim.clear_requests()
    assert runs.process_message(body, count, env, lease_seconds=15) == "collected"
    record = runs.read_status(store, key, orjson.loads(body)["runId"])
    assert record["status"] == "succeeded", record
    manifest = read_json(store, record["manifest"])
    assert _files(store, manifest) == clean
    return manifest


def test_the_invocation_budget_requeues_the_run_and_the_next_delivery_finishes_it(sim, queued):
    from connector.service import runs

    env, receive = queued
    clean_manifest, clean, settings, store, key, run_id = _requested(env)
    pages_clean = clean_manifest["datasets"][SIGNIN]["requests"]
    sim.clear_requests()
    sim.spec.latency = 0.3
    try:
        assert runs.process_message(receive(), 1, env, lease_seconds=15, budget_seconds=3.0) == "requeued"
    finally:
        time.sleep(0.5)
        sim.spec.latency = 0.0
    first = len(_signin_pages(sim))
    record = runs.read_status(store, key, run_id)
    assert record["status"] == "queued" and record["resumes"] == 1, record
    assert "M365_INVOCATION_BUDGET" in record["paused"]["reason"]
    assert record["datasets"]["organization"]["status"] == "succeeded"  # its progress, kept
    tid = clean_manifest["tenantId"]
    state = read_json(store, checkpoint_path(tid, run_id, SIGNIN))
    assert 0 < state["records"] < USERS and state["nextLink"]
    assert store.read_bytes(f"tenants/{tid}/runs/{run_id}/manifest.json") is None  # nothing published
    # The run holds on to the tenant: another request gets it back instead of starting a second run.
    assert runs.request_run(settings, "timer", None, env).record["runId"] == run_id

    body = receive()  # the run's own message, queued again by the worker
    assert body is not None and orjson.loads(body)["runId"] == run_id
    assert receive() is None  # and no other
    _deliver(sim, env, store, key, body, 1, clean)
    # At most the page requested ahead and the one being written when the budget's cancellation landed.
    assert first + len(_signin_pages(sim)) <= pages_clean + 2
    assert store.list(f"tenants/{tid}/checkpoints/") == []


def test_a_killed_worker_resumes_on_the_next_delivery(sim, queued, tmp_path):
    from connector.service import runs

    env, receive = queued
    clean_manifest, clean, settings, store, key, run_id = _requested(env)
    pages_clean = clean_manifest["datasets"][SIGNIN]["requests"]
    tid = clean_manifest["tenantId"]
    body = receive()
    sim.clear_requests()
    sim.spec.latency = 0.2
    worker = subprocess.Popen([sys.executable, "-c", WORKER], cwd=ROOT, stdin=subprocess.PIPE,
                              env={k: v for k, v in os.environ.items() if not k.startswith("_")})
    worker.stdin.write(body)
    worker.stdin.close()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            state = read_json(store, checkpoint_path(tid, run_id, SIGNIN))
            if state and state["records"] >= USERS // 2:
                break
            assert worker.poll() is None, "the worker finished before it could be killed"
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        time.sleep(0.5)
        sim.spec.latency = 0.0
    first = len(_signin_pages(sim))
    saved = read_json(store, checkpoint_path(tid, run_id, SIGNIN))["records"]
    assert runs.read_status(store, key, run_id)["status"] == "running"  # what the dead worker left

    # The timer finds the run it could resume: it queues that run again instead of starting another.
    deadline = time.monotonic() + 30
    while store.lease_holder(f"tenants/{key}/run.lock") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runs.timer_fired(env=env).record["runId"] == run_id
    again = receive()
    assert again is not None and orjson.loads(again)["runId"] == run_id

    manifest = _deliver(sim, env, store, key, again, 2, clean)
    assert manifest["datasets"][SIGNIN]["resumed"]["recordsReplayed"] == saved
    second = len(_signin_pages(sim))
    assert second == pages_clean - saved // PAGE  # only the pages the checkpoint did not hold
    assert first + second <= pages_clean + 2  # lost: at most the page in flight and the one requested ahead
    assert store.list(f"tenants/{tid}/checkpoints/") == []
    everything = store.list(f"tenants/{tid}/runs/{run_id}/")
    assert {p.rsplit("/", 1)[1] for p in everything} == {e["path"] for e in manifest["files"]} | \
        {"manifest.json"} | ({"status.json"} if key == tid else set())


def test_cli_run_resume_continues_the_newest_unfinished_run(sim, env, capsys):
    from connector.cli.main import main

    if "SNAPSHOT_CONTAINER" in env:
        pytest.skip("the folder destination is enough for the command line")
    clean_manifest, clean, settings, store, run_id = _half_done(sim, env)
    capsys.readouterr()

    assert main(["run", "--resume", "--json"]) == 0
    out = capsys.readouterr()
    manifest = orjson.loads(out.out)
    assert manifest["runId"] == run_id and f"resuming run {run_id}" in out.err
    assert _files(store, manifest) == clean
    assert manifest["datasets"][SIGNIN]["resumed"]["continuedFromNextLink"] is True
    # Nothing is left to resume: a second --resume starts a new run and says so; an id without checkpoints
    # is refused with the fix.
    assert main(["run", "--resume", run_id]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["run", "--resume", "-q"]) == 0
    assert "nothing to resume" not in capsys.readouterr().err  # -q: quiet


def test_the_invocation_budget_setting_is_checked_and_defaults_below_function_timeout(monkeypatch):
    from connector.service.appconfig import budget_problem, function_timeout_minutes, invocation_budget

    timeout = function_timeout_minutes()
    assert timeout == 120  # host.json
    assert invocation_budget({}) == 0.75 * timeout * 60
    assert invocation_budget({"M365_INVOCATION_BUDGET": "25"}) == 25 * 60
    for bad in ("abc", "0", "-5", "120", "600"):
        problem = budget_problem({"M365_INVOCATION_BUDGET": bad})
        assert problem and "functionTimeout" in problem and bad not in problem.split("(")[0], bad
        with pytest.raises(ConfigError) as err:
            invocation_budget({"M365_INVOCATION_BUDGET": bad})
        assert "M365_INVOCATION_BUDGET" in str(err.value.problems[0])
