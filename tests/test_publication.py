"""Publication: nothing looks like a snapshot before the whole run is there, latest only moves forward,
`latest/` mirrors the newest published run, and what dead runs leave is swept (issues 11.7, 11.9, 11.10, 12.1)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import resource
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from connector.collect.engine import collect, new_run_id
from connector.insights.derive import DERIVED_FILES
from connector.store.contract import DestinationError, read_json
from connector.store.destination import open_store
from connector.store.local import LocalStore
from connector.store.publish import checkpoint_prefix, marker_path, run_prefix
from simulator import Simulator, TenantSpec
from simulator.tenant import DEFAULT_ROLES
from tests.conftest import ROOT, apply_env
from tests.helpers import blob_env, settings_for

CORE = "organization,subscribed_skus,users,user_sign_in_activity"


@pytest.fixture(scope="module")
def sim():
    with Simulator(TenantSpec(seed=21, users=600)) as s:
        yield s


@pytest.fixture
def sim_env(sim, monkeypatch):
    sim.spec.roles, sim.spec.premium, sim.spec.latency = DEFAULT_ROLES, True, 0.0
    env = sim.env(secret_in="env")
    env["M365_DATASETS"] = CORE
    apply_env(monkeypatch, env)
    return env


@pytest.fixture(params=["folder", "blob"])
def dest(request, tmp_path):
    if request.param == "folder":
        return {"SNAPSHOT_DIR": str(tmp_path / "out")}
    return blob_env(request.getfixturevalue("azurite"))


def _run(env, dest, run_id=None, progress=None, **extra):
    settings = settings_for({**env, **dest}, **extra)
    store = open_store(settings)
    manifest = asyncio.run(collect(settings, store, trigger="test", run_id=run_id, progress=progress))
    return manifest, store


def _data_files(store, tenant_id: str) -> list[str]:
    return [p for p in store.list(f"tenants/{tenant_id}/runs/") if p.endswith(".jsonl.gz")]


def _verify(store, folder: str, manifest: dict) -> None:
    for entry in manifest["files"]:
        data = store.read_bytes(f"{folder}/{entry['path']}")
        assert data is not None and len(data) == entry["bytes"], entry
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry
        if entry["path"].endswith(".jsonl.gz"):  # data files and derived ones (the insights' JSON Lines)
            assert len(gzip.decompress(data).splitlines()) == entry["records"], entry


def test_data_files_stay_invisible_until_every_dataset_has_finished(sim, sim_env, dest):
    sim.spec.latency = 0.03  # users and sign-ins page on while the one-request datasets are long finished
    seen: list[tuple[list[str], list[str]]] = []
    holder: dict = {}

    def progress(run):
        finished = [n for n, r in run.results.items() if r.status in ("succeeded", "failed", "skipped")]
        if run.finished is None and 0 < len(finished) < len(run.results) and run.publication is not None:
            seen.append((finished, _data_files(holder["store"], run.tenant_id)))

    settings = settings_for({**sim_env, **dest})
    holder["store"] = store = open_store(settings)
    manifest = asyncio.run(collect(settings, store, trigger="test", progress=progress))
    assert manifest["status"] == "succeeded"
    # Some dataset had finished while another still ran (which one first is the network's choice: organization's
    # request, the run's first, once took 0.24 s to open its connection and finished after the users).
    assert seen
    assert all(visible == [] for _, visible in seen), seen
    assert sorted(_data_files(store, manifest["tenantId"])) == sorted(
        f"{run_prefix(manifest['tenantId'], manifest['runId'])}/{e['path']}" for e in manifest["files"]
        if e["path"].endswith(".jsonl.gz"))
    assert {e["dataset"] for e in manifest["files"] if "dataset" in e} == set(CORE.split(","))
    assert {e["path"] for e in manifest["files"] if e.get("derived")} == set(DERIVED_FILES)
    _verify(store, run_prefix(manifest["tenantId"], manifest["runId"]), manifest)
    assert store.list(f"tenants/{manifest['tenantId']}/in-progress/") == []


def test_latest_folder_keeps_each_datasets_newest_complete_copy(sim, sim_env, dest):
    """latest/ per dataset (issue 22): a run of some datasets replaces only what it collected, and
    latest/manifest.json names, for every file, the run it comes from with its bytes and sha256."""
    first, store = _run(sim_env, dest)
    tid = first["tenantId"]
    pointer = read_json(store, f"tenants/{tid}/latest.json")
    assert pointer["runId"] == first["runId"] and pointer["latest"] == f"tenants/{tid}/latest/"
    folder = read_json(store, f"tenants/{tid}/latest/manifest.json")
    assert folder["kind"] == "latest" and folder["runId"] == first["runId"]
    assert {e["path"] for e in folder["files"]} == {e["path"] for e in first["files"]}
    assert {e["runId"] for e in folder["files"]} == {first["runId"]}
    _verify(store, f"tenants/{tid}/latest", folder)
    users = gzip.decompress(store.read_bytes(f"tenants/{tid}/latest/users.jsonl.gz")).splitlines()
    assert len(users) == 600
    # A narrower run replaces its own dataset only: the others keep the earlier run's complete copies.
    second, store = _run(sim_env, dest, M365_DATASETS="organization")
    assert read_json(store, f"tenants/{tid}/latest.json")["runId"] == second["runId"]
    assert sorted(store.list(f"tenants/{tid}/latest/")) == sorted(
        [f"tenants/{tid}/latest/manifest.json"] + [f"tenants/{tid}/latest/{e['path']}" for e in first["files"]])
    folder = read_json(store, f"tenants/{tid}/latest/manifest.json")
    assert folder["runId"] == second["runId"]
    origin = {e["path"]: e["runId"] for e in folder["files"]}
    assert origin.pop("organization.jsonl.gz") == second["runId"]
    assert set(origin.values()) == {first["runId"]}  # users, sign-ins, SKUs and the insights of the full run
    assert {e["manifest"] for e in folder["files"]} == {f"{run_prefix(tid, r['runId'])}/manifest.json"
                                                        for r in (first, second)}
    _verify(store, f"tenants/{tid}/latest", folder)
    # A dataset that fails keeps its earlier copy too: only complete copies reach latest/.
    sim.fail_next("/v1.0/organization", 403, "Authorization_RequestDenied", "Insufficient privileges", times=20)
    try:
        third, store = _run(sim_env, dest, M365_DATASETS="organization,subscribed_skus")
    finally:
        sim.fail_next("/v1.0/organization", 403, "", "", times=0)
    assert third["status"] == "partial"
    folder = read_json(store, f"tenants/{tid}/latest/manifest.json")
    origin = {e["path"]: e["runId"] for e in folder["files"]}
    assert origin["organization.jsonl.gz"] == second["runId"] and origin["subscribed_skus.jsonl.gz"] == third["runId"]
    _verify(store, f"tenants/{tid}/latest", folder)


def test_latest_never_moves_back_to_an_older_run(sim, sim_env, dest):
    now = datetime.now(UTC)
    older = new_run_id(now - timedelta(seconds=30))  # started first ...
    newer, store = _run(sim_env, dest, run_id=new_run_id(now))
    late, store = _run(sim_env, dest, run_id=older)  # ... but finished last
    tid = newer["tenantId"]
    assert newer["runId"] > late["runId"]
    assert read_json(store, f"tenants/{tid}/latest.json")["runId"] == newer["runId"]
    assert read_json(store, f"tenants/{tid}/latest/manifest.json")["runId"] == newer["runId"]
    assert late["status"] == "succeeded" and any(w["code"] == "not_latest" for w in late["warnings"])
    _verify(store, run_prefix(tid, late["runId"]), late)  # still complete under its own folder


def test_a_cancelled_run_leaves_nothing(sim, sim_env, dest):
    sim.spec.latency = 0.05
    settings = settings_for({**sim_env, **dest})
    store = open_store(settings)
    state: dict = {}

    def progress(run):
        state["run"] = run
        if run.results["users"].records > 0 and "task" in state and not state.get("cancelled"):
            state["cancelled"] = True  # as the lease renewer does when the lease is lost
            state["task"].cancel()

    async def main():
        state["task"] = asyncio.ensure_future(collect(settings, store, trigger="test", progress=progress))
        await state["task"]

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    tid = state["run"].tenant_id
    # Only the run's checkpoints stay, to resume it from (issue 21): outside any run folder, no data file.
    kept = f"tenants/{tid}/checkpoints/{state['run'].run_id}/"
    left = store.list(f"tenants/{tid}/")
    assert [p for p in left if not p.startswith(kept)] == []
    assert not [p for p in left if p.endswith(".jsonl.gz")]
    if "SNAPSHOT_DIR" in dest:
        files = [p for p in LocalStore(dest["SNAPSHOT_DIR"]).root.rglob("*") if p.is_file()]
        assert sorted(str(p.relative_to(LocalStore(dest["SNAPSHOT_DIR"]).root)) for p in files) == left
    else:
        blobs = list(store.container.list_blobs(include=["uncommittedblobs"]))
        assert sorted(b.name for b in blobs) == left


def test_a_later_run_sweeps_what_dead_runs_left_but_not_live_ones(sim, sim_env, dest):
    first, store = _run(sim_env, dest, M365_DATASETS="organization")
    tid = first["tenantId"]
    dead, live = new_run_id(), new_run_id()
    for run_id in (dead, live):
        prefix = run_prefix(tid, run_id)
        store.write_bytes(f"{prefix}/users.jsonl.gz", gzip.compress(b'{"id": "x"}\n'), "application/gzip")
        sink = store.sink(f"{prefix}/groups.jsonl.gz")  # written but never committed
        sink.put(b"half a file")
        sink.finish()
        store.write_bytes(f"{prefix}/status.json", b"{}", "application/json")
        store.write_bytes(f"{checkpoint_prefix(tid, run_id)}users.json", b"{}", "application/json")
    store.write_bytes(marker_path(tid, dead), orjson.dumps({"runId": dead, "files": ["users.jsonl.gz",
                      "groups.jsonl.gz"], "lock": f"tenants/{tid}/dead.lock"}), "application/json")
    store.write_bytes(marker_path(tid, live), orjson.dumps({"runId": live, "files": ["users.jsonl.gz",
                      "groups.jsonl.gz"], "lock": f"tenants/{tid}/live.lock"}), "application/json")
    lease = store.lease(f"tenants/{tid}/live.lock", 15, {"runid": live})
    try:
        _run(sim_env, dest, M365_DATASETS="organization")
        assert store.list(run_prefix(tid, dead)) == [f"{run_prefix(tid, dead)}/status.json"]
        assert store.read_bytes(marker_path(tid, dead)) is None
        assert store.list(checkpoint_prefix(tid, dead)) == []  # a dead run's checkpoints go with it
        assert store.list(checkpoint_prefix(tid, live)) != []
        assert store.read_bytes(f"{run_prefix(tid, live)}/users.jsonl.gz") is not None
        assert store.read_bytes(marker_path(tid, live)) is not None
        if "SNAPSHOT_DIR" in dest:
            root = LocalStore(dest["SNAPSHOT_DIR"]).root
            assert not list(root.glob(f"tenants/{tid}/runs/{dead}/*.partial"))
            assert list(root.glob(f"tenants/{tid}/runs/{live}/*.partial"))
        else:
            uncommitted = {b.name for b in store.container.list_blobs(name_starts_with=f"tenants/{tid}/runs/",
                                                                     include=["uncommittedblobs"])}
            assert f"{run_prefix(tid, dead)}/groups.jsonl.gz" not in uncommitted
            assert f"{run_prefix(tid, live)}/groups.jsonl.gz" in uncommitted
    finally:
        lease.release()


def test_a_read_only_container_fails_before_any_graph_request(sim, sim_env, azurite):
    from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

    from tests.conftest import AZURITE_ACCOUNT, AZURITE_KEY

    dest = blob_env(azurite)
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(dest["SNAPSHOT_CONTAINER"])
    sas = generate_container_sas(AZURITE_ACCOUNT, dest["SNAPSHOT_CONTAINER"], account_key=AZURITE_KEY,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.now(UTC) + timedelta(hours=1))
    read_only = (f"BlobEndpoint=http://127.0.0.1:{azurite.blob_port}/{AZURITE_ACCOUNT};"
                 f"SharedAccessSignature={sas}")
    before = (sim.request_count(service="graph"), sim.tokens_issued)
    with pytest.raises(DestinationError) as err:
        _run(sim_env, {"SNAPSHOT_CONNECTION_STRING": read_only, "SNAPSHOT_CONTAINER": dest["SNAPSHOT_CONTAINER"]})
    assert err.value.setting == "SNAPSHOT_CONNECTION_STRING" and "Storage Blob Data Contributor" in str(err.value)
    assert sas not in str(err.value) and "sig=" not in str(err.value)
    assert (sim.request_count(service="graph"), sim.tokens_issued) == before


def _cli(env: dict[str, str], args: list[str], fsize: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        if fsize is not None:  # a disk that takes no more than `fsize` bytes per file
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    base = {k: v for k, v in os.environ.items() if not k.startswith(("M365_", "SNAPSHOT_", "KEY_VAULT", "AZURE_"))}
    return subprocess.run([sys.executable, "-m", "connector", *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=300, preexec_fn=limit)


def test_an_unwritable_folder_fails_before_any_graph_request(sim, sim_env, tmp_path):
    before = (sim.request_count(service="graph"), sim.tokens_issued)
    proc = _cli(sim_env, ["run", "--out", str(tmp_path / "out")], fsize=0)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "SNAPSHOT_DIR" in proc.stderr and "Traceback" not in proc.stderr
    assert (sim.request_count(service="graph"), sim.tokens_issued) == before
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_a_full_disk_leaves_no_partial_files(sim, sim_env, tmp_path):
    """Every file the run writes is capped (RLIMIT_FSIZE): the large ones fail, small ones and the manifest fit."""
    out = tmp_path / "out"
    proc = _cli({**sim_env, "M365_DATASETS": "organization,users,user_sign_in_activity"},
                ["run", "--out", str(out)], fsize=16 * 1024)
    assert proc.returncode in (1, 3), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".partial")], files
    assert not [p for p in files if "in-progress" in p.parts]
    manifests = [p for p in files if p.name == "manifest.json" and "runs" in p.parts]
    if proc.returncode == 3:  # published what fitted, and said what did not
        manifest = orjson.loads(manifests[0].read_bytes())
        assert manifest["datasets"]["users"]["status"] == "failed"
        assert manifest["datasets"]["organization"]["status"] == "succeeded"
        assert {p.name for p in manifests[0].parent.iterdir()} == {"manifest.json", "organization.jsonl.gz"}
    else:  # not even the manifest fitted: nothing of the run stays
        assert not [p for p in files if p.suffix == ".gz"]


def test_a_local_latest_folder_links_the_run_files_and_copies_where_links_fail(tmp_path, monkeypatch):
    """A folder destination's latest/ holds the run's files without a second copy on disk (hard links: files are
    never changed once written); on a file system without hard links it copies them, with the same bytes."""
    store = LocalStore(str(tmp_path))
    store.write_bytes("tenants/t/runs/r1/users.jsonl.gz", b"one run's bytes")
    staged = store.stage_copy("tenants/t/runs/r1/users.jsonl.gz", "tenants/t/latest/users.jsonl.gz")
    assert not (tmp_path / "tenants/t/latest/users.jsonl.gz").exists()  # invisible until committed
    staged.commit()
    run_file, latest = tmp_path / "tenants/t/runs/r1/users.jsonl.gz", tmp_path / "tenants/t/latest/users.jsonl.gz"
    assert os.path.samefile(run_file, latest) and latest.read_bytes() == b"one run's bytes"

    def no_links(*_args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    store.write_bytes("tenants/t/runs/r2/users.jsonl.gz", b"the next run's bytes")
    store.stage_copy("tenants/t/runs/r2/users.jsonl.gz", "tenants/t/latest/users.jsonl.gz").commit()
    assert latest.read_bytes() == b"the next run's bytes"
    assert not os.path.samefile(tmp_path / "tenants/t/runs/r2/users.jsonl.gz", latest)
    assert run_file.read_bytes() == b"one run's bytes"  # the earlier run's file is untouched by the replacement
    assert not list((tmp_path / "tenants/t/latest").glob(".*.partial"))
    # Published again (a redelivery finishing latest/): both names are already one file; nothing is left behind.
    monkeypatch.undo()
    for _ in range(2):
        store.stage_copy("tenants/t/runs/r2/users.jsonl.gz", "tenants/t/latest/users.jsonl.gz").commit()
    assert os.path.samefile(tmp_path / "tenants/t/runs/r2/users.jsonl.gz", latest)
    assert not list((tmp_path / "tenants/t/latest").glob(".*.partial"))
