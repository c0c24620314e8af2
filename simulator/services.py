"""The simulated services: Entra token endpoint, App Service managed identity, Key Vault
secrets, Microsoft Graph v1.0 and a "foreign" decoy host.

Wire shapes follow docs/graph-facts (the project's fact sheet); section numbers in
comments refer to it. Each service is a callable ``Request -> Response``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import math
import os
import re
import time
from collections import deque
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, parse_qsl, quote, urlsplit

import orjson
from isal import isal_zlib

from .tokens import GRAPH_RESOURCE, RESOURCE_ALIASES, TOKEN_EXCHANGE_RESOURCE, VAULT_RESOURCE, new_guid
from .web import Request, Response

if TYPE_CHECKING:
    from .server import Simulator

ODATA_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
PLAIN_JSON = "application/json; charset=utf-8"
OIDC_PATH = "v2.0/.well-known/openid-configuration"
METADATA = "https://graph.microsoft.com/v1.0/$metadata"

USER_ROLES = frozenset({"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
ORG_ROLES = frozenset(
    {"Organization.Read.All", "Directory.Read.All", "Organization.ReadWrite.All", "Directory.ReadWrite.All"}
)
# §3: /directory/subscriptions. LicenseAssignment.Read.All is listed by newer docs [UNVERIFIED].
SUBSCRIPTION_ROLES = ORG_ROLES | {"LicenseAssignment.Read.All"}
GROUP_ROLES = frozenset({"GroupMember.Read.All", "Group.Read.All", "Directory.Read.All", "GroupMember.ReadWrite.All",
                         "Group.ReadWrite.All", "Directory.ReadWrite.All"})
ROLE_MANAGEMENT_ROLES = frozenset({"RoleManagement.Read.Directory", "RoleManagement.Read.All", "Directory.Read.All",
                                   "RoleManagement.ReadWrite.Directory", "Directory.ReadWrite.All"})
DEVICE_ROLES = frozenset({"Device.Read.All", "Device.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
INTUNE_ROLES = frozenset({"DeviceManagementManagedDevices.Read.All", "DeviceManagementManagedDevices.ReadWrite.All"})
REPORT_ROLES = frozenset({"Reports.Read.All"})
REPORT_SETTINGS_ROLES = frozenset({"ReportSettings.Read.All", "ReportSettings.ReadWrite.All"})
REPORT_WINDOW = 600.0  # §6: usage reports, 14 requests per 10 minutes per app and tenant, per report API
BATCH_LIMIT = 20  # §10
_REPORT_CALL = re.compile(r"^(?:microsoft\.graph\.)?(get[A-Za-z0-9]+)(?:\((.*)\))?$")
DEFAULT_USER_PROPERTIES = (
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
)
# §0: valid user properties that cannot be returned in a collection -> 501.
NOT_LISTABLE_USER_PROPERTIES = frozenset(
    p.lower()
    for p in (
        "aboutMe",
        "birthday",
        "hireDate",
        "interests",
        "mySite",
        "pastProjects",
        "preferredName",
        "responsibilities",
        "schools",
        "skills",
        "mailboxSettings",
    )
)


BREAKS = ("reset", "cut", "truncated", "garbage")


def _broken(response: Response, kind: str) -> Response:
    """A response spoilt on the way, as networks and overloaded front ends do: `reset` closes the
    connection without an answer, `cut` sends the headers and half the body then closes, `truncated`
    is a complete HTTP answer whose JSON stops halfway, `garbage` a 200 whose body is not JSON."""
    if kind == "truncated":
        return Response(response.status, response.body[: max(1, len(response.body) // 2)], dict(response.headers))
    if kind == "garbage":
        return Response(200, b"<html><body>Service Unavailable</body></html>", {"Content-Type": "text/html"})
    return Response(response.status, response.body, dict(response.headers), fault=kind)


# Graph compresses a response body when the request accepts gzip: the SDKs' decompression middleware is
# specified for it (msgraph-sdk-design middleware/DecompressionHandler.md: "Decompress response bodies
# that have the header Content-Encoding: gzip"; Python's HTTPX sends Accept-Encoding and decodes by
# itself), and Graph's answers carry "Vary: Accept-Encoding" (the captured response in
# middleware/CompressionHandler.md). Graph's threshold and level are not documented; small bodies stay
# plain here, and ISA-L's fast level keeps the stand-in's CPU low.
GZIP_MIN_BYTES = 1024


def _encoded(req: Request, response: Response) -> Response:
    accepted = req.headers.get("accept-encoding", "")
    if len(response.body) < GZIP_MIN_BYTES or "gzip" not in accepted.lower():
        return response
    packer = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
    body = packer.compress(response.body) + packer.flush()
    headers = {**response.headers, "Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
    return Response(response.status, body, headers, fault=response.fault)


def _graph_date() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _retry_after(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# --------------------------------------------------------------------------- Entra (login)


class LoginService:
    """Entra ID v2 endpoints for client credentials: OIDC discovery, instance discovery, token (§7)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def _known_tenant(self, name: str, allow_common: bool) -> bool:
        t = self.sim.tenant
        lowered = name.lower()
        if lowered == t.tenant_id or lowered in (d.lower() for d in t.domains):
            return True
        return allow_common and lowered in ("organizations", "common")

    def _error(self, req: Request, status: int, error: str, code: int, message: str) -> Response:
        trace = new_guid()
        correlation = req.headers.get("client-request-id") or new_guid()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body = {
            "error": error,
            "error_description": f"AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}"
            f"\r\nTimestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"{self.sim.authority_host}/error?code={code}",
        }
        return Response.json(status, body, PLAIN_JSON, self._headers(req, trace))

    @staticmethod
    def _headers(req: Request, request_id: str | None = None) -> dict[str, str]:
        headers = {"Cache-Control": "no-store, no-cache", "x-ms-request-id": request_id or new_guid()}
        if "client-request-id" in req.headers:
            headers["client-request-id"] = req.headers["client-request-id"]
        return headers

    def _tenant_not_found(self, req: Request, tenant: str) -> Response:
        return self._error(
            req,
            400,
            "invalid_tenant",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
            "the correct cloud. Check with your subscription administrator, this may happen if there are no active "
            "subscriptions for the tenant.",
        )

    def __call__(self, req: Request) -> Response:
        segments = [s for s in req.path.split("/") if s]
        if req.method == "GET" and len(segments) == 3 and segments[1:] == ["discovery", "instance"]:
            return self._instance_discovery(req)
        if (
            req.method == "GET"
            and len(segments) == 4
            and segments[1:] == ["v2.0", ".well-known", "openid-configuration"]
        ):
            if not self._known_tenant(segments[0], allow_common=True):
                return self._tenant_not_found(req, segments[0])
            return Response.json(200, self._oidc_document(), PLAIN_JSON, {"Cache-Control": "max-age=86400, private"})
        if req.method == "POST" and len(segments) == 4 and segments[1:] == ["oauth2", "v2.0", "token"]:
            return self._token(req, segments[0])
        return Response.json(404, {"error": "not_found", "error_description": "Unknown endpoint"}, PLAIN_JSON)

    def _oidc_document(self) -> dict[str, Any]:
        a, tid = self.sim.authority_host, self.sim.tenant_id
        return {
            "token_endpoint": f"{a}/{tid}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{a}/{tid}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{a}/{tid}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{a}/{tid}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{a}/{tid}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{a}/{tid}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "cloud_instance_name", "aud", "exp", "iat", "auth_time", "tid", "ver"],
            "kerberos_endpoint": f"{a}/{tid}/kerberos",
            "tenant_region_scope": "WW",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def _instance_discovery(self, req: Request) -> Response:
        host = urlsplit(self.sim.authority_host).netloc
        endpoint = req.query.get("authorization_endpoint", "")
        path = [s for s in urlsplit(endpoint).path.split("/") if s]
        tenant = path[0] if path else "common"
        return Response.json(
            200,
            {
                "tenant_discovery_endpoint": f"{self.sim.authority_host}/{tenant}/{OIDC_PATH}",
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            },
            PLAIN_JSON,
        )

    def _token(self, req: Request, tenant: str) -> Response:
        sim, spec = self.sim, self.sim.spec
        if not self._known_tenant(tenant, allow_common=False):
            return self._tenant_not_found(req, tenant)
        form = {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        grant = form.get("grant_type", "")
        if grant != "client_credentials":
            return self._error(
                req, 400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'."
            )
        client_id = form.get("client_id", "")
        if client_id.lower() != sim.client_id:
            return self._error(
                req,
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can "
                "happen if the application has not been installed by the administrator of the tenant or consented "
                "to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
            )
        scopes = [s for s in form.get("scope", "").split() if s not in ("openid", "profile", "offline_access")]
        audience = None
        if len(scopes) == 1 and scopes[0].endswith("/.default"):
            audience = RESOURCE_ALIASES.get(scopes[0][: -len("/.default")].rstrip("/"))
        if audience is None:
            shown = " ".join(scopes) or form.get("scope", "")
            return self._error(
                req,
                400,
                "invalid_scope",
                70011,
                f"The provided value for the input parameter 'scope' is not valid. The scope {shown} is not valid.",
            )
        secret = form.get("client_secret")
        assertion = form.get("client_assertion")
        if assertion is not None and _assertion_header(assertion).keys() & {"x5t", "x5t#S256"}:
            problem = _check_certificate_assertion(sim, assertion)
            if problem:
                return self._error(req, 401, "invalid_client", problem[0], problem[1])
        elif assertion is not None:
            claims, reason = sim.issuer.verify(assertion, (TOKEN_EXCHANGE_RESOURCE,))
            if reason:
                return self._error(
                    req,
                    401,
                    "invalid_client",
                    700211,
                    "No matching federated identity record found for presented assertion issuer.",
                )
        elif not secret:
            return self._error(
                req,
                400,
                "invalid_request",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
            )
        elif not hmac.compare_digest(secret.encode(), sim.client_secret.encode()):
            return self._error(
                req,
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
                f"value, not the client secret ID, for a secret added to app '{sim.client_id}'.",
            )
        elif spec.secret_expired:
            return self._error(
                req,
                401,
                "invalid_client",
                7000222,
                f"The provided client secret keys for app '{sim.client_id}' are expired. Visit the Azure portal to "
                "create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate "
                "credentials for added security: https://aka.ms/certCreds.",
            )
        roles = frozenset(spec.roles) if audience == GRAPH_RESOURCE else frozenset()
        token, _exp = sim.issuer.issue(
            audience=audience,
            app_id=sim.client_id,
            object_id=sim.tenant.service_principal_id,
            lifetime=spec.token_lifetime,
            roles=roles,
        )
        sim._count("tokens_issued")
        body = {
            "token_type": "Bearer",
            "expires_in": spec.token_lifetime,
            "ext_expires_in": spec.token_lifetime,
            "access_token": token,
        }
        return Response.json(200, body, PLAIN_JSON, self._headers(req))


def _assertion_header(assertion: str) -> dict[str, Any]:
    try:
        head = assertion.split(".")[0]
        value = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, IndexError):
        return {}
    return value if isinstance(value, dict) else {}


def _check_certificate_assertion(sim: Simulator, assertion: str) -> tuple[int, str] | None:
    """Entra's checks of a certificate client assertion: known key (by x5t / x5t#S256 thumbprint),
    valid RS256/PS256 signature, iss = sub = client id, not expired. None when it is accepted."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    header = _assertion_header(assertion)
    cert = sim.app_certificate
    presented = (header.get("x5t#S256") or header.get("x5t") or "").rstrip("=")
    known = {_b64url(cert.sha256), _b64url(cert.sha1)} if sim.spec.certificate_registered else set()
    if presented not in known:
        return 700027, ("Client assertion contains an invalid signature. [Reason - The key was not found., "
                        f"Thumbprint of key used by client: '{presented}'].")
    head, body, sig = assertion.split(".")
    try:
        signature = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
        pad = padding.PKCS1v15() if header.get("alg") == "RS256" else padding.PSS(
            mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
        cert.certificate.public_key().verify(signature, f"{head}.{body}".encode(), pad, hashes.SHA256())
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (InvalidSignature, ValueError):
        return 700027, "Client assertion contains an invalid signature. [Reason - The signature is invalid.]"
    if claims.get("iss") != sim.client_id or claims.get("sub") != sim.client_id:
        return 700023, "Client assertion audience claim does not match Realm issuer."
    if claims.get("exp", 0) <= time.time():
        return 700024, "Client assertion is not within its valid time range."
    return None


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --------------------------------------------------------------------------- managed identity


class IdentityService:
    """App Service managed identity endpoint, protocol 2019-08-01 (what MSAL's
    ``_obtain_token_on_app_service`` sends: GET ?api-version&resource, header X-IDENTITY-HEADER)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    @staticmethod
    def _error(status: int, message: str) -> Response:
        return Response.json(
            status, {"statusCode": status, "message": message, "correlationId": new_guid()}, PLAIN_JSON
        )

    def __call__(self, req: Request) -> Response:
        sim = self.sim
        if req.method != "GET":
            return self._error(405, "Method not allowed.")
        header = req.headers.get("x-identity-header")
        if header is None:
            return self._error(400, "Required header X-IDENTITY-HEADER is missing.")
        if not hmac.compare_digest(header.encode(), sim.identity_header.encode()):
            return self._error(401, "The X-IDENTITY-HEADER value is not valid.")
        if req.query.get("api-version") != "2019-08-01":
            return self._error(400, "Unsupported or missing api-version; expected 2019-08-01.")
        resource = req.query.get("resource", "").rstrip("/")
        if resource.endswith("/.default"):
            resource = resource[: -len("/.default")]
        if resource not in sim.identity_resources:
            return self._error(400, f"Resource '{resource}' is not supported by this managed identity endpoint.")
        token, exp = sim.issuer.issue(
            audience=resource,
            app_id=sim.tenant.managed_identity_client_id,
            object_id=sim.tenant.managed_identity_principal_id,
            lifetime=86399,
        )
        sim._count("identity_tokens_issued")
        return Response.json(
            200,
            {
                "access_token": token,
                "expires_on": str(exp),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": sim.tenant.managed_identity_client_id,
            },
            PLAIN_JSON,
        )


# --------------------------------------------------------------------------- Key Vault


class KeyVaultService:
    """Key Vault secrets: ``GET /secrets/{name}[/{version}]`` behind the Bearer challenge."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def _headers(self) -> dict[str, str]:
        return {
            "Cache-Control": "no-cache",
            "x-ms-request-id": new_guid(),
            "x-ms-keyvault-service-version": "1.9.2179.1",
            "x-ms-keyvault-region": "westeurope",
        }

    def _unauthorized(self, message: str) -> Response:
        challenge = (
            f'Bearer authorization="{self.sim.authority_host}/{self.sim.tenant_id}", resource="{VAULT_RESOURCE}"'
        )
        return Response.json(
            401,
            {"error": {"code": "Unauthorized", "message": message}},
            PLAIN_JSON,
            {**self._headers(), "WWW-Authenticate": challenge},
        )

    def __call__(self, req: Request) -> Response:
        auth = req.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            return self._unauthorized("AKV10000: Request is missing a Bearer or PoP token.")
        claims, reason = self.sim.issuer.verify(auth[7:].strip(), (VAULT_RESOURCE,))
        if reason == "audience" and claims is not None:
            return self._unauthorized(
                f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: {claims.get('aud')}."
            )
        if reason == "expired":
            return self._unauthorized("AKV10032: Token is expired.")
        if reason:
            return self._unauthorized("AKV10022: Invalid token: signature validation failed.")
        if not req.query.get("api-version"):
            return Response.json(
                400,
                {"error": {"code": "BadParameter", "message": "The request URI does not contain an api-version."}},
                PLAIN_JSON,
                self._headers(),
            )
        segments = [s for s in req.path.split("/") if s]
        if req.method != "GET" or len(segments) not in (2, 3) or segments[0] != "secrets":
            return Response.json(
                400,
                {"error": {"code": "BadParameter", "message": "The request URI is not supported by the simulator."}},
                PLAIN_JSON,
                self._headers(),
            )
        name = segments[1]
        version = segments[2] if len(segments) == 3 else None
        secret = self.sim.get_secret_version(name, version)
        if secret is None:
            shown = f"{name}/{version}" if version else name
            return Response.json(
                404,
                {
                    "error": {
                        "code": "SecretNotFound",
                        "message": f"A secret with (name/id) {shown} was not found in this key vault. If you recently "
                        "deleted this secret you may be able to recover it using the correct recovery command. For "
                        "help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
                    }
                },
                PLAIN_JSON,
                self._headers(),
            )
        attributes: dict[str, Any] = {
            "enabled": True,
            "created": secret["created"],
            "updated": secret["created"],
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        }
        days = self.sim.spec.secret_expires_in_days
        if days is not None:
            attributes["exp"] = int(self.sim.started_at + days * 86400)
        body = {
            "value": secret["value"],
            "contentType": secret["contentType"],
            "id": f"{self.sim.key_vault_url}secrets/{name}/{secret['version']}",
            "attributes": attributes,
            "tags": {},
        }
        return Response.json(200, body, PLAIN_JSON, self._headers())


# --------------------------------------------------------------------------- decoy


class DownloadService:
    """The pre-authenticated report download host (§4): serves each report file once it is
    registered; it needs no token and, like a host that must never see one, rejects any
    request carrying an Authorization header."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def __call__(self, req: Request) -> Response:
        if "authorization" in req.headers:
            return Response(401, b"Authorization header not accepted on pre-authenticated download URLs.",
                            {"Content-Type": "text/plain"})
        segments = [s for s in req.path.split("/") if s]
        if req.method != "GET" or len(segments) != 3 or segments[:2] != ["data", "download"]:
            return Response(404, b"Not found", {"Content-Type": "text/plain"})
        entry = self.sim.take_download(segments[2])
        if entry is None:
            return Response(403, b"The download link has expired.", {"Content-Type": "text/plain"})
        usage = self.sim.usage
        rows = usage.rows(entry["report"], entry["period"], entry["concealed"])
        return Response(200, usage.render(entry["report"], rows), {"Content-Type": "application/octet-stream"})


class DecoyService:
    """A foreign host: answers every request with an empty collection (the recording is the point)."""

    def __call__(self, req: Request) -> Response:
        return Response.json(
            200, {"@odata.context": f"{METADATA}#users", "value": []}, ODATA_JSON, {"request-id": new_guid()}
        )


# --------------------------------------------------------------------------- Graph


class GraphError(Exception):
    """Raised inside the Graph service to answer with Graph's error shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


# graph-facts §11 [ISSUE microsoft-graph-docs #21098, microsoft-graph-docs-contrib #1238]: in a directory
# $filter, `or` takes at most 15 child clauses; the 16th is refused with this 400. It is reported lifted under
# ConsistencyLevel: eventual; the simulator refuses it in every mode (stricter: the collector never relies on it).
MAX_OR_CLAUSES = 15
_TOO_MANY_OR = ("Too many child clauses specified in search filter expression containing 'OR' operators: {n}. "
                "Max allowed: 15.")
# graph-facts §6 (DOCS concepts/throttling-limits.md, identity and access reports): 5 requests per 10 s per
# app and tenant; userRegistrationDetails is listed there. Listing users with signInActivity is an open
# question [ISSUE microsoft-graph-docs-contrib #8653], so it joins that limit only when the spec says so.
IDENTITY_REPORTS_WINDOW = 10.0

_STARTSWITH = re.compile(r"\s*startswith\(\s*userprincipalname\s*,\s*'((?:[^']|'')*)'\s*\)", re.IGNORECASE)
_OR = re.compile(r"\s+or\s+", re.IGNORECASE)


def parse_upn_prefix_filter(text: str) -> tuple[str, ...]:
    """Prefixes of ``startswith(userPrincipalName,'x') [or ...]``; raises ValueError for anything else."""
    prefixes: list[str] = []
    pos = 0
    while True:
        match = _STARTSWITH.match(text, pos)
        if not match:
            raise ValueError(text)
        prefixes.append(match.group(1).replace("''", "'"))
        pos = match.end()
        if not text[pos:].strip():
            return tuple(prefixes)
        joiner = _OR.match(text, pos)
        if not joiner:
            raise ValueError(text)
        pos = joiner.end()


class GraphService:
    """Microsoft Graph v1.0: /organization, /subscribedSkus, /users (+ /$count, /{id}) with
    auth, permissions, paging, faults and throttling (§0, §1, §3, §6)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._skiptoken_key = os.urandom(16)
        self._window: deque[tuple[float, int]] = deque()
        self._report_calls: dict[str, deque[float]] = {}
        self._identity_reports: deque[float] = deque()
        self._cache: dict[tuple[str, ...], dict[int, bytes]] = {}  # TenantSpec.render_cache
        self._cache_version = -1

    # Property names by lower-case name; lazy because SKUs and users need the tenant's UPN index.
    @cached_property
    def user_properties(self) -> dict[str, str]:
        return {p.lower(): p for p in self.sim.tenant.user(0)} if self.sim.tenant.user_count else {}

    @cached_property
    def org_properties(self) -> dict[str, str]:
        return {p.lower(): p for p in self.sim.tenant.organization()}

    @cached_property
    def sku_properties(self) -> dict[str, str]:
        return {p.lower(): p for p in self.sim.tenant.subscribed_skus()[0]}

    # ------------------------------------------------------------------ entry

    def __call__(self, req: Request) -> Response:
        """`latency` is the whole time a Graph request takes, like a real page: the time spent
        building the answer counts towards it, so tenant size does not add simulator overhead."""
        started = time.monotonic()
        response = self._handle(req)
        fault = self.sim._take_break("graph", req.path)
        if fault is not None:
            response = _broken(response, fault)
        response = _encoded(req, response)
        remaining = self.sim.spec.latency - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        return response

    def _handle(self, req: Request) -> Response:
        sim = self.sim
        request_id = new_guid()
        client_request_id = req.headers.get("client-request-id") or new_guid()
        headers = {
            "request-id": request_id,
            "client-request-id": client_request_id,
            "Cache-Control": "no-cache",
            "Strict-Transport-Security": "max-age=31536000",
            "x-ms-ags-diagnostic": '{"ServerInfo":{"DataCenter":"Simulated","Slice":"E","Ring":"1",'
            '"ScaleUnit":"000","RoleInstance":"SIM"}}',
        }
        try:
            claims = self._authenticate(req)
            self._faults(req, headers)
            response = self._route(req, claims, headers)
        except GraphError as err:
            headers.update(err.headers)
            if err.status == 429:
                sim._count("throttled_count")
                body: dict[str, Any] = {
                    "error": {
                        "code": err.code,
                        "innerError": {
                            "code": "429",
                            "date": _graph_date(),
                            "message": "Please retry after",
                            "request-id": request_id,
                            "status": "429",
                            "client-request-id": client_request_id,
                        },
                        "message": err.message,
                    }
                }
            else:
                body = {
                    "error": {
                        "code": err.code,
                        "message": err.message,
                        "innerError": {
                            "date": _graph_date(),
                            "request-id": request_id,
                            "client-request-id": client_request_id,
                        },
                    }
                }
            return Response.json(err.status, body, "application/json", headers)
        response.headers.update(headers)
        return response

    # ------------------------------------------------------------------ cross-cutting

    def _authenticate(self, req: Request) -> dict[str, Any]:
        auth = req.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        challenge = {
            "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
            'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
        }
        if not token:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", challenge)
        claims, reason = self.sim.issuer.verify(token, (GRAPH_RESOURCE, "00000003-0000-0000-c000-000000000000"))
        messages = {
            "malformed": "IDX14100: JWT is not well formed, there are no dots (.).",
            "signature": "Access token validation failure. Invalid signature.",
            "expired": "Lifetime validation failed, the token is expired.",
            "tenant": "Access token validation failure. Invalid issuer.",
            "audience": "Access token validation failure. Invalid audience.",
        }
        if reason == "malformed" and token.count(".") == 2:
            messages["malformed"] = "Access token validation failure. Invalid token."
        if reason:
            raise GraphError(401, "InvalidAuthenticationToken", messages[reason], challenge)
        assert claims is not None
        return claims

    def _faults(self, req: Request, headers: dict[str, str]) -> None:
        sim, spec = self.sim, self.sim.spec
        rule = sim._take_failure("graph", req.path)
        if rule is not None:
            extra = {"Retry-After": _retry_after(spec.retry_after)} if rule["status"] in (429, 503) else {}
            raise GraphError(rule["status"], rule["code"], rule["message"], extra)
        cost = self._cost(req)
        headers["x-ms-resource-unit"] = str(cost)
        limit = spec.rate_limit_ru_per_10s
        if limit:
            with sim._lock:
                now = time.monotonic()
                while self._window and self._window[0][0] <= now - 10:
                    self._window.popleft()
                used = sum(c for _, c in self._window)
                if used + cost > limit:
                    freed, wait = 0, 10.0
                    for stamp, c in self._window:
                        freed += c
                        if used - freed + cost <= limit:
                            wait = stamp + 10 - now
                            break
                    raise GraphError(
                        429,
                        "TooManyRequests",
                        "Please retry again later.",
                        {
                            "Retry-After": str(max(1, math.ceil(wait))),
                            "x-ms-throttle-limit-percentage": f"{min(1.8, (used + cost) / limit):.1f}",
                            "x-ms-throttle-scope": f"Tenant_Application/ReadOnly/{sim.tenant_id}/{sim.client_id}",
                            "x-ms-throttle-information": "ResourceUnitLimitExceeded",
                        },
                    )
                self._window.append((now, cost))
                if (used + cost) / limit > 0.8:
                    headers["x-ms-throttle-limit-percentage"] = f"{(used + cost) / limit:.1f}"
        draw, second = sim._draw()
        if draw < spec.throttle_rate:
            raise GraphError(
                429, "TooManyRequests", "Please retry again later.", {"Retry-After": _retry_after(spec.retry_after)}
            )
        if draw < spec.throttle_rate + spec.transient_rate:
            if second < 0.5:
                raise GraphError(
                    503,
                    "serviceNotAvailable",
                    "The service is temporarily unavailable. Try again later.",
                    {"Retry-After": _retry_after(spec.retry_after)},
                )
            raise GraphError(504, "UnknownError", "The gateway did not receive a timely response.")

    @staticmethod
    def _cost(req: Request) -> int:
        """Resource units as in §6 "Limits"."""
        path = req.path.lower().rstrip("/")
        cost = 2 if path == "/v1.0/users" else 3 if path == "/v1.0/subscribedskus" else 1
        if path.endswith("/transitivemembers"):
            cost = 5
        elif path.startswith("/v1.0/groups/") and path.endswith("/members"):
            cost = 3
        keys = {k.lower() for k in req.query}
        if "$select" in keys:
            cost -= 1
        if "$expand" in keys:
            cost += 1
        top = req.query.get("$top", "")
        if top.isdigit() and int(top) < 20:
            cost -= 1
        return max(1, cost)

    @staticmethod
    def _require(claims: dict[str, Any], allowed: frozenset[str]) -> None:
        if not allowed.intersection(claims.get("roles") or ()):
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")

    @staticmethod
    def _options(req: Request, allowed: set[str], resource: str) -> dict[str, str]:
        """System query options (lower-cased names); any other ``$`` option is a 400."""
        options: dict[str, str] = {}
        for key, value in req.pairs:
            name = key.lower()
            if not name.startswith("$"):
                continue
            if name not in allowed:
                if name == "$skip":
                    raise GraphError(400, "Request_BadRequest", "'$skip' is not supported by the service.")
                raise GraphError(
                    400, "Request_UnsupportedQuery", f"Query option '{key}' is not supported for '{resource}'."
                )
            if name in options:
                raise GraphError(400, "Request_BadRequest", f"Query option '{key}' was specified more than once.")
            options[name] = value
        return options

    @staticmethod
    def _select(raw: str, known: dict[str, str], type_name: str) -> list[str]:
        names = [p.strip() for p in raw.split(",")]
        if not raw.strip() or any(not p for p in names):
            raise GraphError(400, "BadRequest", f"Invalid $select: '{raw}'.")
        canonical: list[str] = []
        for name in names:
            lowered = name.lower()
            if type_name == "user" and lowered in NOT_LISTABLE_USER_PROPERTIES:
                raise GraphError(501, "NotImplemented", "This operation target is not yet supported.")
            if lowered not in known:
                raise GraphError(
                    400,
                    "Request_BadRequest",
                    f"Could not find a property named '{name}' on type 'microsoft.graph.{type_name}'.",
                )
            if known[lowered] not in canonical:
                canonical.append(known[lowered])
        return canonical

    def _ok(self, payload: Any) -> Response:
        return Response.json(200, payload, ODATA_JSON, {"OData-Version": "4.0"})

    # ------------------------------------------------------------------ routes

    def _route(self, req: Request, claims: dict[str, Any], headers: dict[str, str]) -> Response:
        segments = [s for s in req.path.split("/") if s]
        if not segments or segments[0] != "v1.0":
            raise GraphError(400, "BadRequest", f"Invalid version: {segments[0] if segments else ''}")
        rest = [s.lower() for s in segments[1:]]
        if rest == ["$batch"] and req.method == "POST":
            return self._batch(req)
        if req.method != "GET":
            raise GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.")
        # Applications, service principals, group members and owners, grants, PIM, managers: simulator/access.py
        routed = self.sim.inventory.apps.route(self, req, claims, segments[1:], rest)
        if routed is not None:
            return routed
        routed = self._route_inventory(req, claims, segments[1:], rest)
        if routed is not None:
            return routed
        if rest == ["organization"]:
            return self._organization(req, claims)
        if rest == ["subscribedskus"]:
            return self._subscribed_skus(req, claims)
        if rest == ["users"]:
            return self._users(req, claims)
        if rest == ["users", "$count"]:
            return self._users_count(req, claims)
        if len(rest) == 2 and rest[0] == "users":
            return self._user(req, claims, segments[2])
        segment = segments[1] if len(segments) > 1 else ""
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")

    def _organization(self, req: Request, claims: dict[str, Any]) -> Response:
        options = self._options(req, {"$select"}, "organization")
        self._require(claims, ORG_ROLES)
        org = self.sim.tenant.organization()
        context = f"{METADATA}#organization"
        if "$select" in options:
            props = self._select(options["$select"], self.org_properties, "organization")
            org = {"id": org["id"], **{p: org[p] for p in props}}
            context += f"({options['$select']})"
        return self._ok({"@odata.context": context, "value": [org]})

    def _subscribed_skus(self, req: Request, claims: dict[str, Any]) -> Response:
        options = self._options(req, {"$select"}, "subscribedSkus")
        self._require(claims, ORG_ROLES)
        skus = self.sim.tenant.subscribed_skus()
        context = f"{METADATA}#subscribedSkus"
        if "$select" in options:
            props = self._select(options["$select"], self.sku_properties, "subscribedSku")
            skus = [{"id": s["id"], **{p: s[p] for p in props}} for s in skus]
            context += f"({options['$select']})"
        return self._ok({"@odata.context": context, "value": skus})

    def _candidates(self, options: dict[str, str]) -> tuple[tuple[int, ...] | range, str]:
        raw = options.get("$filter")
        tenant = self.sim.tenant
        if raw is None:
            return tenant.all_indexes(), ""
        try:
            prefixes = parse_upn_prefix_filter(raw)
        except ValueError:
            raise GraphError(
                400,
                "Request_UnsupportedQuery",
                "Unsupported or invalid query filter clause specified (the simulator supports "
                "startswith(userPrincipalName,'...') joined with 'or').",
            ) from None
        if len(prefixes) > MAX_OR_CLAUSES:
            raise GraphError(400, "Request_UnsupportedQuery", _TOO_MANY_OR.format(n=len(prefixes)))
        return tenant.prefix_matches(prefixes, self.sim.spec.startswith_case_sensitive), raw

    def _identity_report(self, headers: dict[str, str] | None = None) -> None:
        """One request against the identity and access reports limit (when the spec sets one)."""
        limit = self.sim.spec.identity_reports_limit
        if not limit:
            return
        with self.sim._lock:
            now = time.monotonic()
            calls = self._identity_reports
            while calls and calls[0] <= now - IDENTITY_REPORTS_WINDOW:
                calls.popleft()
            if len(calls) >= limit:
                wait = max(1, math.ceil(calls[0] + IDENTITY_REPORTS_WINDOW - now))
                raise GraphError(429, "TooManyRequests", "Please retry again later.", {"Retry-After": str(wait)})
            calls.append(now)

    def _check_count(self, req: Request) -> None:
        if req.headers.get("consistencylevel", "").lower() != "eventual":
            raise GraphError(400, "Request_BadRequest", "$count is not currently supported.")

    def _users(self, req: Request, claims: dict[str, Any]) -> Response:
        sim = self.sim
        options = self._options(req, {"$select", "$top", "$filter", "$count", "$skiptoken"}, "users")
        props: list[str] = list(DEFAULT_USER_PROPERTIES)
        if "$select" in options:
            props = self._select(options["$select"], self.user_properties, "user")
            if "id" not in props:
                props.append("id")
        size = 100
        if "$top" in options:
            top = options["$top"]
            if not re.fullmatch(r"\d+", top) or not 1 <= int(top) <= 999:
                raise GraphError(
                    400,
                    "Request_UnsupportedQuery",
                    f"Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive.",
                )
            size = int(top)
        count = options.get("$count", "").lower()
        if count not in ("", "true", "false"):
            raise GraphError(400, "Request_BadRequest", f"Invalid value '{options['$count']}' for $count.")
        if count == "true":
            self._check_count(req)
        candidates, filter_text = self._candidates(options)
        self._require(claims, USER_ROLES)
        sign_in = "signInActivity" in props
        if sign_in:
            if "AuditLog.Read.All" not in (claims.get("roles") or ()):
                raise GraphError(
                    403,
                    "Authentication_MSGraphPermissionMissing",
                    "Calling principal does not have required MSGraph permissions AuditLog.Read.All",
                )
            if not sim.spec.premium:
                raise GraphError(
                    403,
                    "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                    "Neither tenant is B2C or tenant doesn't have premium license",
                )
            if sim.spec.sign_in_is_identity_report:
                self._identity_report()
            size = min(size, 120)
        # Keyset paging: the token holds the index of the next user, so users added, renamed or deleted
        # while a client pages neither shift nor repeat the others (an opaque cursor, like Graph's).
        after = self._read_skiptoken(options["$skiptoken"], filter_text) if "$skiptoken" in options else 0
        hook = sim.on_users_page
        if hook is not None:
            hook(sim, filter_text, after)
            candidates, _ = self._candidates(options)
        start = sim.tenant.page_from(candidates, after)
        page = candidates[start : start + size]
        context = f"{METADATA}#users" + (f"({options['$select']})" if "$select" in options else "")
        body: dict[str, Any] = {"@odata.context": context}
        if count == "true":
            body["@odata.count"] = len(candidates) + self.sim.spec.count_lag
        if start + len(page) < len(candidates):
            body["@odata.nextLink"] = self._next_link(req, self._make_skiptoken(page[-1] + 1, filter_text))
        tenant = sim.tenant
        eventual = req.headers.get("consistencylevel", "").lower() == "eventual"
        quirk = sign_in and sim.spec.sign_in_eventual_quirk and eventual
        users: list[Any] = (self._rendered(page, props) if sim.spec.render_cache and not quirk
                            else [tenant.user(i, props) for i in page])
        if quirk:
            # graph-facts §11 [ISSUE msgraph-sdk-powershell #1898]: under ConsistencyLevel: eventual (with
            # $count=true in the report; any eventual request here, to be strict) signInActivity comes back
            # empty for some users. Which ones is not known; every seventh here.
            for i, user in zip(page, users, strict=True):
                if i % 7 == 3:
                    user["signInActivity"] = None
        body["value"] = users
        with sim._lock:
            sim.users_cursors[filter_text] = max(sim.users_cursors.get(filter_text, -1), page[-1] if page else -1)
        return self._ok(body)

    def _rendered(self, page: Sequence[int], props: list[str]) -> list[orjson.Fragment]:
        """The users' JSON from the benchmark's render cache (TenantSpec.render_cache), built once per
        user and $select; emptied whenever a user is renamed or deleted."""
        tenant, key = self.sim.tenant, tuple(props)
        if self._cache_version != tenant.version:
            self._cache.clear()
            self._cache_version = tenant.version
        cache = self._cache.setdefault(key, {})
        out = []
        for i in page:
            data = cache.get(i)
            if data is None:
                data = cache[i] = orjson.dumps(tenant.user(i, props))
            out.append(orjson.Fragment(data))
        return out

    def _users_count(self, req: Request, claims: dict[str, Any]) -> Response:
        options = self._options(req, {"$filter"}, "users/$count")
        self._check_count(req)
        candidates, _ = self._candidates(options)
        self._require(claims, USER_ROLES)
        count = len(candidates) + self.sim.spec.count_lag
        return Response(200, str(count).encode(), {"Content-Type": "text/plain;charset=utf-8"})

    def _user(self, req: Request, claims: dict[str, Any], key: str) -> Response:
        options = self._options(req, {"$select"}, "user")
        props: list[str] = list(DEFAULT_USER_PROPERTIES)
        if "$select" in options:
            props = self._select(options["$select"], self.user_properties, "user")
            if "id" not in props:
                props.append("id")
        self._require(claims, USER_ROLES)
        index = self.sim.tenant.index_of(key)
        if index is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
            )
        if "signInActivity" in props and "AuditLog.Read.All" not in (claims.get("roles") or ()):
            raise GraphError(
                403,
                "Authentication_MSGraphPermissionMissing",
                "Calling principal does not have required MSGraph permissions AuditLog.Read.All",
            )
        context = f"{METADATA}#users" + (f"({options['$select']})" if "$select" in options else "") + "/$entity"
        return self._ok({"@odata.context": context, **self.sim.tenant.user(index, props)})

    # ------------------------------------------------------------------ paging

    def _mac(self, position: int, salt: bytes, filter_text: str) -> bytes:
        return hmac.new(self._skiptoken_key, f"{position}|{filter_text}".encode() + salt, hashlib.sha256).digest()[:12]

    def _make_skiptoken(self, position: int, filter_text: str) -> str:
        """Opaque, tamper-evident: RFNwdA-like base64 of position, salt and MAC."""
        salt = os.urandom(6)
        raw = b"DSpt" + position.to_bytes(4, "big") + salt + self._mac(position, salt, filter_text)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _read_skiptoken(self, token: str, filter_text: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raw = b""
        if len(raw) == 26 and raw[:4] == b"DSpt":
            position = int.from_bytes(raw[4:8], "big")
            if hmac.compare_digest(raw[14:], self._mac(position, raw[8:14], filter_text)):
                return position
        raise GraphError(400, "Request_BadRequest", "The specified page token value has expired or is invalid.")

    def _next_link(self, req: Request, token: str) -> str:
        base = self.sim.decoy_endpoint if self.sim.spec.foreign_next_link else self.sim.graph_endpoint
        kept = [
            part
            for part in req.raw_query.split("&")
            if part and (parse_qsl(part, keep_blank_values=True) or [("", "")])[0][0].lower() != "$skiptoken"
        ]
        kept.append(f"$skiptoken={quote(token, safe='')}")
        return f"{base}{req.path}?{'&'.join(kept)}"

    # ------------------------------------------------------------------ $batch (§10)

    def _batch(self, req: Request) -> Response:
        try:
            body = orjson.loads(req.body or b"null")
            items = body["requests"]
            if not isinstance(items, list):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise GraphError(400, "BadRequest", "Invalid batch payload format.") from None
        if not items:
            raise GraphError(400, "BadRequest", "Batch request must contain at least one request.")
        if len(items) > BATCH_LIMIT:
            raise GraphError(400, "BadRequest", f"Number of batch requests exceeds the maximum of {BATCH_LIMIT}.")
        ids = [str(i.get("id", "")).lower() if isinstance(i, dict) else "" for i in items]
        if "" in ids or len(set(ids)) != len(ids):
            raise GraphError(400, "BadRequest", "Batch request ids must be present and unique.")
        responses = []
        for item in items:
            responses.append(self._batch_item(req, item))
        # "Responses may be in any order": answer in a scrambled but deterministic order.
        responses.sort(key=lambda r: hashlib.sha256(str(r["id"]).encode()).digest())
        return self._ok({"responses": responses})

    def _batch_item(self, outer: Request, item: dict[str, Any]) -> dict[str, Any]:
        method = str(item.get("method", "")).upper()
        url = str(item.get("url", ""))
        if not url or "://" in url or url.lstrip("/").lower().startswith("$batch"):
            return {"id": item["id"], "status": 400, "headers": {"Content-Type": "application/json"},
                    "body": {"error": {"code": "BadRequest", "message": "Invalid request URL.",
                                       "innerError": {"date": _graph_date(), "request-id": new_guid(),
                                                      "client-request-id": new_guid()}}}}
        parts = urlsplit("/" + url.lstrip("/"))
        headers = {"authorization": outer.headers.get("authorization", "")}
        headers.update({str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()})
        inner = Request(method=method, path="/v1.0" + parts.path, raw_query=parts.query,
                        query=dict(parse_qsl(parts.query, keep_blank_values=True)), headers=headers, body=b"")
        response = self._handle(inner)
        kept = {k: v for k, v in response.headers.items()
                if k.lower() in ("content-type", "retry-after", "cache-control", "x-ms-resource-unit",
                                 "odata-version", "location")}
        ctype = response.headers.get("Content-Type", "")
        payload: Any = orjson.loads(response.body) if "json" in ctype and response.body else \
            response.body.decode("utf-8", "replace")
        return {"id": item["id"], "status": response.status, "headers": kept, "body": payload}

    # ------------------------------------------------------------------ inventory routes

    def _deny(self, claims: dict[str, Any], allowed: frozenset[str], code: str = "Authorization_RequestDenied",
              message: str = "Insufficient privileges to complete the operation.") -> None:
        if not allowed.intersection(claims.get("roles") or ()):
            raise GraphError(403, code, message)

    def _route_inventory(self, req: Request, claims: dict[str, Any], raw: list[str], rest: list[str]):
        inv = self.sim.inventory
        if rest == ["directory", "subscriptions"]:
            self._options(req, {"$select", "$top", "$skiptoken"}, "subscriptions")
            self._deny(claims, SUBSCRIPTION_ROLES)
            return self._list(req, inv.subscriptions, "directory/subscriptions", 100, 999)
        if rest == ["groups"]:
            self._options(req, {"$select", "$top", "$skiptoken"}, "groups")
            self._deny(claims, GROUP_ROLES)
            return self._list(req, inv.groups, "groups", 100, 999, type_name="group")
        if rest[:2] == ["rolemanagement", "directory"] and rest[2:] == ["roledefinitions"]:
            self._options(req, {"$select", "$top", "$skiptoken"}, "roleDefinitions")
            self._deny(claims, ROLE_MANAGEMENT_ROLES)
            return self._list(req, inv.role_definitions, "roleManagement/directory/roleDefinitions", 100, 999)
        if rest[:2] == ["rolemanagement", "directory"] and rest[2:] == ["roleassignments"]:
            return self._role_assignments(req, claims)
        if rest == ["devices"]:
            self._options(req, {"$select", "$top", "$skiptoken"}, "devices")
            self._deny(claims, DEVICE_ROLES)
            return self._list(req, inv.devices, "devices", 100, 999, type_name="device")
        if rest[:1] == ["devicemanagement"] and rest[1:] in (["manageddevices"], ["detectedapps"]):
            self._options(req, {"$select", "$top", "$skiptoken"}, raw[1])
            scopes = ", ".join(sorted(INTUNE_ROLES))
            self._deny(claims, INTUNE_ROLES, "Forbidden", "Application is not authorized to perform this operation. "
                       f"Application must have one of the following scopes: {scopes}")
            items = inv.managed_devices if rest[1] == "manageddevices" else inv.detected_apps
            name = "managedDevices" if rest[1] == "manageddevices" else "detectedApps"
            return self._list(req, items, f"deviceManagement/{name}", 1000, 1000, odata_type=True)
        if rest == ["reports", "authenticationmethods", "userregistrationdetails"]:
            self._options(req, {"$select", "$top", "$skiptoken", "$filter", "$orderby"}, "userRegistrationDetails")
            if "AuditLog.Read.All" not in (claims.get("roles") or ()):
                raise GraphError(403, "Authentication_MSGraphPermissionMissing",
                                 "Calling principal does not have required MSGraph permissions AuditLog.Read.All")
            if not self.sim.spec.premium:
                raise GraphError(403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                                 "Neither tenant is B2C or tenant doesn't have premium license")
            directory_read = {"Directory.Read.All", "Directory.ReadWrite.All"} & set(claims.get("roles") or ())
            if self.sim.spec.registration_needs_directory_read and not directory_read:
                # graph-facts §5/§11 [ISSUE microsoft-graph-docs #9269, #12911, #2789]: the premium-licence check
                # behind these reports failed until the app had Directory.Read.All.
                raise GraphError(403, "Authentication_ApplicationHasNoDirectoryReadAccess",
                                 "Failed to do premium license check from ADGraph")
            self._identity_report()
            return self._list(req, inv.registration_details, "reports/authenticationMethods/userRegistrationDetails",
                              100, 999)
        if rest == ["admin", "reportsettings"]:
            self._options(req, {"$select"}, "reportSettings")
            self._deny(claims, REPORT_SETTINGS_ROLES)
            entity = {"@odata.type": "#microsoft.graph.adminReportSettings",
                      "displayConcealedNames": self.sim.spec.report_names_concealed}
            if self.sim.spec.report_settings_wrapped:  # the v1.0 doc sample's shape
                return self._ok({"value": entity})
            return self._ok({"@odata.context": f"{METADATA}#admin/reportSettings/$entity", "id": "default",
                             "displayConcealedNames": self.sim.spec.report_names_concealed})
        if len(rest) == 2 and rest[0] == "reports" and _REPORT_CALL.match(raw[1]):
            return self._report(req, claims, raw[1])
        return None

    def _list(self, req: Request, items: Any, context: str, page: int, max_top: int, *, type_name: str = "",
              render: Any = None, odata_type: bool = False) -> Response:
        """One page of a collection: $select, $top, opaque $skiptoken bound to the query."""
        options = {k.lower(): v for k, v in req.pairs if k.startswith("$")}
        size = page
        if "$top" in options:
            top = options["$top"]
            if not re.fullmatch(r"\d+", top) or not 1 <= int(top) <= max_top:
                raise GraphError(400, "Request_UnsupportedQuery",
                                 f"Invalid page size specified: '{top}'. Must be between 1 and {max_top} inclusive.")
            size = int(top)
        all_items = items()
        select = options.get("$select")
        bound = f"{req.path.lower()}|{select or ''}"
        start = self._read_skiptoken(options["$skiptoken"], bound) if "$skiptoken" in options else 0
        chunk = all_items[start : start + size]
        objects = [render(x) for x in chunk] if render else list(chunk)
        if select is not None:
            names = [p.strip() for p in select.split(",")]
            if not select.strip() or any(not n for n in names):
                raise GraphError(400, "BadRequest", f"Invalid $select: '{select}'.")
            if type_name and objects:
                known = {p.lower() for p in objects[0]}
                for n in names:
                    if n.lower() not in known:
                        raise GraphError(400, "Request_BadRequest", f"Could not find a property named '{n}' on "
                                         f"type 'microsoft.graph.{type_name}'.")
            wanted = {n.lower() for n in names} | {"id"}
            objects = [{k: v for k, v in o.items() if k.lower() in wanted or (odata_type and k == "@odata.type")}
                       for o in objects]
        body: dict[str, Any] = {"@odata.context": f"{METADATA}#{context}" + (f"({select})" if select else "")}
        if start + len(chunk) < len(all_items):
            body["@odata.nextLink"] = self._next_link(req, self._make_skiptoken(start + len(chunk), bound))
        body["value"] = objects
        return self._ok(body)

    def _role_assignments(self, req: Request, claims: dict[str, Any]) -> Response:
        options = self._options(req, {"$select", "$top", "$skiptoken", "$expand"}, "roleAssignments")
        self._deny(claims, ROLE_MANAGEMENT_ROLES)
        inv = self.sim.inventory
        expand = [e.strip().lower() for e in options.get("$expand", "").split(",") if e.strip()]
        for e in expand:
            if e not in ("principal", "roledefinition"):
                raise GraphError(400, "BadRequest", f"Could not find a property named '{e}' on type "
                                 "'microsoft.graph.unifiedRoleAssignment'.")
        definitions = {d["id"]: d for d in inv.role_definitions()}

        def render(pair: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
            assignment, principal = pair
            out = dict(assignment)
            if "principal" in expand:
                out["principal"] = dict(principal)
            if "roledefinition" in expand:
                out["roleDefinition"] = definitions[assignment["roleDefinitionId"]]
            return out

        context = "roleManagement/directory/roleAssignments"
        if expand:
            names = ("principal()" if e == "principal" else "roleDefinition()" for e in expand)
            context += "(" + ",".join(names) + ")"
        return self._list(req, inv.role_assignments, context, 100, 999, render=render)

    def _report(self, req: Request, claims: dict[str, Any], segment: str) -> Response:
        """§4: 302 to a pre-authenticated download URL on another host; 14 requests per 10 min per report."""
        from .usage import PERIODS, REPORT_NAMES, REPORTS

        match = _REPORT_CALL.match(segment)
        assert match is not None
        name = REPORT_NAMES.get(match.group(1).lower())
        if name is None:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{match.group(1)}'.")
        _columns, takes_period = REPORTS[name]
        args = (match.group(2) or "").strip()
        period = None
        if takes_period:
            found = re.fullmatch(r"period\s*=\s*'([^']*)'", args)
            if not found:
                raise GraphError(400, "BadRequest", f"The parameter 'period' is required for {name}.")
            period = found.group(1)
            if period not in PERIODS:
                raise GraphError(400, "BadRequest", f"Invalid value '{period}' for parameter 'period'. Supported "
                                 "values are D7, D30, D90 and D180.")
        elif args:
            raise GraphError(400, "BadRequest", f"{name} takes no parameters.")
        self._options(req, {"$format"}, name)
        self._deny(claims, REPORT_ROLES, "S2SUnauthorized", "Invalid permissions.")
        limit = self.sim.spec.report_rate_limit
        if limit:
            with self.sim._lock:
                now = time.monotonic()
                calls = self._report_calls.setdefault(name, deque())
                while calls and calls[0] <= now - REPORT_WINDOW:
                    calls.popleft()
                if len(calls) >= limit:
                    wait = max(1, math.ceil(calls[0] + REPORT_WINDOW - now))
                    raise GraphError(429, "TooManyRequests", "Please retry again later.", {"Retry-After": str(wait)})
                calls.append(now)
        url = self.sim.register_download(name, period, self.sim.spec.report_names_concealed)
        return Response(302, b"", {"Content-Type": "text/plain", "Location": url})
