"""Many tenants from one deployment (issue 23): the simulator serving several tenants, the tenant registry, the
fan-out through the queue, the cross-tenant view, and isolation between tenants."""

from __future__ import annotations

import ssl

import httpx
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
