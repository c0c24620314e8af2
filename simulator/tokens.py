"""Access tokens shaped like Entra's v1 app-only JWTs, signed with a per-simulator key.

Clients never verify the signature (the header says RS256 like Entra's), but the
simulated Graph and Key Vault do: they accept only tokens this simulator issued, still
valid, for their own audience.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
import uuid
from typing import Any

import orjson

GRAPH_RESOURCE = "https://graph.microsoft.com"
VAULT_RESOURCE = "https://vault.azure.net"
TOKEN_EXCHANGE_RESOURCE = "api://AzureADTokenExchange"
# Aliases a client may name in `scope` (v2 `{resource}/.default`) mapped to the token's `aud`.
RESOURCE_ALIASES = {
    GRAPH_RESOURCE: GRAPH_RESOURCE,
    "00000003-0000-0000-c000-000000000000": GRAPH_RESOURCE,
    VAULT_RESOURCE: VAULT_RESOURCE,
    "cfa8b339-82a2-471a-a3c9-0fc0be7a4093": VAULT_RESOURCE,
    # graph-facts §7 "National clouds": the simulator can play a national cloud's Entra and Graph too
    # (token scope = that cloud's Graph host + /.default).
    "https://graph.microsoft.us": GRAPH_RESOURCE,
    "https://dod-graph.microsoft.us": GRAPH_RESOURCE,
    "https://microsoftgraph.chinacloudapi.cn": GRAPH_RESOURCE,
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Issues and verifies the simulator's JWTs (HMAC-SHA256 under a random per-run key)."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self._key = os.urandom(32)

    def issue(
        self, *, audience: str, app_id: str, object_id: str, lifetime: int, roles: frozenset[str] | None = None
    ) -> tuple[str, int]:
        """A signed token and its expiry (epoch seconds). ``roles`` empty/None omits the claim, as Entra does."""
        now = int(time.time())
        exp = now + int(lifetime)
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": exp,
            "aio": _b64(os.urandom(24)),
            "app_displayname": "M365 inventory connector",
            "appid": app_id,
            "appidacr": "1",
            "idp": f"https://sts.windows.net/{self.tenant_id}/",
            "idtyp": "app",
            "oid": object_id,
            "rh": "0.AAAA" + _b64(os.urandom(12)) + ".",
            "sub": object_id,
            "tenant_region_scope": "EU",
            "tid": self.tenant_id,
            "uti": _b64(os.urandom(16)),
            "ver": "1.0",
            "xms_tcdt": 1457947613,
        }
        if roles:
            claims["roles"] = sorted(roles)
        header = _b64(orjson.dumps({"typ": "JWT", "alg": "RS256", "kid": "sim"}))
        payload = _b64(orjson.dumps(claims))
        signing_input = f"{header}.{payload}".encode()
        signature = _b64(hmac.new(self._key, signing_input, hashlib.sha256).digest())
        return f"{header}.{payload}.{signature}", exp

    def verify(self, token: str, audiences: tuple[str, ...]) -> tuple[dict[str, Any] | None, str]:
        """(claims, "") for a valid token for one of ``audiences``, else (None, reason) with reason in
        {"malformed", "signature", "expired", "audience", "tenant"}; the claims come back with "audience"."""
        parts = token.split(".")
        if len(parts) != 3:
            return None, "malformed"
        try:
            claims = orjson.loads(_unb64(parts[1]))
            signature = _unb64(parts[2])
        except (ValueError, orjson.JSONDecodeError):
            return None, "malformed"
        if not isinstance(claims, dict):
            return None, "malformed"
        expected = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            return None, "signature"
        if claims.get("exp", 0) <= time.time():
            return None, "expired"
        if claims.get("tid") != self.tenant_id:
            return None, "tenant"
        if claims.get("aud") not in audiences:
            return claims, "audience"
        return claims, ""


def new_guid() -> str:
    """A fresh random GUID (request ids, trace ids)."""
    return str(uuid.uuid4())
