"""Connection and certificate failures as one line naming the setting to check and the fix.

An unreachable Graph endpoint or authority, or a TLS-inspecting proxy whose CA is not trusted,
shows up deep in httpx, requests or MSAL as a chain of exceptions. Users need the setting
(M365_GRAPH_ENDPOINT, M365_AUTHORITY_HOST, SSL_CERT_FILE for Graph, REQUESTS_CA_BUNDLE for the
token endpoint) and what to do; the traceback is for -v.
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass

from connector.config import shown_url

_CERT = re.compile(r"certificate verify failed: ([^(\]\n]+)", re.I)
_CONNECT = frozenset({"ConnectError", "ConnectTimeout", "NewConnectionError", "ConnectTimeoutError"})
_DNS = ("Name or service not known", "nodename nor servname", "Temporary failure in name resolution",
        "getaddrinfo failed", "No address associated with hostname")


@dataclass(frozen=True)
class Unreachable:
    setting: str
    code: str  # graph_unreachable, graph_tls, authority_unreachable, authority_tls
    reason: str
    remedy: str

    def line(self) -> str:
        return f"{self.setting}: {self.reason}. {self.remedy}"

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "setting": self.setting, "reason": self.reason, "remedy": self.remedy}


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out and len(out) < 20:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _kind(exc: BaseException) -> tuple[str, str] | None:
    """('tls', detail) or ('net', detail) when the chain is a failure to connect (DNS, refused, timed out,
    certificate not trusted), else None: a connection that breaks mid-response is a retry matter, not a
    setting to fix."""
    chain = _chain(exc)
    text = " | ".join(f"{type(e).__name__}: {e}" for e in chain)
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return "tls", (e.verify_message or "certificate verify failed")
    match = _CERT.search(text)
    if match:
        return "tls", match.group(1).strip()
    names = {type(e).__name__ for e in chain}
    dns = any(isinstance(e, socket.gaierror) for e in chain) or any(d in text for d in _DNS)
    refused = any(isinstance(e, ConnectionRefusedError) for e in chain) or "Connection refused" in text
    connect = dns or refused or bool(names & _CONNECT) or "Failed to establish a new connection" in text
    if not connect:
        return None
    if any(isinstance(e, ssl.SSLError) for e in chain) or "SSLError" in names:
        return "tls", "the TLS handshake failed"
    if dns:
        return "net", "the host name does not resolve"
    if refused or "All connection attempts failed" in text:
        return "net", "connection refused"
    if names & {"ConnectTimeout", "ConnectTimeoutError"} or "timed out" in text:
        return "net", "the connection timed out"
    return "net", "the connection failed"


def graph_failure(exc: BaseException, endpoint: str) -> Unreachable | None:
    """A Graph request that never reached Graph."""
    kind = _kind(exc)
    if kind is None:
        return None
    where = shown_url(endpoint)
    if kind[0] == "tls":
        return Unreachable("SSL_CERT_FILE", "graph_tls", f"the certificate of {where} is not trusted ({kind[1]})",
                           "Behind a TLS-inspecting proxy, set SSL_CERT_FILE to a PEM file with the proxy's CA; "
                           "otherwise check M365_GRAPH_ENDPOINT.")
    return Unreachable("M365_GRAPH_ENDPOINT", "graph_unreachable", f"{where} cannot be reached ({kind[1]})",
                       "Check the setting (unset it to use the cloud's default endpoint), DNS, proxy and firewall.")


def graph_timeout(endpoint: str, seconds: float) -> Unreachable:
    """A Graph request that got no answer in time (a host that drops packets, a proxy that hangs)."""
    return Unreachable("M365_GRAPH_ENDPOINT", "graph_unreachable",
                       f"{shown_url(endpoint)} did not answer within {seconds:g} s",
                       "Check the setting (unset it to use the cloud's default endpoint), DNS, proxy and firewall.")


def authority_failure(exc: BaseException, authority: str) -> Unreachable | None:
    """A token request that never reached the authority (Entra ID)."""
    kind = _kind(exc)
    if kind is None:
        return None
    where = shown_url(authority)
    if kind[0] == "tls":
        return Unreachable("REQUESTS_CA_BUNDLE", "authority_tls",
                           f"the certificate of {where} is not trusted ({kind[1]})",
                           "Behind a TLS-inspecting proxy, set REQUESTS_CA_BUNDLE to a PEM file with the proxy's CA "
                           "(token requests use it; Graph requests use SSL_CERT_FILE); otherwise check "
                           "M365_AUTHORITY_HOST.")
    return Unreachable("M365_AUTHORITY_HOST", "authority_unreachable", f"{where} cannot be reached ({kind[1]})",
                       "Check M365_AUTHORITY_HOST and M365_CLOUD (unset the host to use the cloud's default), DNS, "
                       "proxy and firewall.")
