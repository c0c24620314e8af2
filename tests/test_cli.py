"""The command line as a user runs it: a separate process, real exit codes and output."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

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
