"""App-only sign-in to Microsoft Graph and what the token says about granted permissions.

azure-identity does the client-credentials flow and caches/refreshes the token; this module
adds the things a connector's users need: the client secret fetched lazily from Key Vault,
the granted roles read from the token, and token failures mapped to the exact fix.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from connector.config import Settings

log = logging.getLogger("m365_connector")

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}

# AADSTS code -> (what it means, what to do). Codes and texts per Microsoft identity platform errors.
AADSTS_REMEDIES: dict[str, tuple[str, str]] = {
    "7000215": ("wrong client secret",
                "The secret is not a valid secret of this app registration. In the Entra admin center open the app "
                "registration, Certificates & secrets, create a new client secret and store its Value (not its "
                "Secret ID) in Key Vault (M365_CLIENT_SECRET_NAME) or M365_CLIENT_SECRET."),
    "7000222": ("expired client secret",
                "The client secret has expired. Create a new client secret on the app registration (Certificates & "
                "secrets), store its Value in Key Vault under M365_CLIENT_SECRET_NAME, and set the Key Vault "
                "secret's expiry date to the new secret's expiry."),
    "90002": ("unknown tenant",
              "The tenant in M365_TENANT_ID was not found. Check the Directory (tenant) ID and that M365_CLOUD "
              "matches the tenant's cloud."),
    "900023": ("invalid tenant",
               "M365_TENANT_ID is neither a tenant ID nor a valid domain. Use the Directory (tenant) ID."),
    "700016": ("application not found in the tenant",
               "No app with M365_CLIENT_ID exists in this tenant. Check M365_CLIENT_ID and M365_TENANT_ID; for a "
               "multi-tenant app, an administrator of this tenant must grant admin consent first."),
    "7000216": ("no client secret sent",
                "No secret was sent. Set M365_CLIENT_SECRET, or KEY_VAULT_URL and M365_CLIENT_SECRET_NAME."),
    "70011": ("invalid scope",
              "The Graph scope was rejected. Check M365_CLOUD and M365_GRAPH_ENDPOINT match the tenant's cloud."),
    "700024": ("client assertion out of its validity window", "Check the host's clock."),
    "700027": ("certificate not accepted",
               "The app registration does not hold this certificate's public key (or the signature is invalid). "
               "Upload the certificate (.cer) under Certificates & secrets, Certificates, or point "
               "M365_CLIENT_CERTIFICATE_NAME at the certificate that is registered."),
    "700211": ("no matching federated credential",
               "The app registration has no federated credential for this managed identity. Add one (Certificates "
               "& secrets, Federated credentials, 'Managed identity'): issuer https://login.microsoftonline.com/"
               "<tenant id>/v2.0, subject = the identity's object (principal) ID, audience "
               "api://AzureADTokenExchange; see docs/deploy.md."),
    "700213": ("no matching federated credential subject",
               "The federated credential's subject must be the managed identity's object (principal) ID."),
    "70021": ("no matching federated credential",
              "Add a federated credential for the Function's managed identity to the app registration."),
}

# Audience of the managed identity's token that the app registration's federated credential trusts.
TOKEN_EXCHANGE_AUDIENCE = {
    "global": "api://AzureADTokenExchange",
    "usgov": "api://AzureADTokenExchangeUSGov",
    "usgovdod": "api://AzureADTokenExchangeUSGov",
    "china": "api://AzureADTokenExchangeChina",
}


@dataclass
class TokenFailure(Exception):
    """No Graph token could be had; carries what the user needs to fix it, never the secret."""

    code: str  # AADSTS code, or a connector code such as "network", "keyvault"
    reason: str
    remedy: str
    detail: str = ""

    def __str__(self) -> str:
        prefix = f"AADSTS{self.code}" if self.code.isdigit() else self.code
        return f"{prefix} ({self.reason}): {self.remedy}"

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code if not self.code.isdigit() else f"AADSTS{self.code}",
                "reason": self.reason, "remedy": self.remedy, "detail": self.detail}


@dataclass
class SecretInfo:
    """The credential material of the app registration; never shown, logged or stored."""

    value: str
    source: str  # "environment", "keyvault" or "managed identity"
    expires_on: datetime | None = None
    kind: str = "secret"  # secret, certificate (PEM or base64 PFX) or federated (no value)
    content_type: str | None = None

    def __repr__(self) -> str:  # never show the value
        return f"SecretInfo(kind={self.kind!r}, source={self.source!r}, expires_on={self.expires_on!r})"


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in _LOOPBACK


def read_client_secret(settings: Settings) -> SecretInfo:
    """The app's credential for the configured sign-in mode, read lazily at run time: the secret from
    the environment (local runs) or Key Vault, a certificate from Key Vault, or nothing (federated)."""
    if settings.auth_mode == "federated":
        return SecretInfo("", "managed identity", kind="federated")
    if settings.auth_mode == "secret" and settings.client_secret:
        return SecretInfo(settings.client_secret, "environment")
    name = settings.certificate_name if settings.auth_mode == "certificate" else settings.secret_name
    setting = "M365_CLIENT_CERTIFICATE_NAME" if settings.auth_mode == "certificate" else "M365_CLIENT_SECRET_NAME"
    what = "certificate" if settings.auth_mode == "certificate" else "client secret"
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    vault = settings.key_vault_url or ""
    # Key Vault clients check that the challenge resource matches the vault's domain; a local
    # simulator on a loopback address cannot have a *.vault.azure.net name.
    client = SecretClient(vault, DefaultAzureCredential(), verify_challenge_resource=not _is_loopback(vault))
    try:
        with client:
            secret = client.get_secret(name or "")
    except ResourceNotFoundError:
        raise TokenFailure("keyvault", f"{what} not found",
                           f"Key Vault {vault} has no {what} named {name!r}. Store the app registration's {what} "
                           f"there, or set {setting} to its name.")
    except ClientAuthenticationError as exc:
        raise TokenFailure("keyvault", "no identity for Key Vault",
                           "The Function's managed identity (or your Azure CLI login when local) could not get a "
                           f"token for Key Vault {vault}: enable the managed identity and grant it the 'Key Vault "
                           "Secrets User' role on the vault.", detail=_first_line(str(exc)))
    except HttpResponseError as exc:
        if exc.status_code == 403:
            raise TokenFailure("keyvault", "access to Key Vault denied",
                               f"The identity may not read secrets of {vault}: grant it the 'Key Vault Secrets "
                               "User' role on the vault (RBAC).")
        raise TokenFailure("keyvault", "Key Vault error", f"Reading {name!r} from {vault} failed with HTTP "
                           f"{exc.status_code}; check KEY_VAULT_URL.", detail=_first_line(str(exc)))
    except Exception as exc:  # network errors: name the setting to check
        raise TokenFailure("keyvault", "Key Vault unreachable",
                           f"Could not reach KEY_VAULT_URL {vault}: check the URL and network access.",
                           detail=_first_line(str(exc)))
    if not secret.value:
        raise TokenFailure("keyvault", f"empty {what}", f"{name!r} in {vault} is empty.")
    if secret.value.startswith("@Microsoft.KeyVault("):
        raise TokenFailure("keyvault", "unresolved Key Vault reference",
                           f"{name!r} holds an unresolved Key Vault reference; store the value itself.")
    return SecretInfo(secret.value, "keyvault", secret.properties.expires_on,
                      kind="certificate" if settings.auth_mode == "certificate" else "secret",
                      content_type=secret.properties.content_type)


def _certificate_bytes(secret: SecretInfo) -> bytes:
    """Key Vault hands out a certificate's secret as PEM text or as base64 PKCS#12."""
    if "BEGIN" in secret.value:
        return secret.value.encode()
    try:
        return base64.b64decode(secret.value)
    except ValueError:
        raise TokenFailure("keyvault", "unreadable certificate",
                           "M365_CLIENT_CERTIFICATE_NAME must name a Key Vault certificate (PEM or PKCS#12) with its "
                           "private key.")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def token_failure_from(exc: BaseException, authority: str | None = None) -> TokenFailure:
    """Map an azure-identity error to its AADSTS remedy, or a connection failure to the setting to check."""
    if isinstance(exc, TokenFailure):
        return exc
    text = str(exc)
    if authority and "AADSTS" not in text:
        from connector.graph.unreachable import authority_failure

        unreachable = authority_failure(exc, authority)
        if unreachable is not None:
            reason = ("token endpoint certificate not trusted" if unreachable.code == "authority_tls"
                      else "token endpoint unreachable")
            return TokenFailure(unreachable.code, reason, unreachable.line(), detail=_first_line(text))
    if "Unable to get authority configuration" in text:
        # MSAL reads the tenant's OpenID configuration first; an unknown tenant fails there (AADSTS90002).
        text = "AADSTS90002: " + text
    match = re.search(r"AADSTS(\d+)", text)
    if match and match.group(1) in AADSTS_REMEDIES:
        reason, remedy = AADSTS_REMEDIES[match.group(1)]
        return TokenFailure(match.group(1), reason, remedy, detail=_first_line(text[match.start():]))
    if match:
        return TokenFailure(match.group(1), "sign-in failed",
                            "See the AADSTS code in Microsoft's error reference (https://login.microsoftonline.com/"
                            f"error?code={match.group(1)}).", detail=_first_line(text[match.start():]))
    return TokenFailure("network", "token endpoint unreachable",
                        "Could not get a token from the authority host; check M365_CLOUD / M365_AUTHORITY_HOST, "
                        "network access and custom CA settings (SSL_CERT_FILE / REQUESTS_CA_BUNDLE).",
                        detail=_first_line(text))


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT access token. Not verified: Graph verifies it; we only read `roles`."""
    try:
        payload = token.split(".")[1]
        return orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


# Token requests of a caller that waits (azure-core's default is 300 s to connect and 3 retries with backoff).
QUICK_TRANSPORT = {"connection_timeout": 5, "read_timeout": 10, "retry_total": 0}

# A token with more than this left is reused without asking azure-identity; with less, azure-identity is
# asked and refreshes it (its own refresh window is the last 5 minutes of a token's life).
REUSE_SECONDS = 300


class GraphCredential:
    """azure-identity's client-secret credential, callable from asyncio without blocking the loop.

    The sync credential (requests transport) honours REQUESTS_CA_BUNDLE and caches tokens; calls
    are serialised so a burst of concurrent requests triggers one token request, not many.
    """

    def __init__(self, settings: Settings, secret: SecretInfo, *, quick: bool = False):
        from azure.identity import CertificateCredential, ClientAssertionCredential, ClientSecretCredential

        self._settings = settings
        self.secret = secret
        common: dict[str, Any] = {"authority": settings.authority_host,
                                  "disable_instance_discovery": not settings.instance_discovery}
        if quick:  # a caller waiting for an answer (check, GET /api/permissions): an unreachable authority in seconds
            common.update(QUICK_TRANSPORT)
        self._identity = None
        if secret.kind == "federated":
            from azure.identity import ManagedIdentityCredential

            # AZURE_CLIENT_ID selects the user-assigned identity, as for every Azure SDK client.
            self._identity = ManagedIdentityCredential(client_id=os.environ.get("AZURE_CLIENT_ID") or None)
            audience = TOKEN_EXCHANGE_AUDIENCE.get(settings.cloud, TOKEN_EXCHANGE_AUDIENCE["global"])
            self._credential = ClientAssertionCredential(
                settings.tenant_id, settings.client_id, lambda: self._assertion(audience), **common)
        elif secret.kind == "certificate":
            self._credential = CertificateCredential(
                settings.tenant_id, settings.client_id, certificate_data=_certificate_bytes(secret), **common)
        else:
            self._credential = ClientSecretCredential(settings.tenant_id, settings.client_id, secret.value, **common)
        self._lock = threading.Lock()
        self._alock: asyncio.Lock | None = None
        self._tokens: dict[tuple[str, ...], Any] = {}  # scopes -> the last AccessToken azure-identity gave

    def _assertion(self, audience: str) -> str:
        try:
            return self._identity.get_token(f"{audience}/.default").token
        except Exception as exc:
            raise TokenFailure("managed_identity", "no managed identity token",
                               "M365_AUTH_MODE=federated signs in with the Function's managed identity, which could "
                               "not give a token: enable the identity (and set AZURE_CLIENT_ID to a user-assigned "
                               "identity's client ID), or use M365_AUTH_MODE=secret for local runs.",
                               detail=_first_line(str(exc)))

    def get_token_sync(self, *scopes: str, **kwargs: Any):
        with self._lock:
            try:
                return self._credential.get_token(*(scopes or (self._settings.graph_scope,)), **kwargs)
            except Exception as exc:
                raise token_failure_from(exc, self._settings.authority_host) from None

    async def get_token(self, *scopes: str, **kwargs: Any):
        """Every Graph request asks for the token. While the one in hand has more than REUSE_SECONDS left it is
        handed back at once; otherwise (and for a claims challenge) azure-identity is asked in a thread, one
        call at a time. A thread hop per request held up every request behind the GIL and the lock: at 16
        requests in flight it cost each about 40 ms (docs/performance.md)."""
        kwargs.pop("enable_cae", None)  # app-only tokens: CAE is not used
        kwargs = {k: v for k, v in kwargs.items() if v is not None}  # the SDK passes claims=None
        key = scopes or (self._settings.graph_scope,)
        if not kwargs and (held := self._reusable(key)) is not None:
            return held
        if self._alock is None:
            self._alock = asyncio.Lock()
        async with self._alock:
            if not kwargs and (held := self._reusable(key)) is not None:  # got while this call waited its turn
                return held
            token = await asyncio.to_thread(self.get_token_sync, *scopes, **kwargs)
            if not kwargs:
                self._tokens[key] = token
        return token

    def _reusable(self, key: tuple[str, ...]) -> Any:
        held = self._tokens.get(key)
        return held if held is not None and held.expires_on - time.time() > REUSE_SECONDS else None

    def roles(self) -> tuple[frozenset[str], dict[str, Any]]:
        token = self.get_token_sync(self._settings.graph_scope)
        claims = token_claims(token.token)
        return frozenset(claims.get("roles") or ()), claims

    def close(self) -> None:
        self._credential.close()
        if self._identity is not None:
            self._identity.close()


def secret_expiry_warning(secret: SecretInfo, now: datetime | None = None, days: int = 30) -> str | None:
    """A warning when the Key Vault copy of the credential expires soon; the run goes on."""
    if not secret.expires_on:
        return None
    now = now or datetime.now(UTC)
    left = (secret.expires_on - now).total_seconds() / 86400
    if left > days:
        return None
    when = secret.expires_on.strftime("%Y-%m-%d")
    what = "certificate" if secret.kind == "certificate" else "secret"
    state = "expired on" if left <= 0 else "expires on"
    return (f"The client {what} in Key Vault {state} {when} ({max(left, 0):.0f} days left). Create a new client "
            f"{what} on the app registration (Certificates & secrets) and store it in Key Vault, with its expiry "
            "date, before then.")
