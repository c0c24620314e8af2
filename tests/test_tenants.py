"""Many tenants from one deployment (issue 23): the simulator serving several tenants, the tenant registry, the
fan-out through the queue, the cross-tenant view, and isolation between tenants."""

from __future__ import annotations

import ssl

import httpx
import orjson
import pytest

from simulator import TenantSpec
from simulator.fleet import Fleet

DATASETS = "organization,subscribed_skus,users,user_sign_in_activity"


def _tls(fleet: Fleet) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=fleet.ca_file)


def _token(fleet: Fleet, tenant: str) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_id": fleet.client_id, "client_secret": fleet.client_secret,
            "scope": "https://graph.microsoft.com/.default"}
    return httpx.post(f"{fleet.authority_host}/{tenant}/oauth2/v2.0/token", data=form, verify=_tls(fleet))


def test_fleet_serves_the_tenant_of_the_token_and_refuses_an_unconsented_one() -> None:
    specs = [TenantSpec(seed=31, users=120, domains=("home.onmicrosoft.com",)),
             TenantSpec(seed=32, users=70, domains=("north.onmicrosoft.com",)),
             TenantSpec(seed=33, users=10, domains=("south.onmicrosoft.com",), app_consented=False)]
    with Fleet(specs) as fleet:
        home, north, south = fleet.tenants
        for state, users in ((home, 120), (north, 70)):
            answer = _token(fleet, state.tenant.domains[0])
            assert answer.status_code == 200, answer.text
            token = answer.json()["access_token"]
            page = httpx.get(f"{fleet.graph_endpoint}/v1.0/organization", verify=_tls(fleet),
                             headers={"Authorization": f"Bearer {token}"})
            assert page.json()["value"][0]["id"] == state.tenant_id
            count = httpx.get(f"{fleet.graph_endpoint}/v1.0/users/$count", verify=_tls(fleet),
                              headers={"Authorization": f"Bearer {token}", "ConsistencyLevel": "eventual"})
            assert int(count.text) == users
            assert state.request_count("/v1.0/organization") == 1  # recorded under its own tenant
        refused = _token(fleet, south.tenant_id)
        assert refused.status_code == 400
        assert refused.json()["error"] == "unauthorized_client"
        assert refused.json()["error_codes"] == [700016]
        assert north.client_id == home.client_id  # one multi-tenant app


def test_fleet_counts_sign_in_activity_per_app_across_tenants() -> None:
    """GET signInActivity: 10 a minute per app and tenant, and 10 a minute per app for all tenants together."""
    specs = [TenantSpec(seed=41 + i, users=30, domains=(f"t{i}.onmicrosoft.com",), quota_scale=1.0)
             for i in range(3)]
    with Fleet(specs) as fleet:
        statuses = []
        for i in range(12):
            state = fleet.tenants[i % 3]
            token = _token(fleet, state.tenant_id).json()["access_token"]
            answer = httpx.get(f"{fleet.graph_endpoint}/v1.0/users", verify=_tls(fleet),
                               params={"$select": "id,signInActivity", "$top": "500"},
                               headers={"Authorization": f"Bearer {token}"})
            statuses.append(answer.status_code)
        # Four requests per tenant stay within each tenant's 10, but the app's 10 for all tenants are spent.
        assert statuses[:10] == [200] * 10
        assert statuses[10:] == [429, 429]
        assert fleet.app_limits is not None and fleet.app_limits.throttled["sign_in_activity"] == 2


@pytest.mark.parametrize("known", [True, False])
def test_fleet_unknown_tenant_is_not_found(known: bool) -> None:
    with Fleet([TenantSpec(seed=51, users=5)]) as fleet:
        answer = _token(fleet, fleet.tenant_id if known else "nowhere.onmicrosoft.com")
        assert answer.status_code == (200 if known else 400)
        if not known:
            assert answer.json()["error_codes"] == [90002]


# -- the registry ---------------------------------------------------------------------------------------------


def _registry(tmp_path, env: dict[str, str] | None = None):
    from connector.store.local import LocalStore
    from connector.store.registry import Registry

    return Registry(LocalStore(str(tmp_path)), env or {})


def _write_registry(tmp_path, tenants: object) -> None:
    (tmp_path / "registry").mkdir(exist_ok=True)
    (tmp_path / "registry" / "tenants.json").write_bytes(orjson.dumps({"version": 1, "tenants": tenants}))


def test_without_a_registry_the_single_tenant_settings_are_a_registry_of_one(tmp_path) -> None:
    registry = _registry(tmp_path, {"M365_TENANT_ID": "Contoso.onmicrosoft.com"})
    assert not registry.stored
    assert [e.key for e in registry.entries()] == ["contoso.onmicrosoft.com"]
    assert _registry(tmp_path).entries() == []


def test_add_keeps_the_home_tenant_and_remove_takes_one_out(tmp_path) -> None:
    from connector.store.registry import TenantEntry

    home = "11111111-1111-1111-1111-111111111111"
    registry = _registry(tmp_path, {"M365_TENANT_ID": home})
    assert registry.add(TenantEntry("fabrikam.onmicrosoft.com", datasets=("users",), slot=7))
    assert not registry.add(TenantEntry("fabrikam.onmicrosoft.com", datasets=("users",), slot=7))  # unchanged
    assert [e.key for e in registry.entries()] == [home, "fabrikam.onmicrosoft.com"]
    assert registry.find("FABRIKAM.onmicrosoft.com")[1].schedule_slot() == 7
    assert registry.remove(home) and not registry.remove(home)
    assert [e.key for e in registry.entries()] == ["fabrikam.onmicrosoft.com"]


@pytest.mark.parametrize(("entry", "field"), [
    ({"tenant": "not a tenant"}, "field tenant"),
    ({"tenant": "a.onmicrosoft.com", "cloud": "mars"}, "field cloud"),
    ({"tenant": "a.onmicrosoft.com", "slot": 99}, "field slot"),
    ({"tenant": "a.onmicrosoft.com", "colour": "red"}, "field colour"),
    ({"tenant": "a.onmicrosoft.com", "datasets": 5}, "field datasets"),
    ({"tenant": "a.onmicrosoft.com", "auth": {"clientId": "x", "secretName": "has spaces"}}, "field auth.secretName"),
    ({"tenant": "a.onmicrosoft.com", "auth": {"clientId": "x"}}, "field auth"),
])
def test_a_malformed_entry_names_the_entry_and_the_field(tmp_path, entry: dict, field: str) -> None:
    from connector.store.registry import RegistryError

    _write_registry(tmp_path, [{"tenant": "ok.onmicrosoft.com"}, entry])
    with pytest.raises(RegistryError) as caught:
        _registry(tmp_path).entries()
    assert "entry 2" in str(caught.value) and field in str(caught.value)


def test_an_entry_the_settings_refuse_names_the_entry_and_the_field(tmp_path) -> None:
    from connector.config import ConfigError
    from connector.store.registry import entry_settings, parse_entry

    entry = parse_entry({"tenant": "a.onmicrosoft.com", "datasets": ["users", "no_such_dataset"]}, 3)
    env = {"M365_CLIENT_ID": "22222222-2222-2222-2222-222222222222", "M365_CLIENT_SECRET": "x"}
    with pytest.raises(ConfigError) as caught:
        entry_settings(entry, env, 3)
    assert [p.setting for p in caught.value.problems] == [
        "tenant registry (registry/tenants.json) entry 3 (a.onmicrosoft.com): field datasets"]
    assert "2nd entry is not a dataset name" in caught.value.problems[0].message
    settings = entry_settings(parse_entry({"tenant": "a.onmicrosoft.com", "datasets": ["users"],
                                           "auth": {"clientId": "33333333-3333-3333-3333-333333333333",
                                                    "certificateName": "a-cert"}}, 1),
                              {**env, "KEY_VAULT_URL": "https://kv.vault.azure.net"})
    assert (settings.tenant_id, settings.datasets, settings.auth_mode, settings.certificate_name, settings.client_id) \
        == ("a.onmicrosoft.com", ("users",), "certificate", "a-cert", "33333333-3333-3333-3333-333333333333")


def test_consent_url_is_the_v2_adminconsent_endpoint() -> None:
    from urllib.parse import parse_qs, urlsplit

    from connector.config import load_settings
    from connector.store.registry import consent_url

    settings = load_settings({"M365_TENANT_ID": "Fabrikam.onmicrosoft.com", "M365_CLOUD": "usgov",
                              "M365_CLIENT_ID": "44444444-4444-4444-4444-444444444444", "M365_CLIENT_SECRET": "x"})
    url = consent_url(settings, {"M365_CONSENT_REDIRECT_URI": "https://example.com/done"})
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("login.microsoftonline.us", "/Fabrikam.onmicrosoft.com/v2.0/adminconsent")
    assert parse_qs(parts.query) == {"client_id": ["44444444-4444-4444-4444-444444444444"],
                                     "scope": ["https://graph.microsoft.us/.default"],
                                     "redirect_uri": ["https://example.com/done"],
                                     "state": ["fabrikam.onmicrosoft.com"]}


# -- the command line -----------------------------------------------------------------------------------------


def test_cli_sweeps_every_registered_tenant_and_refuses_an_unregistered_one(tmp_path, monkeypatch, capsys) -> None:
    from connector.cli.main import main
    from tests.helpers import read_dataset

    specs = [TenantSpec(seed=61, users=90, domains=("home61.onmicrosoft.com",)),
             TenantSpec(seed=62, users=40, domains=("b62.onmicrosoft.com",)),
             TenantSpec(seed=63, users=20, domains=("c63.onmicrosoft.com",), app_consented=False)]
    with Fleet(specs) as fleet:
        home, b, c = fleet.tenants
        for name, value in {**fleet.env(), "M365_DATASETS": DATASETS, "SNAPSHOT_DIR": str(tmp_path)}.items():
            monkeypatch.setenv(name, value)
        assert main(["tenants", "add", "b62.onmicrosoft.com", "--datasets", "users,organization"]) == 0
        assert "/b62.onmicrosoft.com/v2.0/adminconsent?client_id=" in capsys.readouterr().out
        assert main(["tenants", "add", c.tenant_id]) == 0
        assert main(["run", "--tenant", "nowhere.onmicrosoft.com", "-q"]) == 2
        assert "--tenant: names a tenant this deployment's registry does not list" in capsys.readouterr().err
        assert fleet.request_count(None, service=None) == 0  # refused before any token request
        assert main(["run", "--json"]) == 3  # one tenant failed, the others succeeded
        result = orjson.loads(capsys.readouterr().out)
        rows = {r["tenant"]: r for r in result["tenants"]}
        assert {k: r["status"] for k, r in rows.items()} == {
            home.tenant_id: "succeeded", "b62.onmicrosoft.com": "succeeded", c.tenant_id: "failed"}
        assert f"/{c.tenant_id}/v2.0/adminconsent?" in rows[c.tenant_id]["consentUrl"]
        from connector.store.local import LocalStore
        from connector.store.publish import read_manifest

        store = LocalStore(str(tmp_path))
        for state, users, wanted in ((home, 90, DATASETS.split(",")), (b, 40, ["organization", "users"])):
            run_id = rows[state.tenant_id if state is home else "b62.onmicrosoft.com"]["runId"]
            manifest = read_manifest(store, state.tenant_id, run_id)
            assert manifest is not None and sorted(manifest["datasets"]) == sorted(wanted)
            assert len(read_dataset(store, manifest, "users")) == users
            assert all(r["id"] == state.tenant_id for r in read_dataset(store, manifest, "organization"))
        assert b.request_count("/v1.0/users") > 0 and c.request_count(None) == 0
