"""Sign-in modes: client secret (environment or Key Vault), certificate in Key Vault, federated
credential from the managed identity; expiring credentials warn, wrong ones name the fix."""

from __future__ import annotations

import pytest

from connector.cli.main import main
from simulator import Simulator, TenantSpec
from tests.conftest import apply_env
from tests.helpers import run

CORE = "organization,users"


@pytest.fixture(scope="module")
def sim():
    with Simulator(TenantSpec(seed=5, users=300)) as s:
        yield s


@pytest.fixture(autouse=True)
def reset(sim):
    sim.spec.secret_expires_in_days = None
    sim.spec.certificate_registered = True
    sim.spec.secret_expired = False
    yield


@pytest.mark.parametrize("mode", ["keyvault", "certificate", "federated"])
def test_each_mode_collects(sim, monkeypatch, tmp_path, mode):
    env = sim.env(secret_in=mode)
    apply_env(monkeypatch, env)
    before = sim.identity_tokens_issued
    manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS=CORE)
    assert manifest["status"] == "succeeded", manifest["warnings"]
    assert manifest["datasets"]["users"]["records"] == 300
    assert sim.identity_tokens_issued > before  # the managed identity was used (Key Vault or assertion)
    assert not any(w["code"] == "secret_expiring" for w in manifest["warnings"])


def test_federated_mode_needs_no_secret_or_vault(sim):
    env = sim.env(secret_in="federated")
    assert not {"M365_CLIENT_SECRET", "KEY_VAULT_URL", "M365_CLIENT_SECRET_NAME"} & set(env)


@pytest.mark.parametrize("mode", ["keyvault", "certificate"])
def test_expiring_credential_warns_in_manifest_report_and_log(sim, monkeypatch, tmp_path, capsys, caplog, mode):
    sim.spec.secret_expires_in_days = 12
    env = sim.env(secret_in=mode)
    apply_env(monkeypatch, env)
    manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS=CORE)
    assert manifest["status"] == "succeeded"
    warning = next(w for w in manifest["warnings"] if w["code"] == "secret_expiring")
    what = "certificate" if mode == "certificate" else "secret"
    assert f"client {what} in Key Vault expires on" in warning["message"] and "12 days left" in warning["message"]
    assert "expires on" in caplog.text
    assert main(["check"]) == 0
    assert "expires on" in capsys.readouterr().out


def test_unregistered_certificate_names_the_fix(sim, monkeypatch, tmp_path):
    sim.spec.certificate_registered = False
    env = sim.env(secret_in="certificate")
    apply_env(monkeypatch, env)
    manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS=CORE)
    assert manifest["status"] == "failed"
    assert manifest["error"]["code"] == "AADSTS700027"
    assert "Upload the certificate" in manifest["error"]["remedy"]


def test_wrong_certificate_name_names_the_setting(sim, monkeypatch, tmp_path):
    env = {**sim.env(secret_in="certificate"), "M365_CLIENT_CERTIFICATE_NAME": "no-such-cert"}
    apply_env(monkeypatch, env)
    manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS=CORE)
    assert manifest["status"] == "failed"
    assert "M365_CLIENT_CERTIFICATE_NAME" in manifest["error"]["remedy"]


@pytest.mark.parametrize("mutation,code,words", [
    ({"M365_CLIENT_SECRET": "wrong-secret-value-0123456789abcdef"}, "AADSTS7000215", "Value (not its Secret ID)"),
    ({"M365_TENANT_ID": "nosuchtenant.onmicrosoft.com"}, "AADSTS90002", "M365_TENANT_ID"),
    ({"M365_CLIENT_ID": "00000000-1111-2222-3333-444444444444"}, "AADSTS700016", "M365_CLIENT_ID"),
])
def test_token_errors_map_to_remedies(sim, monkeypatch, capsys, mutation, code, words):
    env = {**sim.env(), **mutation}
    apply_env(monkeypatch, env)
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert code in out and words in out
    assert "wrong-secret-value" not in out


def test_expired_secret_fails_with_exact_remedy(sim, monkeypatch, capsys):
    sim.spec.secret_expired = True
    apply_env(monkeypatch, sim.env())
    assert main(["check", "--json"]) == 1
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["token"]["error"]["code"] == "AADSTS7000222"
    assert "new client secret" in report["token"]["error"]["remedy"]
