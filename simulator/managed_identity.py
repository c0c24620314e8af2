"""The App Service managed identity endpoint: tokens for the app's managed identity (Key Vault, Graph,
token exchange for federated credentials)."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from .tokens import new_guid
from .web import PLAIN_JSON, Request, Response

if TYPE_CHECKING:
    from .state import SimulatorState


class IdentityService:
    """App Service managed identity endpoint, protocol 2019-08-01 (what MSAL's
    ``_obtain_token_on_app_service`` sends: GET ?api-version&resource, header X-IDENTITY-HEADER)."""

    def __init__(self, sim: SimulatorState) -> None:
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
