"""Many tenants from one deployment (issue 23): the simulator serving several tenants, the tenant registry, the
fan-out through the queue, the cross-tenant view, and isolation between tenants."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

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
    ({"tenant": "summary.html"}, "field tenant"),
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


def test_a_tenant_with_an_app_of_its_own_is_collected_with_its_secret_from_key_vault(tmp_path) -> None:
    """A registry entry's `auth` (client id and Key Vault secret name): that tenant's token comes from its own app
    registration with the secret read from the deployment's Key Vault, not from the multi-tenant app (which that
    tenant has never consented); a secret name Key Vault does not hold is named with the entry."""
    from connector.cli.main import main

    specs = [TenantSpec(seed=81, users=30, domains=("home81.onmicrosoft.com",)),
             TenantSpec(seed=82, users=25, domains=("own82.onmicrosoft.com",))]
    mp = pytest.MonkeyPatch()
    try:
        with Fleet(specs, own_apps={1}) as fleet:
            own = fleet.tenants[1]
            assert own.client_id != fleet.client_id
            fleet.set_secret("own82-app-secret", own.client_secret)
            env = {**fleet.env(secret_in="keyvault"), "M365_DATASETS": "organization,users",
                   "SNAPSHOT_DIR": str(tmp_path / "s")}
            for name in [n for n in os.environ if n.startswith(("M365_", "SNAPSHOT_", "KEY_VAULT", "AZURE_"))]:
                mp.delenv(name)
            for name, value in env.items():
                mp.setenv(name, value)
            assert main(["tenants", "add", "own82.onmicrosoft.com", "--client-id", own.client_id,
                         "--secret-name", "own82-app-secret", "-q"]) == 0
            with contextlib.redirect_stdout(io.StringIO()) as said:
                code = main(["run", "--tenant", "own82.onmicrosoft.com", "--json"])
            result = orjson.loads(said.getvalue())
            assert code == 0 and result["status"] == "succeeded", result.get("warnings")
            assert result["tenantId"] == own.tenant_id
            assert result["datasets"]["users"]["records"] == len(list(own.tenant.users()))
            logins = [r for r in own.requests if r.service == "login" and r.path.endswith("/token")]
            # Its Entra knows only its own app (the multi-tenant app was never consented there): tokens were issued.
            assert logins and all(r.status == 200 for r in logins)
            # The same entry naming a secret Key Vault does not hold: the run fails, naming the secret to set.
            assert main(["tenants", "remove", "own82.onmicrosoft.com", "-q"]) == 0
            assert main(["tenants", "add", "own82.onmicrosoft.com", "--client-id", own.client_id,
                         "--secret-name", "no-such-secret", "-q"]) == 0
            with contextlib.redirect_stdout(io.StringIO()) as said:
                code = main(["run", "--tenant", "own82.onmicrosoft.com", "--json"])
            failed = orjson.loads(said.getvalue())
            assert code != 0 and failed["status"] == "failed"
            assert "no-such-secret" in orjson.dumps(failed).decode()
    finally:
        mp.undo()


# -- the command line -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Three tenants through the CLI: two registered beside the home tenant, one of them never consented; then
    `run --tenant` of an unregistered tenant, then `run` of them all (a sweep), priced."""
    from connector.cli.main import main

    out = tmp_path_factory.mktemp("swept")
    sheet = out / "prices.csv"
    sheet.write_text("skuPartNumber,monthlyPrice,currency\nSPE_E3,36.00,EUR\nEMS,10.60,EUR\nENTERPRISEPACK,23,USD\n")
    specs = [TenantSpec(seed=61, users=90, domains=("home61.onmicrosoft.com",)),
             TenantSpec(seed=62, users=40, domains=("b62.onmicrosoft.com",)),
             TenantSpec(seed=63, users=20, domains=("c63.onmicrosoft.com",), app_consented=False)]
    mp = pytest.MonkeyPatch()
    codes: dict[str, int] = {}
    try:
        with Fleet(specs) as fleet:
            for name, value in {**fleet.env(), "M365_DATASETS": DATASETS, "SNAPSHOT_DIR": str(out / "s"),
                                "M365_PRICE_SHEET": str(sheet)}.items():
                mp.setenv(name, value)
            with contextlib.redirect_stdout(io.StringIO()) as said:
                codes["add"] = main(["tenants", "add", "b62.onmicrosoft.com", "--datasets", "users,organization,"
                                     "subscribed_skus,user_sign_in_activity"])
            codes["add_said"] = said.getvalue()  # type: ignore[assignment]
            codes["add_c"] = main(["tenants", "add", fleet.tenants[2].tenant_id, "-q"])
            with contextlib.redirect_stderr(io.StringIO()) as refused:
                codes["unregistered"] = main(["run", "--tenant", "nowhere.onmicrosoft.com", "-q"])
            codes["refused_said"] = refused.getvalue()  # type: ignore[assignment]
            codes["requests_before_sweep"] = fleet.request_count(None, service=None)
            with contextlib.redirect_stdout(io.StringIO()):
                codes["check_b"] = main(["check", "--tenant", "b62.onmicrosoft.com", "-q"])
                codes["check_c"] = main(["check", "--tenant", fleet.tenants[2].tenant_id, "-q"])
            with contextlib.redirect_stdout(io.StringIO()) as said:
                codes["sweep"] = main(["run", "--json"])
            result = orjson.loads(said.getvalue())
            states = list(fleet.tenants)
    finally:
        mp.undo()
    return out / "s", codes, result, states


def test_cli_sweeps_every_registered_tenant_and_refuses_an_unregistered_one(swept) -> None:
    from connector.store.local import LocalStore
    from connector.store.publish import read_manifest
    from tests.helpers import read_dataset

    folder, codes, result, (home, b, c) = swept
    assert codes["add"] == 0 and "/b62.onmicrosoft.com/v2.0/adminconsent?client_id=" in codes["add_said"]
    assert codes["unregistered"] == 2
    assert "--tenant: names a tenant this deployment's registry does not list" in codes["refused_said"]
    assert codes["requests_before_sweep"] == 0  # refused before any token request
    assert (codes["check_b"], codes["check_c"]) == (0, 1)  # consented, and not (no token)
    assert codes["sweep"] == 3  # one tenant failed, the others succeeded
    rows = {r["tenant"]: r for r in result["tenants"]}
    assert {k: r["status"] for k, r in rows.items()} == {
        home.tenant_id: "succeeded", "b62.onmicrosoft.com": "succeeded", c.tenant_id: "failed"}
    assert f"/{c.tenant_id}/v2.0/adminconsent?" in rows[c.tenant_id]["consentUrl"]
    store = LocalStore(str(folder))
    for state, key, users in ((home, home.tenant_id, 90), (b, "b62.onmicrosoft.com", 40)):
        manifest = read_manifest(store, state.tenant_id, rows[key]["runId"])
        assert manifest is not None and sorted(manifest["datasets"]) == sorted(DATASETS.split(","))
        assert len(read_dataset(store, manifest, "users")) == users
        assert all(r["id"] == state.tenant_id for r in read_dataset(store, manifest, "organization"))
        assert {r["userPrincipalName"].split("@")[1] for r in read_dataset(store, manifest, "users")} <= {
            d.lower() for d in state.tenant.domains}  # no other tenant's users under this prefix
    assert b.request_count("/v1.0/users") > 0 and c.request_count(None) == 0


def test_the_sweep_writes_the_cross_tenant_summary(swept) -> None:
    import jsonschema

    folder, _codes, result, (home, b, c) = swept
    summary = orjson.loads((folder / "tenants" / "summary.json").read_bytes())
    schema = orjson.loads((Path(__file__).resolve().parent.parent / "docs" / "schema" /
                           "tenants-summary.schema.json").read_bytes())
    jsonschema.Draft202012Validator(schema).validate(summary)
    by = {t["tenant"]: t for t in summary["tenants"]}
    for key, state in ((home.tenant_id, home), ("b62.onmicrosoft.com", b)):
        run_id = by[key]["runId"]
        insights = orjson.loads((folder / "tenants" / state.tenant_id / "runs" / run_id / "insights.json").read_bytes())
        assert by[key]["figuresRunId"] == run_id
        assert (by[key]["seats"], by[key]["wastedSeats"], by[key]["findings"], by[key]["monthlyWaste"]) == (
            insights["totals"]["enabled"], insights["totals"]["wasteSeats"], insights["totals"]["findings"],
            insights["totals"]["monthlyWaste"])
    assert by[c.tenant_id]["status"] == "failed" and by[c.tenant_id]["seats"] is None
    totals = summary["totals"]
    assert (totals["tenants"], totals["succeeded"], totals["failed"]) == (3, 2, 1)
    assert totals["wastedSeats"] == sum(t["wastedSeats"] or 0 for t in summary["tenants"]) > 0
    waste: dict[str, float] = {}
    for t in summary["tenants"]:
        for currency, amount in (t["monthlyWaste"] or {}).items():
            waste[currency] = waste.get(currency, 0) + amount
    assert totals["monthlyWaste"] == pytest.approx(waste) and waste


def test_the_summary_page_shows_each_tenant_picked_in_its_selector(swept) -> None:
    from tests.test_report_browser import CHROMIUM, PLAYWRIGHT, ROOT

    folder = swept[0]
    summary = orjson.loads((folder / "tenants" / "summary.json").read_bytes())
    if not (shutil.which("node") and PLAYWRIGHT.is_dir() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail("the browser test needs node, playwright-core in .tools and Debian's chromium: run scripts/test")
    with tempfile.TemporaryDirectory(prefix="m365-chromium-") as profile:
        proc = subprocess.run(["node", str(ROOT / "tests" / "browser" / "read_summary.mjs"),
                               str(folder / "tenants" / "summary.html"), profile, str(PLAYWRIGHT)],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = orjson.loads(proc.stdout)
    assert page["requests"] == [page["target"]] and page["errors"] == []
    assert page["options"] == ["", *(t["tenant"] for t in summary["tenants"])]

    def shown(value: object) -> str:
        return "n/a" if value is None else f"{value:,}"

    def money(value: dict | None) -> str:
        return "n/a" if not value else " + ".join(f"{a:,.2f} {c}" for c, a in value.items())

    every = page["views"][""]
    assert every["scope"] == "all tenants" and len(every["rows"]) == 3
    assert every["cards"]["wastedSeats"] == shown(summary["totals"]["wastedSeats"])
    assert every["cards"]["monthlyWaste"] == money(summary["totals"]["monthlyWaste"])
    for tenant in summary["tenants"]:
        view = page["views"][tenant["tenant"]]
        assert view["scope"] == tenant["tenant"]
        assert [r["tenant"] for r in view["rows"]] == [tenant["tenant"]]
        assert view["rows"][0]["status"] == tenant["status"]
        for name in ("seats", "wastedSeats", "unusedSeats", "findings"):
            assert view["cards"][name] == shown(tenant[name]), name
        assert view["cards"]["monthlyWaste"] == money(tenant["monthlyWaste"])
        assert (view["error"] or None) == tenant["error"]


# -- one deployment, many tenants: the Function app against Azurite -----------------------------------------------

WORKER = ("import sys\n"
          "from connector.service.worker import process_message\n"
          "process_message(sys.stdin.buffer.read(), 1, lease_seconds=15, renew_seconds=0.2)\n")
SIZES = (600, 150, 30, 20)  # the last one never consented to the app


@pytest.fixture(scope="module")
def fleet():
    specs = [TenantSpec(seed=71 + i, users=n, domains=(f"f{71 + i}.onmicrosoft.com",), app_consented=i < 3)
             for i, n in enumerate(SIZES)]
    with Fleet(specs) as f:
        yield f


@pytest.fixture
def deployment(fleet, azurite, monkeypatch):
    """The Function app's settings (home tenant = the fleet's first), a fresh container holding a registry of the
    four tenants (slots 1-3 for the registered ones), and empty run queues."""
    import uuid

    from connector.service import runs
    from connector.service.appconfig import deployment_registry
    from connector.store.registry import TenantEntry
    from tests.conftest import apply_function_env

    for state in fleet.tenants:
        state.spec.latency = 0.0
    env = {**fleet.env(), "M365_DATASETS": DATASETS, "SNAPSHOT_CONNECTION_STRING": azurite.connection_string,
           "SNAPSHOT_CONTAINER": f"m{uuid.uuid4().hex[:12]}", "AzureWebJobsStorage": azurite.connection_string}
    apply_function_env(monkeypatch, env, azurite.connection_string)
    registry = deployment_registry(env)
    for slot, state in enumerate(fleet.tenants[1:], 1):
        registry.add(TenantEntry(state.tenant.domains[0], slot=slot))
    assert [e.key for e in registry.entries()] == [fleet.tenant_id, *(f"f{72 + i}.onmicrosoft.com" for i in range(3))]
    env["_runs"] = runs  # type: ignore[assignment]
    return env


def _queue(env):
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy

    from connector.service import runs

    return QueueClient.from_connection_string(env["AzureWebJobsStorage"], runs.RUNS_QUEUE,
                                              message_decode_policy=TextBase64DecodePolicy())


def _receive_all(env, count: int) -> list[bytes]:
    bodies: list[bytes] = []
    for _ in range(count):
        msgs = list(_queue(env).receive_messages(max_messages=1, visibility_timeout=120))
        assert msgs, f"{len(bodies)} of {count} messages in the queue"
        bodies.append(msgs[0].content.encode())
    return bodies


def _post(body: dict) -> tuple[int, dict]:
    import azure.functions as func

    import function_app

    resp = function_app.runs_request(func.HttpRequest("POST", "http://localhost/api/runs",
                                                      body=orjson.dumps(body)))
    return resp.status_code, orjson.loads(resp.get_body())


def _tenants() -> dict:
    import azure.functions as func

    import function_app

    resp = function_app.tenants_list(func.HttpRequest("GET", "http://localhost/api/tenants", body=b""))
    assert resp.status_code == 200, resp.get_body()
    return orjson.loads(resp.get_body())


def test_the_timer_queues_one_run_per_tenant_spread_over_the_schedule(fleet, deployment) -> None:
    from connector.service.appconfig import deployment_registry
    from connector.store.status import parse_iso

    runs = deployment["_runs"]
    requested = runs.timer_fired(env=deployment)
    entries = deployment_registry(deployment).entries()
    assert [r.record["tenant"] for r in requested] == [e.key for e in entries] and all(r.created for r in requested)
    starts = []
    for request, entry in zip(requested, entries, strict=True):
        record = request.record
        delay = (parse_iso(record["notBefore"]) - parse_iso(record["requestedAt"])).total_seconds()
        assert delay == entry.delay_seconds() >= 60 * entry.schedule_slot()
        starts.append(delay)
    assert len(set(starts)) == len(starts) and all(delay > 0 for delay in starts)  # not all at the same second
    assert [m for m in _queue(deployment).peek_messages(max_messages=32)] == []  # none delivered before its slot
    view = {t["tenant"]: t for t in _tenants()["tenants"]}
    assert all(view[r.record["tenant"]]["nextRun"] == r.record["notBefore"] for r in requested)
    assert {t["status"] for t in view.values()} == {"queued"}


def test_tenants_of_mixed_sizes_through_one_deployment_and_one_without_consent_fails_alone(
        fleet, deployment, caplog) -> None:
    from connector.service.appconfig import registered_settings, store_for
    from connector.service.sweep import finish_sweep
    from connector.store.contract import read_json
    from tests.helpers import read_dataset

    runs = deployment["_runs"]
    keys = [fleet.tenant_id, *(s.tenant.domains[0] for s in fleet.tenants[1:])]
    for key in keys:
        status, body = _post({"tenant": key})
        assert status == 202, body
    # A run-now request or a queue message naming a tenant that is not registered: refused, logged, not collected.
    before = fleet.request_count(None, service=None)
    assert _post({"tenant": "nowhere.onmicrosoft.com"})[0] == 404
    assert _post({})[1]["error"]["code"] == "tenant_required"
    forged = runs.encode_message("20261207T120000Z-abcdef", "nowhere.onmicrosoft.com", "http", None,
                                 "2026-12-07T12:00:00Z")
    with caplog.at_level("ERROR", logger="m365_connector"):
        assert runs.process_message(forged) == "ignored"
    assert any(getattr(r, "event", None) == "tenant_refused" for r in caplog.records)
    assert fleet.request_count(None, service=None) == before
    # One message per tenant, each collected by one delivery of the queue trigger.
    for body in _receive_all(deployment, len(keys)):
        assert runs.process_message(body) == "collected"
    store = store_for(registered_settings(deployment, keys[0]))
    assert not [p for p in store.list("tenants/nowhere.onmicrosoft.com/")]
    for state, key, users in zip(fleet.tenants[:3], keys, SIZES, strict=False):
        record = runs.list_statuses(store, key, 1)[0]
        assert record["status"] == "succeeded", record
        manifest = read_json(store, record["manifest"])
        assert manifest["tenantId"] == state.tenant_id and record["manifest"].startswith(f"tenants/{state.tenant_id}/")
        assert len(read_dataset(store, manifest, "users")) == users
        assert len(read_dataset(store, manifest, "user_sign_in_activity")) == users
        assert all(r["id"] == state.tenant_id for r in read_dataset(store, manifest, "organization"))
        domains = {d.lower() for d in state.tenant.domains}
        assert {r["userPrincipalName"].split("@")[1] for r in read_dataset(store, manifest, "users")} <= domains
        assert read_json(store, f"tenants/{state.tenant_id}/latest.json")["runId"] == record["runId"]
    failed = runs.list_statuses(store, keys[3], 1)[0]
    assert failed["status"] == "failed" and failed["error"]["code"] == "AADSTS700016"
    assert f"/{keys[3]}/v2.0/adminconsent?client_id={fleet.client_id}" in failed["error"]["consentUrl"]
    view = {t["tenant"]: t for t in _tenants()["tenants"]}
    assert [view[k]["consent"] for k in keys] == ["granted", "granted", "granted", "missing"]
    assert [view[k]["status"] for k in keys] == ["succeeded", "succeeded", "succeeded", "failed"]
    summary = finish_sweep(deployment)  # every tenant is done: the sweep's summary
    assert summary is not None and [t["status"] for t in summary["tenants"]] == [view[k]["status"] for k in keys]
    assert read_json(store, "tenants/summary.json") == summary

    # A tenant that revokes its consent fails alone, its consent URL in its status; its published data stays.
    revoked = fleet.tenants[1]
    published = read_json(store, f"tenants/{revoked.tenant_id}/latest.json")
    revoked.spec.app_consented = False
    try:
        for key in (keys[1], keys[2]):
            assert _post({"tenant": key})[0] == 202
        for body in _receive_all(deployment, 2):
            assert runs.process_message(body) == "collected"
    finally:
        revoked.spec.app_consented = True
    again = runs.list_statuses(store, keys[1], 1)[0]
    assert again["status"] == "failed" and f"/{keys[1]}/v2.0/adminconsent?" in again["error"]["consentUrl"]
    assert runs.list_statuses(store, keys[2], 1)[0]["status"] == "succeeded"
    assert read_json(store, f"tenants/{revoked.tenant_id}/latest.json") == published
    assert {t["tenant"]: t["consent"] for t in _tenants()["tenants"]}[keys[1]] == "missing"


def test_a_worker_killed_mid_tenant_is_resumed_and_the_other_tenants_go_on(fleet, deployment) -> None:
    import signal
    import time

    from connector.service.appconfig import registered_settings, store_for
    from connector.store.contract import read_json
    from tests.conftest import ROOT
    from tests.helpers import read_dataset

    runs = deployment["_runs"]
    big, small = fleet.tenants[0], fleet.tenants[2]
    for key in (big.tenant_id, small.tenant.domains[0]):
        assert _post({"tenant": key})[0] == 202
    bodies = _receive_all(deployment, 2)
    store = store_for(registered_settings(deployment, big.tenant_id))
    run_id = orjson.loads(bodies[0])["runId"]
    big.spec.latency = 0.3  # slow enough that the kill lands mid-run
    worker = subprocess.Popen([sys.executable, "-c", WORKER], cwd=ROOT, stdin=subprocess.PIPE,
                              env={k: v for k, v in os.environ.items() if not k.startswith("_")})
    worker.stdin.write(bodies[0])
    worker.stdin.close()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            record = runs.read_status(store, big.tenant_id, run_id) or {}
            states = [d["status"] for d in (record.get("datasets") or {}).values()]
            if record.get("status") == "running" and "succeeded" in states and "running" in states:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the worker never got half-way")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    big.spec.latency = 0.0
    assert runs.process_message(bodies[1]) == "collected"  # another tenant is not held up by the dead worker
    assert runs.list_statuses(store, small.tenant.domains[0], 1)[0]["status"] == "succeeded"
    deadline = time.monotonic() + 40
    while store.lease_holder(f"tenants/{big.tenant_id}/run.lock") is not None:
        assert time.monotonic() < deadline, "the dead worker's lease never expired"
        time.sleep(0.2)
    assert runs.process_message(bodies[0], 2, lease_seconds=15) == "collected"
    record = runs.read_status(store, big.tenant_id, run_id)
    assert record["status"] == "succeeded" and record["attempts"] == 2, record
    manifest = read_json(store, record["manifest"])
    assert len(read_dataset(store, manifest, "users")) == SIZES[0]
    assert len(read_dataset(store, manifest, "user_sign_in_activity")) == SIZES[0]
