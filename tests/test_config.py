"""Configuration: each bad value is refused with exit code 2 and a message naming the setting."""

from __future__ import annotations

import pytest

from connector.cli.main import main
from connector.config import ConfigError, load_settings

GOOD = {
    "M365_TENANT_ID": "contoso.onmicrosoft.com",
    "M365_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "M365_CLIENT_SECRET": "not-a-real-secret-value-0123456789",
}


def test_defaults():
    s = load_settings(GOOD)
    assert s.cloud == "global" and s.graph_endpoint == "https://graph.microsoft.com"
    assert s.authority_host == "https://login.microsoftonline.com" and s.instance_discovery
    assert s.domains is None and s.datasets is None and s.secret_name == "m365-client-secret"
    assert s.snapshot_container == "m365-snapshots"
    assert "not-a-real-secret" not in repr(s)


@pytest.mark.parametrize("cloud,login,graph", [
    ("usgov", "https://login.microsoftonline.us", "https://graph.microsoft.us"),
    ("usgovdod", "https://login.microsoftonline.us", "https://dod-graph.microsoft.us"),
    ("china", "https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"),
])
def test_clouds(cloud, login, graph):
    s = load_settings({**GOOD, "M365_CLOUD": cloud.upper()})
    assert (s.authority_host, s.graph_endpoint, s.graph_scope) == (login, graph, f"{graph}/.default")


def test_overrides_turn_instance_discovery_off_and_keep_the_cloud_scope():
    s = load_settings({**GOOD, "M365_GRAPH_ENDPOINT": "https://graph.internal.example:8443/",
                       "M365_AUTHORITY_HOST": "https://login.internal.example"})
    assert s.graph_endpoint == "https://graph.internal.example:8443" and not s.instance_discovery
    assert s.graph_scope == "https://graph.microsoft.com/.default"


def test_lists():
    s = load_settings({**GOOD, "M365_DOMAINS": "Contoso.com,\n@fabrikam.com", "M365_DATASETS": "users, organization"})
    assert s.domains == ("contoso.com", "fabrikam.com")
    assert s.datasets == ("users", "organization")


@pytest.mark.parametrize("setting,value", [
    ("M365_TENANT_ID", ""),
    ("M365_TENANT_ID", "not a tenant"),
    ("M365_CLIENT_ID", "my-app"),
    ("M365_CLIENT_ID", ""),
    ("M365_CLOUD", "mars"),
    ("M365_GRAPH_ENDPOINT", "http://graph.microsoft.com"),
    ("M365_AUTHORITY_HOST", "https://login.microsoftonline.com/contoso"),
    ("M365_DOMAINS", "contoso..com"),
    ("M365_DATASETS", "mailboxes"),
    ("M365_MAX_RETRIES", "lots"),
    ("M365_MAX_CONCURRENCY", "0"),
    ("SNAPSHOT_CONTAINER", "Bad_Container"),
    ("KEY_VAULT_URL", "kv-contoso"),
    ("M365_CLIENT_SECRET_NAME", "has spaces"),
])
def test_bad_values_exit_2_naming_the_setting(setting, value, monkeypatch, capsys, tmp_path):
    env = {**GOOD, setting: value}
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    assert [p.setting for p in err.value.problems] == [setting]
    if value:  # the value itself never comes back (it could be a secret pasted into the wrong setting)
        assert value not in str(err.value)
    for key in list(__import__("os").environ):
        if key.startswith(("M365_", "SNAPSHOT_", "KEY_VAULT")):
            monkeypatch.delenv(key)
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    assert main(["run", "--out", str(tmp_path)]) == 2
    err_text = capsys.readouterr().err
    assert setting in err_text and "Configuration error" in err_text


def test_missing_secret_source_names_both_settings():
    env = {k: v for k, v in GOOD.items() if k != "M365_CLIENT_SECRET"}
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    assert "KEY_VAULT_URL" in str(err.value) and "M365_CLIENT_SECRET" in str(err.value)


def test_secret_value_never_in_error_messages():
    env = {**GOOD, "M365_CLIENT_ID": "bad", "M365_CLIENT_SECRET": "s3cr3t-value-that-must-not-show"}
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    assert "s3cr3t" not in str(err.value)


def test_run_without_destination_is_a_config_error(monkeypatch, capsys):
    for key, val in GOOD.items():
        monkeypatch.setenv(key, val)
    for key in ("SNAPSHOT_DIR", "SNAPSHOT_ACCOUNT_URL", "SNAPSHOT_CONNECTION_STRING"):
        monkeypatch.delenv(key, raising=False)
    assert main(["run"]) == 2
    assert "SNAPSHOT_DIR" in capsys.readouterr().err


@pytest.mark.parametrize("value", [
    "sv=2024-05-04&ss=b&sp=r&se=2030-01-01&sig=c2VjcmV0U2lnbmF0dXJlTWFya2Vy%3D",  # a SAS pasted without its URL
    "ftp://reader:pAssw0rd-Marker@files.example.com/prices.csv",
    "Xq98Q~pAstEd.ClientSecret-ValueThatMustNotShow",
])
def test_an_invalid_price_sheet_is_named_never_echoed(value):
    """Issue 22 item 2: the message names the setting, the expected form and the fix, never the value."""
    with pytest.raises(ConfigError) as err:
        load_settings({**GOOD, "M365_PRICE_SHEET": value})
    (problem,) = err.value.problems
    assert problem.setting == "M365_PRICE_SHEET" and "https://" in problem.message and "CSV" in problem.message
    for part in (value, "sig=", "pAssw0rd-Marker", "ClientSecret"):
        assert part not in str(err.value)


def test_url_valued_settings_are_never_in_a_repr_and_are_written_without_their_query():
    from connector.config import public_url, scrub_urls

    url = "https://reader:pw@st.blob.core.windows.net/sheets/prices.csv?sv=2024&sig=c2lnbmF0dXJl%3D#x"
    s = load_settings({**GOOD, "M365_PRICE_SHEET": url, "M365_PRODUCT_NAMES_URL": url})
    assert "sig=" not in repr(s) and "pw@" not in repr(s)
    assert public_url(url) == "https://st.blob.core.windows.net/sheets/prices.csv"
    assert scrub_urls(f"Client error '403 Forbidden' for url '{url}'") == \
        "Client error '403 Forbidden' for url 'https://st.blob.core.windows.net/sheets/prices.csv'"
