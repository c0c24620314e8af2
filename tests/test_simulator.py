"""The simulator against real clients: azure-identity, azure-keyvault-secrets, msgraph-sdk and httpx."""

from __future__ import annotations

import base64
import collections
import gzip
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from simulator import Simulator, TenantSpec
from simulator.user_objects import DEFAULT_USER_PROPERTIES

ROLES = frozenset({"User.Read.All", "Organization.Read.All", "AuditLog.Read.All"})
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
VAULT_SCOPE = "https://vault.azure.net/.default"


@pytest.fixture(scope="module")
def sim():
    # Raw requests check shapes and rules here; the quotas have their own tests (tests/test_quotas.py).
    with Simulator(TenantSpec(seed=3, users=5000, quotas=False)) as s:
        yield s


@pytest.fixture(autouse=True)
def reset(request):
    """Knobs back to defaults before each test that uses the shared simulator."""
    if "sim" in request.fixturenames:
        s = request.getfixturevalue("sim")
        s.spec.roles, s.spec.premium, s.spec.latency = ROLES, True, 0.0
        s.spec.throttle_rate = s.spec.transient_rate = 0.0
        s.spec.retry_after, s.spec.secret_expired, s.spec.foreign_next_link = 1, False, False
        s.spec.token_lifetime, s.spec.secret_expires_in_days, s.spec.rate_limit_ru_per_10s = 3599, None, None


@pytest.fixture
def env(sim, monkeypatch):
    """Process environment pointing clients at the simulator (CA bundle included)."""
    for key in list(os.environ):
        if key.startswith(("AZURE_", "IDENTITY_", "MSI_", "M365_", "KEY_VAULT")):
            monkeypatch.delenv(key, raising=False)
    values = sim.env(secret_in="keyvault")
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def http(sim):
    with httpx.Client(verify=ssl.create_default_context(cafile=sim.ca_file), timeout=30) as client:
        yield client


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def token_request(sim, http, **overrides):
    form = {
        "grant_type": "client_credentials",
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        "scope": GRAPH_SCOPE,
        "client_info": "1",
    }
    tenant = overrides.pop("tenant", sim.tenant_id)
    form.update(overrides)
    form = {k: v for k, v in form.items() if v is not None}
    return http.post(f"{sim.authority_host}/{tenant}/oauth2/v2.0/token", data=form)


def graph(sim, http, path="/v1.0/users", token=None, headers=None, **params):
    token = token if token is not None else token_request(sim, http).json()["access_token"]
    hdrs = {"Authorization": f"Bearer {token}"} if token else {}
    hdrs.update(headers or {})
    return http.get(f"{sim.graph_endpoint}{path}", params=params or None, headers=hdrs)


def graph_error(response: httpx.Response) -> dict:
    error = response.json()["error"]
    assert set(error) == {"code", "message", "innerError"}
    inner = error["innerError"]
    assert set(inner) == {"date", "request-id", "client-request-id"}
    assert inner["request-id"] == response.headers["request-id"]
    assert len(inner["date"]) == 19 and "T" in inner["date"]
    return error


# --------------------------------------------------------------------------- Entra


def test_client_secret_credential_gets_token_through_msal(sim, env):
    from azure.identity import ClientSecretCredential

    before = sim.tokens_issued
    cred = ClientSecretCredential(
        sim.tenant_id, sim.client_id, sim.client_secret, authority=sim.authority_host, disable_instance_discovery=True
    )
    token = cred.get_token(GRAPH_SCOPE)
    claims = claims_of(token.token)
    assert claims["aud"] == "https://graph.microsoft.com" and claims["tid"] == sim.tenant_id
    assert claims["iss"] == f"https://sts.windows.net/{sim.tenant_id}/" and claims["idtyp"] == "app"
    assert claims["appid"] == sim.client_id and claims["roles"] == sorted(ROLES)
    assert claims["exp"] - claims["iat"] == 3599 and token.expires_on >= time.time() + 3000
    assert json.loads(base64.urlsafe_b64decode(token.token.split(".")[0] + "==")) == {
        "typ": "JWT",
        "alg": "RS256",
        "kid": "sim",
    }
    assert claims_of(cred.get_token(VAULT_SCOPE).token)["aud"] == "https://vault.azure.net"
    assert sim.tokens_issued == before + 2
    # MSAL fetched the OIDC document for the tenant first.
    paths = [r.path for r in sim.requests if r.service == "login"]
    assert f"/{sim.tenant_id}/v2.0/.well-known/openid-configuration" in paths


def test_wrong_secret_surfaces_aadsts_code_in_azure_identity(sim, env):
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ClientSecretCredential

    cred = ClientSecretCredential(
        sim.tenant_id, sim.client_id, "not-the-secret", authority=sim.authority_host, disable_instance_discovery=True
    )
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        cred.get_token(GRAPH_SCOPE)


@pytest.mark.parametrize(
    ("overrides", "expired", "status", "error", "code"),
    [
        ({"tenant": "nope.onmicrosoft.com"}, False, 400, "invalid_tenant", 90002),
        ({"client_id": "11111111-2222-3333-4444-555555555555"}, False, 400, "unauthorized_client", 700016),
        ({"client_secret": "wrong"}, False, 401, "invalid_client", 7000215),
        ({}, True, 401, "invalid_client", 7000222),
        ({"client_secret": None}, False, 400, "invalid_request", 7000216),
        ({"scope": "https://foo.microsoft.com/.default"}, False, 400, "invalid_scope", 70011),
        ({"scope": "User.Read"}, False, 400, "invalid_scope", 70011),
    ],
)
def test_token_endpoint_errors(sim, http, overrides, expired, status, error, code):
    sim.spec.secret_expired = expired
    r = token_request(sim, http, **overrides)
    assert r.status_code == status
    body = r.json()
    assert set(body) == {
        "error",
        "error_description",
        "error_codes",
        "timestamp",
        "trace_id",
        "correlation_id",
        "error_uri",
    }
    assert body["error"] == error and body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert f"Trace ID: {body['trace_id']}" in body["error_description"]
    assert body["error_uri"].endswith(f"/error?code={code}")


def test_token_success_shape_domain_tenant_and_no_roles(sim, http):
    r = token_request(sim, http, tenant="Contoso.com")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3599
    sim.spec.roles = frozenset()
    claims = claims_of(token_request(sim, http).json()["access_token"])
    assert "roles" not in claims
    # A vault token never carries Graph roles.
    sim.spec.roles = ROLES
    assert "roles" not in claims_of(token_request(sim, http, scope=VAULT_SCOPE).json()["access_token"])


def test_oidc_document_and_instance_discovery(sim, http):
    for tenant in (sim.tenant_id, "contoso.com", "organizations"):
        doc = http.get(f"{sim.authority_host}/{tenant}/v2.0/.well-known/openid-configuration").json()
        assert doc["token_endpoint"] == f"{sim.authority_host}/{sim.tenant_id}/oauth2/v2.0/token"
        assert doc["authorization_endpoint"].endswith("/oauth2/v2.0/authorize") and "issuer" in doc
    r = http.get(f"{sim.authority_host}/unknown.example/v2.0/.well-known/openid-configuration")
    assert r.status_code == 400 and r.json()["error_codes"] == [90002]
    r = http.get(
        f"{sim.authority_host}/common/discovery/instance",
        params={"api-version": "1.1", "authorization_endpoint": f"{sim.authority_host}/{sim.tenant_id}/oauth2/v2.0/"},
    )
    assert r.json()["tenant_discovery_endpoint"].endswith(f"/{sim.tenant_id}/v2.0/.well-known/openid-configuration")


# --------------------------------------------------------------------------- managed identity + Key Vault


def test_managed_identity_and_key_vault_secret(sim, env):
    from azure.core.exceptions import ResourceNotFoundError
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    assert not [k for k in os.environ if k.startswith("AZURE_")]
    cred = DefaultAzureCredential()
    token = cred.get_token(VAULT_SCOPE)
    assert claims_of(token.token)["aud"] == "https://vault.azure.net"
    assert claims_of(token.token)["appid"] == sim.tenant.managed_identity_client_id

    client = SecretClient(sim.key_vault_url, cred, verify_challenge_resource=False)
    secret = client.get_secret(sim.secret_name)
    assert secret.value == sim.client_secret and secret.properties.expires_on is None
    assert secret.id.startswith(f"{sim.key_vault_url}secrets/{sim.secret_name}/")
    assert client.get_secret(sim.secret_name, secret.properties.version).value == sim.client_secret

    sim.spec.secret_expires_in_days = 30
    expiry = client.get_secret(sim.secret_name).properties.expires_on
    assert abs(expiry.timestamp() - (sim.started_at + 30 * 86400)) < 2

    with pytest.raises(ResourceNotFoundError) as info:
        client.get_secret("no-such-secret")
    assert info.value.error.code == "SecretNotFound"
    assert "A secret with (name/id) no-such-secret was not found in this key vault." in info.value.error.message
    # Without a token the vault answers with the Bearer challenge.
    kv = [r for r in sim.requests if r.service == "keyvault"]
    assert kv[0].status == 401 and "authorization" not in kv[0].headers


def test_key_vault_challenge_and_managed_identity_errors(sim, http):
    r = http.get(f"{sim.key_vault_url}secrets/{sim.secret_name}/", params={"api-version": "7.5"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == (
        f'Bearer authorization="{sim.authority_host}/{sim.tenant_id}", resource="https://vault.azure.net"'
    )
    graph_token = token_request(sim, http).json()["access_token"]
    r = http.get(
        f"{sim.key_vault_url}secrets/{sim.secret_name}",
        params={"api-version": "7.5"},
        headers={"Authorization": f"Bearer {graph_token}"},
    )
    assert r.status_code == 401 and "AKV10022" in r.json()["error"]["message"]

    mi = httpx.get(sim.identity_endpoint, params={"api-version": "2019-08-01", "resource": "https://vault.azure.net"})
    assert mi.status_code == 400
    mi = httpx.get(
        sim.identity_endpoint,
        params={"api-version": "2019-08-01", "resource": "https://vault.azure.net"},
        headers={"X-IDENTITY-HEADER": "wrong"},
    )
    assert mi.status_code == 401
    mi = httpx.get(
        sim.identity_endpoint,
        params={"api-version": "2019-08-01", "resource": "api://AzureADTokenExchange"},
        headers={"X-IDENTITY-HEADER": sim.identity_header},
    )
    body = mi.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert isinstance(body["expires_on"], str) and int(body["expires_on"]) > time.time()
    assert claims_of(body["access_token"])["aud"] == "api://AzureADTokenExchange"


# --------------------------------------------------------------------------- Graph: auth, permissions


def test_graph_authentication_failures(sim, http):
    r = graph(sim, http, token="")
    assert r.status_code == 401 and graph_error(r)["code"] == "InvalidAuthenticationToken"
    assert graph_error(r)["message"] == "Access token is empty."
    good = token_request(sim, http).json()["access_token"]
    head, payload, sig = good.split(".")
    forged = (
        base64.urlsafe_b64encode(orjson.dumps({**claims_of(good), "roles": ["Directory.ReadWrite.All"]}))
        .decode()
        .rstrip("=")
    )
    for token in (
        f"{head}.{forged}.{sig}",
        "garbage",
        token_request(sim, http, scope=VAULT_SCOPE).json()["access_token"],
    ):
        r = graph(sim, http, token=token)
        assert r.status_code == 401 and graph_error(r)["code"] == "InvalidAuthenticationToken"
    sim.spec.token_lifetime = 0
    r = graph(sim, http, token=token_request(sim, http).json()["access_token"])
    assert r.status_code == 401 and "expired" in graph_error(r)["message"]


@pytest.mark.parametrize(
    ("roles", "premium", "path", "params", "code"),
    [
        ({"Organization.Read.All"}, True, "/v1.0/users", {}, "Authorization_RequestDenied"),
        ({"User.Read.All"}, True, "/v1.0/organization", {}, "Authorization_RequestDenied"),
        ({"User.Read.All"}, True, "/v1.0/subscribedSkus", {}, "Authorization_RequestDenied"),
        (
            {"User.Read.All"},
            True,
            "/v1.0/users",
            {"$select": "id,signInActivity"},
            "Authentication_MSGraphPermissionMissing",
        ),
        (
            ROLES,
            False,
            "/v1.0/users",
            {"$select": "id,signInActivity"},
            "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
        ),
    ],
)
def test_graph_permission_and_licence_errors(sim, http, roles, premium, path, params, code):
    sim.spec.roles, sim.spec.premium = frozenset(roles), premium
    r = graph(sim, http, path, **params)
    assert r.status_code == 403
    error = graph_error(r)
    assert error["code"] == code
    expected = {
        "Authorization_RequestDenied": "Insufficient privileges to complete the operation.",
        "Authentication_MSGraphPermissionMissing": "Calling principal does not have required MSGraph permissions "
        "AuditLog.Read.All",
        "Authentication_RequestFromNonPremiumTenantOrB2CTenant": "Neither tenant is B2C or tenant doesn't have "
        "premium license",
    }
    assert error["message"] == expected[code]
    sim.spec.roles = frozenset({"Directory.Read.All"})
    assert graph(sim, http, path).status_code == 200


# --------------------------------------------------------------------------- Graph: users


def fetch_all(sim, http, params, headers=None):
    token = token_request(sim, http).json()["access_token"]
    pages = []
    r = graph(sim, http, token=token, headers=headers, **params)
    while True:
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body)
        link = body.get("@odata.nextLink")
        if not link:
            return pages
        r = http.get(link, headers={"Authorization": f"Bearer {token}", **(headers or {})})


def test_users_paging_returns_every_user_once(sim, http):
    select = "id,userPrincipalName,displayName,accountEnabled,userType,assignedLicenses,licenseAssignmentStates,mail"
    pages = fetch_all(sim, http, {"$top": "999", "$select": select})
    assert [len(p["value"]) for p in pages] == [999] * 5 + [5]
    assert pages[0]["@odata.context"] == f"https://graph.microsoft.com/v1.0/$metadata#users({select})"
    link = urlsplit(pages[0]["@odata.nextLink"])
    assert f"{link.scheme}://{link.netloc}" == sim.graph_endpoint
    query = parse_qs(link.query)
    assert query["$top"] == ["999"] and query["$select"] == [select]
    assert not query["$skiptoken"][0].isdigit() and len(query["$skiptoken"][0]) > 20
    users = [u for p in pages for u in p["value"]]
    assert collections.Counter(u["id"] for u in users).most_common(1)[0][1] == 1
    expected = list(sim.tenant.users())
    assert len(expected) == sim.tenant.user_count == 5000
    wanted = select.split(",")
    assert users == [{k: e[k] for k in wanted} for e in expected]


def test_users_data_is_realistic(sim):
    users = list(sim.tenant.users())
    upns = [u["userPrincipalName"] for u in users]
    assert len({u.lower() for u in upns}) == len(upns)
    guests = [u for u in users if u["userType"] == "Guest"]
    assert guests and all("#EXT#@" + sim.tenant.initial_domain in g["userPrincipalName"] and g["mail"] for g in guests)
    assert (
        any(u[0].isdigit() for u in upns) and any("'" in u for u in upns) and any("_" in u.split("#")[0] for u in upns)
    )
    assert any(not u["displayName"].isascii() for u in users)
    assert any(u["mail"] is None for u in users) and any(u["signInActivity"] is None for u in users)
    assert {d for u in upns for d in [u.split("@")[1]]} == set(sim.tenant.domains)
    signed_in = [u["signInActivity"] for u in users if u["signInActivity"]]
    assert all(len(s) == 6 for s in signed_in)
    assert any(st["assignedByGroup"] for u in users for st in u["licenseAssignmentStates"])
    # SKU consumption matches the users' licences.
    held = collections.Counter(lic["skuId"] for u in users for lic in u["assignedLicenses"])
    skus = sim.tenant.subscribed_skus()
    assert 6 <= len(skus) <= 10 and {s["capabilityStatus"] for s in skus} >= {"Enabled", "Suspended", "LockedOut"}
    assert all(s["consumedUnits"] == held.get(s["skuId"], 0) for s in skus)
    assert all(s["id"] == f"{sim.tenant_id}_{s['skuId']}" for s in skus)
    ems = next(s for s in skus if s["skuPartNumber"] == "EMS")
    assert "41781fb2-bc02-4b7c-bd55-b576c07bb09d" in {p["servicePlanId"] for p in ems["servicePlans"]}
    # Deterministic per seed.
    assert Simulator(TenantSpec(seed=3, users=5)).tenant.user(4) == sim.tenant.user(4)
    assert Simulator(TenantSpec(seed=4, users=5)).tenant.user(4)["id"] != sim.tenant.user(4)["id"]


def test_sign_in_activity_pages_are_capped_at_500(sim, http):
    pages = fetch_all(sim, http, {"$top": "999", "$select": "id,signInActivity"})
    assert len(pages) == 10 and all(len(p["value"]) == 500 for p in pages)
    got = {u["id"]: u["signInActivity"] for p in pages for u in p["value"]}
    assert got == {u["id"]: u["signInActivity"] for u in sim.tenant.users()}
    assert len(graph(sim, http, **{"$top": "50", "$select": "signInActivity"}).json()["value"]) == 50


def test_the_older_sign_in_cap_of_120_caps_or_refuses(http):
    with Simulator(TenantSpec(seed=3, users=300, quotas=False, sign_in_page_limit=120)) as older:
        pages = fetch_all(older, http, {"$top": "500", "$select": "id,signInActivity"})
        assert [len(p["value"]) for p in pages] == [120, 120, 60]
        older.spec.sign_in_top_fails = True
        token = token_request(older, http).json()["access_token"]
        r = graph(older, http, token=token, **{"$top": "500", "$select": "id,signInActivity"})
        assert r.status_code == 400 and "Cannot query data for more than 120 users at a time" in r.text
        r = graph(older, http, token=token, **{"$top": "120", "$select": "id,signInActivity"})
        assert r.status_code == 200 and len(r.json()["value"]) == 120


def test_users_query_rules(sim, http):
    r = graph(sim, http)
    assert r.status_code == 200 and len(r.json()["value"]) == 100
    assert r.headers["content-type"] == (
        "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
    )
    assert r.headers["odata-version"] == "4.0" and r.headers["date"]
    assert set(r.json()["value"][0]) == set(DEFAULT_USER_PROPERTIES)
    assert r.json()["@odata.context"] == "https://graph.microsoft.com/v1.0/$metadata#users"
    r = graph(sim, http, headers={"client-request-id": "4a0e4b5b-0000-4000-8000-000000000001"})
    assert r.headers["client-request-id"] == "4a0e4b5b-0000-4000-8000-000000000001"

    r = graph(sim, http, **{"$select": "displayName,department"})
    assert set(r.json()["value"][0]) == {"id", "displayName", "department"}
    for top in ("1000", "0", "abc"):
        r = graph(sim, http, **{"$top": top})
        assert r.status_code == 400 and graph_error(r)["code"] == "Request_UnsupportedQuery"
    assert graph_error(graph(sim, http, **{"$top": "1000"}))["message"] == (
        "Invalid page size specified: '1000'. Must be between 1 and 999 inclusive."
    )
    r = graph(sim, http, **{"$select": "id,shoeSize"})
    assert r.status_code == 400 and graph_error(r) == {
        **graph_error(r),
        "code": "Request_BadRequest",
        "message": "Could not find a property named 'shoeSize' on type 'microsoft.graph.user'.",
    }
    r = graph(sim, http, **{"$select": "id,aboutMe"})
    assert r.status_code == 501 and graph_error(r)["code"] == "NotImplemented"
    assert graph(sim, http, **{"$skip": "10"}).status_code == 400
    assert graph(sim, http, **{"$filter": "displayName eq 'x'"}).status_code == 400
    r = graph(sim, http, **{"$top": "5", "$skiptoken": "RFNwdAAAAAVukkQeobGM_1h2ei69y3icm2Y"})
    assert r.status_code == 400
    # $count needs ConsistencyLevel: eventual.
    assert graph(sim, http, **{"$count": "true"}).status_code == 400
    r = graph(sim, http, headers={"ConsistencyLevel": "eventual"}, **{"$count": "true", "$top": "1"})
    assert r.json()["@odata.count"] == 5000
    assert graph(sim, http, "/v1.0/users/$count").status_code == 400
    r = graph(sim, http, "/v1.0/users/$count", headers={"ConsistencyLevel": "eventual"})
    assert r.text == "5000" and r.headers["content-type"].startswith("text/plain")
    # Single user by id or UPN.
    first = sim.tenant.user(0)
    for key in (first["id"], first["userPrincipalName"]):
        assert graph(sim, http, f"/v1.0/users/{key}", **{"$select": "mail"}).json()["mail"] == first["mail"]
    assert graph(sim, http, "/v1.0/users/00000000-0000-4000-8000-000000000000").status_code == 404


def test_startswith_filters_partition_the_tenant(sim, http):
    users = list(sim.tenant.users())
    firsts = sorted({u["userPrincipalName"][0].lower() for u in users})
    groups = [firsts[i : i + 4] for i in range(0, len(firsts), 4)]
    seen: list[str] = []
    token = token_request(sim, http).json()["access_token"]
    headers = {"ConsistencyLevel": "eventual"}
    for group in groups:
        quoted = [(c.upper() if i % 2 else c).replace("'", "''") for i, c in enumerate(group)]  # mixed case
        flt = " or ".join(f"startswith(userPrincipalName,'{c}')" for c in quoted)
        pages = fetch_all(sim, http, {"$top": "999", "$select": "id,userPrincipalName", "$filter": flt})
        got = [u for p in pages for u in p["value"]]
        assert all(u["userPrincipalName"][0].lower() in group for u in got)
        count = graph(sim, http, "/v1.0/users/$count", token=token, headers=headers, **{"$filter": flt}).text
        assert int(count) == len(got)
        seen += [u["id"] for u in got]
    assert sorted(seen) == sorted(u["id"] for u in users)
    # Quotes are escaped by doubling them.
    apostrophe = next(u["userPrincipalName"] for u in users if "'" in u["userPrincipalName"])
    prefix = apostrophe[: apostrophe.index("'") + 1]
    r = graph(sim, http, **{"$filter": "startswith(userPrincipalName,'{}')".format(prefix.replace("'", "''"))})
    assert r.status_code == 200 and apostrophe in [u["userPrincipalName"] for u in r.json()["value"]]


def test_organization_and_subscribed_skus(sim, http):
    org = graph(sim, http, "/v1.0/organization").json()["value"]
    assert len(org) == 1 and org[0]["id"] == sim.tenant_id and org[0]["tenantType"] == "AAD"
    domains = org[0]["verifiedDomains"]
    assert [d["name"] for d in domains] == list(sim.tenant.domains)
    assert [d["isInitial"] for d in domains] == [True, False, False]
    r = graph(sim, http, "/v1.0/organization", **{"$select": "displayName,verifiedDomains"})
    assert set(r.json()["value"][0]) == {"id", "displayName", "verifiedDomains"}
    skus = graph(sim, http, "/v1.0/subscribedSkus").json()
    assert skus["value"] == sim.tenant.subscribed_skus()
    assert skus["@odata.context"] == "https://graph.microsoft.com/v1.0/$metadata#subscribedSkus"
    assert graph(sim, http, "/v1.0/subscribedSkus", **{"$top": "5"}).status_code == 400
    r = graph(sim, http, "/v1.0/subscribedSkus", **{"$select": "skuPartNumber,consumedUnits"})
    assert set(r.json()["value"][0]) == {"id", "skuPartNumber", "consumedUnits"}


def test_msgraph_sdk_reads_the_simulator(sim, env):
    import asyncio

    from azure.identity.aio import ClientSecretCredential
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient

    async def run():
        cred = ClientSecretCredential(
            sim.tenant_id,
            sim.client_id,
            sim.client_secret,
            authority=sim.authority_host,
            disable_instance_discovery=True,
            # aiohttp builds its default TLS context once per process, possibly before
            # SSL_CERT_FILE pointed at the simulator's CA; name the CA explicitly.
            connection_verify=sim.ca_file,
        )
        auth = AzureIdentityAuthenticationProvider(cred, scopes=[GRAPH_SCOPE], allowed_hosts=["127.0.0.1"])
        adapter = GraphRequestAdapter(auth)
        adapter.base_url = f"{sim.graph_endpoint}/v1.0"
        client = GraphServiceClient(request_adapter=adapter)
        try:
            org = await client.organization.get()
            skus = await client.subscribed_skus.get()
            return org, skus
        finally:
            await cred.close()

    org, skus = asyncio.run(run())
    assert org.value[0].id == sim.tenant_id
    assert {s.sku_part_number for s in skus.value} == {s["skuPartNumber"] for s in sim.tenant.subscribed_skus()}


# --------------------------------------------------------------------------- Graph: faults


def test_throttling_and_transient_faults(sim, http):
    token = token_request(sim, http).json()["access_token"]
    sim.spec.throttle_rate, sim.spec.retry_after = 1.0, 2
    before = sim.throttled_count
    r = graph(sim, http, token=token)
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    error = r.json()["error"]
    assert error["code"] == "TooManyRequests" and error["message"] == "Please retry again later."
    assert {k: error["innerError"][k] for k in ("code", "message", "status")} == {
        "code": "429",
        "message": "Please retry after",
        "status": "429",
    }
    assert error["innerError"]["request-id"] == r.headers["request-id"]
    assert sim.throttled_count == before + 1
    sim.spec.throttle_rate, sim.spec.transient_rate, sim.spec.retry_after = 0.0, 1.0, 0
    statuses = set()
    for _ in range(12):
        r = graph(sim, http, token=token)
        statuses.add(r.status_code)
        if r.status_code == 503:
            assert graph_error(r)["code"] == "serviceNotAvailable" and r.headers["retry-after"] == "0"
    assert statuses == {503, 504}
    # A fraction of requests, deterministic for a seed.
    sim.spec.transient_rate, sim.spec.throttle_rate = 0.0, 0.3
    codes = [graph(sim, http, token=token, **{"$top": "1"}).status_code for _ in range(40)]
    assert 3 <= codes.count(429) <= 25 and set(codes) == {200, 429}
    sim.spec.throttle_rate = 0.0
    sim.fail_next("/v1.0/subscribedSkus", 503, "serviceNotAvailable", "Service unavailable", times=2)
    assert [graph(sim, http, "/v1.0/subscribedSkus", token=token).status_code for _ in range(3)] == [503, 503, 200]


def test_token_bucket_rate_limit(sim, http):
    token = token_request(sim, http).json()["access_token"]
    sim.spec.rate_limit_ru_per_10s = 10
    responses = [graph(sim, http, token=token) for _ in range(6)]  # GET users costs 2
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert responses[0].headers["x-ms-resource-unit"] == "2"
    assert "x-ms-throttle-limit-percentage" in responses[4].headers
    assert 1 <= int(responses[5].headers["retry-after"]) <= 10
    assert responses[5].headers["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
    sim.spec.rate_limit_ru_per_10s = None


def test_foreign_next_link_points_at_decoy(sim, http):
    sim.spec.foreign_next_link = True
    token = token_request(sim, http).json()["access_token"]
    link = graph(sim, http, token=token, **{"$top": "10"}).json()["@odata.nextLink"]
    assert link.startswith(sim.decoy_endpoint + "/v1.0/users?")
    before = sim.request_count(service="decoy")
    r = http.get(link)
    assert r.status_code == 200 and r.json()["value"] == []
    assert sim.request_count(service="decoy") == before + 1
    assert sim.requests[-1].service == "decoy" and sim.requests[-1].query["$top"] == "10"


def test_request_is_recorded_before_the_answer(sim, http, monkeypatch):
    """A slow recorder (a loaded machine) must not let a client see its answer before the record exists."""
    from simulator import web

    real = web.RequestRecord

    def slow_record(**kwargs):
        time.sleep(0.3)
        return real(**kwargs)

    monkeypatch.setattr(web, "RequestRecord", slow_record)
    before = sim.request_count(service="decoy")
    assert http.get(f"{sim.decoy_endpoint}/v1.0/users?$top=3").status_code == 200
    assert sim.request_count(service="decoy") == before + 1


def test_latency_overlaps_under_concurrency(sim, http):
    token = token_request(sim, http).json()["access_token"]
    sim.spec.latency = 0.2
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    with httpx.Client(verify=ssl.create_default_context(cafile=sim.ca_file), limits=limits, timeout=30) as client:
        url = f"{sim.graph_endpoint}/v1.0/organization"
        started = time.perf_counter()
        with ThreadPoolExecutor(50) as pool:
            codes = list(
                pool.map(lambda _: client.get(url, headers={"Authorization": f"Bearer {token}"}).status_code, range(50))
            )
        elapsed = time.perf_counter() - started
    assert codes == [200] * 50
    assert 0.2 <= elapsed < 5.0, elapsed  # serially this would take 10 s (the margin is for a busy machine)


# --------------------------------------------------------------------------- scale and process


def test_large_tenant_starts_fast_and_serves(http):
    started = time.process_time()  # CPU time: a busy machine must not fail it
    with Simulator(TenantSpec(seed=9, users=200_000)) as big:
        assert time.process_time() - started < 1.0
        with httpx.Client(verify=ssl.create_default_context(cafile=big.ca_file), timeout=60) as client:
            token = token_request(big, client).json()["access_token"]
            r = graph(
                big,
                client,
                token=token,
                headers={"ConsistencyLevel": "eventual"},
                **{"$top": "999", "$select": "id,userPrincipalName", "$count": "true"},
            )
            body = r.json()
            assert body["@odata.count"] == 200_000 and len(body["value"]) == 999
            assert body["value"][-1]["id"] == big.tenant.user_id(998)


def test_command_line_prints_env_and_stops_on_sigterm(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--users", "50", "--latency", "0.01", "--secret-in", "keyvault"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        env = json.loads(proc.stdout.readline())
        assert {"M365_TENANT_ID", "KEY_VAULT_URL", "IDENTITY_ENDPOINT", "SSL_CERT_FILE"} <= set(env)
        doc = httpx.get(
            f"{env['M365_AUTHORITY_HOST']}/{env['M365_TENANT_ID']}/v2.0/.well-known/openid-configuration",
            verify=ssl.create_default_context(cafile=env["SSL_CERT_FILE"]),
        )
        assert doc.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_graph_answers_gzip_only_when_the_client_accepts_it(sim, http):
    """Graph compresses answers for clients that accept gzip (the SDKs' decompression middleware is
    specified for it); httpx asks for it by default, so the collector's pages arrive compressed."""
    token = token_request(sim, http).json()["access_token"]
    url = f"{sim.graph_endpoint}/v1.0/users"
    params = {"$top": "999", "$select": "id,userPrincipalName,assignedPlans"}
    with http.stream("GET", url, params=params, headers={"Authorization": f"Bearer {token}"}) as r:
        packed = b"".join(r.iter_raw())
        assert r.headers["content-encoding"] == "gzip" and r.headers["vary"] == "Accept-Encoding"
    plain = http.get(url, params=params, headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    unpacked = orjson.loads(gzip.decompress(packed))
    assert unpacked["value"] == plain.json()["value"] and len(packed) * 5 < len(plain.content)
    small = graph(sim, http, token=token, path="/v1.0/organization", **{"$select": "id"})
    assert "content-encoding" not in small.headers  # short answers stay plain


def test_a_narrow_select_gives_the_same_values_as_the_whole_user(sim):
    tenant = sim.tenant
    for i in range(0, 5000, 7):
        whole = tenant.user(i)
        for props in (["id", "userPrincipalName", "signInActivity"], ["signInActivity", "id"], ["id"]):
            assert tenant.user(i, props) == {p: whole[p] for p in props}


def test_render_cache_serves_the_same_pages_and_follows_renames(http):
    spec = TenantSpec(seed=3, users=300, render_cache=True, quotas=False)
    with Simulator(spec) as cached, Simulator(TenantSpec(seed=3, users=300, quotas=False)) as plain:
        params = {"$top": "120", "$select": "id,userPrincipalName,signInActivity"}
        cached.warm_render_cache(params["$select"])  # bench/quotas.py: every user built before the run
        area = next(a for a in cached._graph.areas if type(a).__name__ == "UsersArea")
        assert [len(users) for users in area._cache.values()] == [300]
        first = fetch_all(cached, http, params)
        assert [u for p in first for u in p["value"]] == [u for p in fetch_all(plain, http, params) for u in p["value"]]
        assert fetch_all(cached, http, params)[0]["value"] == first[0]["value"]  # now from the cache
        cached.tenant.rename(0, "renamed@" + cached.tenant.initial_domain)
        again = fetch_all(cached, http, params)[0]["value"]
        assert again[0]["userPrincipalName"] == "renamed@" + cached.tenant.initial_domain


def test_a_renamed_guest_keeps_its_invited_mail():
    """An admin may give a guest any UPN in a verified domain; its mail stays the invited address (a guest
    renamed mid-collection once made the simulator answer 500 on the page that held it)."""
    with Simulator(TenantSpec(seed=5, users=400, quotas=False)) as s:
        tenant = s.tenant
        guest = next(i for i in range(tenant.user_count) if tenant.user(i)["userType"] == "Guest")
        before = tenant.user(guest)
        tenant.rename(guest, "renamed.guest@" + tenant.initial_domain)
        after = tenant.user(guest)
        assert after["userPrincipalName"] == "renamed.guest@" + tenant.initial_domain
        assert after["mail"] == before["mail"] and "#EXT#" in before["userPrincipalName"]


def test_a_report_file_is_built_once_per_tenant_state_and_follows_changes():
    """The download host keeps each rendered report until the tenant changes (a 200,000-user tenant's reports
    took longer than the client's read timeout to build, so its retries must not build them again)."""
    with Simulator(TenantSpec(seed=4, users=400, quotas=False)) as s:
        usage = s.usage
        first = usage.download("getM365AppUserDetail", "D30", False)
        assert first == usage.render("getM365AppUserDetail", usage.rows("getM365AppUserDetail", "D30", False))
        assert usage.download("getM365AppUserDetail", "D30", False) is first  # the same file, not rebuilt
        assert usage.download("getM365AppUserDetail", "D30", True) != first  # concealed names are another file
        assert usage.download("getM365AppUserDetail", "D7", False) != first
        licensed = [u["id"] for u in (s.tenant.user(i) for i in range(400)) if u["assignedLicenses"]]
        s.changes.change_licences(licensed[0])  # no licences: the user leaves every report
        after = usage.download("getM365AppUserDetail", "D30", False)
        assert after != first and after == usage.render("getM365AppUserDetail",
                                                        usage.rows("getM365AppUserDetail", "D30", False))
        s.tenant.frontline_share = 0.9  # test data shaping the rows depend on
        assert usage.download("getM365AppUserDetail", "D30", False) != after
