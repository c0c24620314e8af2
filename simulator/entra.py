"""The Entra ID stand-in: v2 endpoints for client credentials (OIDC discovery, instance discovery, token)
with Entra's AADSTS errors, client secrets, certificate assertions and federated (managed identity)
assertions (graph-facts §7).
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .tokens import GRAPH_RESOURCE, RESOURCE_ALIASES, TOKEN_EXCHANGE_RESOURCE, new_guid
from .web import PLAIN_JSON, Request, Response

if TYPE_CHECKING:
    from .state import SimulatorState

OIDC_PATH = "v2.0/.well-known/openid-configuration"


class LoginService:
    """Entra ID v2 endpoints for client credentials: OIDC discovery, instance discovery, token (§7)."""

    def __init__(self, sim: SimulatorState) -> None:
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
        refused = self._check_client(req, tenant, form)
        if refused is not None:
            return refused
        audience = self._audience(req, form)
        if isinstance(audience, Response):
            return audience
        refused = self._check_credential(req, form)
        if refused is not None:
            return refused
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

    def _check_client(self, req: Request, tenant: str, form: dict[str, str]) -> Response | None:
        """The grant type (client credentials only) and the client id (the connector's app only)."""
        grant = form.get("grant_type", "")
        if grant != "client_credentials":
            return self._error(
                req, 400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'."
            )
        client_id = form.get("client_id", "")
        # An app never consented in the tenant has no service principal there: the same AADSTS700016 (§7).
        if client_id.lower() != self.sim.client_id or not self.sim.spec.app_consented:
            return self._error(
                req,
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can "
                "happen if the application has not been installed by the administrator of the tenant or consented "
                "to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
            )
        return None

    def _audience(self, req: Request, form: dict[str, str]) -> str | Response:
        """The token's audience from a single ``{resource}/.default`` scope, or Entra's invalid_scope error."""
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
        return audience

    def _check_credential(self, req: Request, form: dict[str, str]) -> Response | None:
        """The client's proof: a certificate assertion, a federated assertion or a client secret."""
        sim, spec = self.sim, self.sim.spec
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
        return None


def _assertion_header(assertion: str) -> dict[str, Any]:
    try:
        head = assertion.split(".")[0]
        value = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, IndexError):
        return {}
    return value if isinstance(value, dict) else {}


def _check_certificate_assertion(sim: SimulatorState, assertion: str) -> tuple[int, str] | None:
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

