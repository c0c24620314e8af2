"""Connection failures as one line naming the setting: only failures to connect, never a mid-response break."""

from __future__ import annotations

import ssl

import httpx
import pytest

from connector.graph.unreachable import authority_failure, graph_failure


def _raised(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(("exc", "setting", "reason"), [
    (_raised(httpx.ConnectError("All connection attempts failed"), ConnectionRefusedError(111, "refused")),
     "M365_GRAPH_ENDPOINT", "connection refused"),
    (httpx.ConnectError("[Errno -2] Name or service not known"), "M365_GRAPH_ENDPOINT", "does not resolve"),
    (httpx.ConnectTimeout("timed out"), "M365_GRAPH_ENDPOINT", "timed out"),
    (httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer "
                        "certificate (_ssl.c:1006)"), "SSL_CERT_FILE", "unable to get local issuer certificate"),
])
def test_failures_to_connect_name_the_setting(exc, setting, reason):
    found = graph_failure(exc, "https://graph.example:8443/v1.0?sig=secret")
    assert found is not None and found.setting == setting and reason in found.reason
    assert "sig=secret" not in found.line() and "https://graph.example:8443" in found.line()


@pytest.mark.parametrize("exc", [
    _raised(httpx.ReadError("reset"), ConnectionResetError(104, "Connection reset by peer")),
    _raised(httpx.RemoteProtocolError("peer closed connection"), ssl.SSLEOFError(8, "EOF")),
    httpx.ReadTimeout("read timed out"),
    ValueError("not JSON"),
])
def test_a_connection_that_breaks_mid_response_is_not_a_setting_problem(exc):
    assert graph_failure(exc, "https://graph.microsoft.com") is None


def test_token_endpoint_failures_name_the_authority_or_the_requests_bundle():
    refused = Exception("Authentication failed: HTTPSConnection(host='login.example', port=443): Failed to "
                        "establish a new connection: [Errno 111] Connection refused")
    assert authority_failure(refused, "https://login.example").setting == "M365_AUTHORITY_HOST"
    untrusted = Exception("Authentication failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                          "self-signed certificate in certificate chain (_ssl.c:1006)")
    assert authority_failure(untrusted, "https://login.example").setting == "REQUESTS_CA_BUNDLE"
