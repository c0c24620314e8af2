"""The Key Vault stand-in: secrets (and certificates read as secrets) behind the Bearer challenge."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .tokens import VAULT_RESOURCE, new_guid
from .web import PLAIN_JSON, Request, Response

if TYPE_CHECKING:
    from .state import SimulatorState


class KeyVaultService:
    """Key Vault secrets: ``GET /secrets/{name}[/{version}]`` behind the Bearer challenge."""

    def __init__(self, sim: SimulatorState) -> None:
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
