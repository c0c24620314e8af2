"""The command line as a user runs it: a separate process, real exit codes and output."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("M365_", "SNAPSHOT_", "KEY_VAULT", "IDENTITY_", "AZURE_"))}


def test_demo_collects_a_simulated_tenant(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "connector", "demo", "--users", "300", "--out", str(out)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "run " in proc.stdout and ": succeeded" in proc.stdout and "manifest:" in proc.stdout
    latest = next(out.glob("tenants/*/latest.json"))
    manifest = json.loads((out / json.loads(latest.read_text())["manifest"]).read_text())
    assert manifest["status"] == "succeeded" and manifest["trigger"] == "demo"
    users = gzip.decompress(next(out.glob("tenants/*/runs/*/users.jsonl.gz")).read_bytes()).splitlines()
    assert len(users) == 300


def test_run_without_settings_exits_2_and_names_them(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "connector", "run", "--out", str(tmp_path)], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "M365_TENANT_ID" in proc.stderr and "M365_CLIENT_ID" in proc.stderr


def test_unknown_dataset_on_the_command_line_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "connector", "run", "--datasets", "mailboxes"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "mailboxes" in proc.stderr


def test_unreachable_snapshot_storage_is_a_clear_error(tmp_path):
    """Blob Storage that cannot be reached: exit 1 with a one-line reason, no traceback."""
    from simulator import Simulator, TenantSpec

    with Simulator(TenantSpec(seed=3, users=50)) as sim:
        env = {**_env(), **sim.env(), "M365_DATASETS": "organization",
               "SNAPSHOT_CONNECTION_STRING": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
               "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
               "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"}
        proc = subprocess.run([sys.executable, "-m", "connector", "run"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "SNAPSHOT_CONNECTION_STRING" in proc.stderr


# -- the tenant lock, connectivity errors, check --json (issues 11.9, 11.11) -----------------------------------

@pytest.fixture(scope="module")
def cli_sim():
    from simulator import Simulator, TenantSpec

    with Simulator(TenantSpec(seed=3, users=50)) as sim:
        yield sim


def _sim_run(env: dict[str, str], args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "connector", *args], cwd=ROOT, env={**_env(), **env},
                          capture_output=True, text=True, timeout=timeout)


def test_cli_takes_the_tenant_lock(tmp_path):
    """A second run into the same folder while one holds the tenant's lock exits 4 and names the holder;
    the Function's worker takes the same lock."""
    from connector.locks import TenantLock
    from connector.store import LocalStore
    from simulator import Simulator, TenantSpec

    out = tmp_path / "out"
    with Simulator(TenantSpec(seed=3, users=50)) as sim:
        env = {**sim.env(), "M365_DATASETS": "organization"}
        lock = TenantLock(LocalStore(out), sim.tenant_id.lower())
        assert lock.acquire("20260101T000000Z-abcdef", "timer")
        try:
            before = sim.request_count(service="graph")
            proc = _sim_run(env, ["run", "--out", str(out)])
            assert proc.returncode == 4, proc.stdout + proc.stderr
            assert "20260101T000000Z-abcdef" in proc.stderr and "run.lock" in proc.stderr
            assert sim.request_count(service="graph") == before
        finally:
            lock.release()
        proc = _sim_run(env, ["run", "--out", str(out)])
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_concurrent_cli_runs_into_one_folder_are_serialised(tmp_path):
    from simulator import Simulator, TenantSpec

    out = tmp_path / "out"
    with Simulator(TenantSpec(seed=3, users=300)) as sim:
        sim.spec.latency = 0.3  # the first run is still collecting when the second starts
        env = {**_env(), **sim.env(), "M365_DATASETS": "organization,users"}
        procs = [subprocess.Popen([sys.executable, "-m", "connector", "run", "--out", str(out)], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 4], results  # one collected, the other was refused instead of racing it
    manifests = list(out.glob("tenants/*/runs/*/manifest.json"))
    assert len(manifests) == 1
    latest = json.loads(next(out.glob("tenants/*/latest.json")).read_text())
    assert manifests[0].parent.name == latest["runId"]


@pytest.mark.parametrize(("over", "setting", "code"), [
    ({"M365_GRAPH_ENDPOINT": "https://127.0.0.1:9"}, "M365_GRAPH_ENDPOINT", "graph_unreachable"),
    ({"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"}, "SSL_CERT_FILE", "graph_tls"),
    ({"M365_AUTHORITY_HOST": "https://127.0.0.1:9"}, "M365_AUTHORITY_HOST", "authority_unreachable"),
    ({"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}, "REQUESTS_CA_BUNDLE", "authority_tls"),
], ids=["graph-down", "graph-tls", "authority-down", "authority-tls"])
def test_unreachable_graph_and_untrusted_certificates_are_one_line(cli_sim, tmp_path, monkeypatch, capsys, over,
                                                                     setting, code):
    from connector.cli import main
    from tests.conftest import apply_env

    apply_env(monkeypatch, {**cli_sim.env(), "M365_DATASETS": "organization,users", **over})
    assert main(["run", "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr()
    assert out.err.startswith(f"error: {setting}: ") and len(out.err.strip().splitlines()) == 1, out.err
    assert "Traceback" not in out.err and "SNAPSHOT_" not in out.err
    if code.startswith("graph"):  # (token requests retry for about 5 s: the text form is tested once)
        assert main(["check"]) == 1
        out = capsys.readouterr()
        assert setting in out.out and "Traceback" not in out.out + out.err
    assert main(["check", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    error = report["token"].get("error") or report["graph"]["error"]
    assert report["ok"] is False and error["code"] == code and setting in json.dumps(error)


def test_unreachable_graph_in_a_real_process_with_and_without_v(cli_sim, tmp_path):
    env = {**cli_sim.env(), "M365_DATASETS": "organization,users", "M365_GRAPH_ENDPOINT": "https://127.0.0.1:9"}
    run = _sim_run(env, ["run", "--out", str(tmp_path / "out")])
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines() == [
        "error: M365_GRAPH_ENDPOINT: https://127.0.0.1:9 cannot be reached (connection refused). Check the setting "
        "(unset it to use the cloud's default endpoint), DNS, proxy and firewall. (-v shows details)"]
    verbose = _sim_run(env, ["-v", "run", "--out", str(tmp_path / "out")])
    assert "Traceback" in verbose.stderr and "ConnectError" in verbose.stderr


def test_check_json_stays_json_on_failure(tmp_path):
    proc = _sim_run({"M365_TENANT_ID": "not a tenant"}, ["check", "--json"])
    report = json.loads(proc.stdout)
    assert proc.returncode == 2 and report["ok"] is False and report["error"]["code"] == "configuration"
    assert {p["setting"] for p in report["error"]["problems"]} >= {"M365_TENANT_ID", "M365_CLIENT_ID"}
