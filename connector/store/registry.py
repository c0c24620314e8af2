"""The tenant registry: which tenants one deployment collects, kept in the deployment's own snapshot store.

One JSON document, `registry/tenants.json`, beside the snapshots: a file in SNAPSHOT_DIR locally, a blob in the
snapshot container of the Function app's storage account on Azure (no other store to deploy or secure). Changes
are read-modify-write under the document's ETag, so two `tenants add` at once never lose one another.

Each entry: the tenant (GUID or domain), and optionally its cloud, datasets, domain filter, schedule slot
(minutes after each M365_SCHEDULE tick) and how it signs in (the deployment's multi-tenant app by default, or an
app registration of its own whose secret or certificate is named in Key Vault). What an entry leaves out is the
deployment's setting. Without the document the registry is the one tenant of M365_TENANT_ID, so a single-tenant
deployment works exactly as before. An entry is turned into the connector's Settings through the same
validation as the app settings, and any problem names the entry and its field.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from connector.config import CLOUDS, ConfigError, Settings, load_settings
from connector.store.contract import Store

REGISTRY_PATH = "registry/tenants.json"
SPREAD_MINUTES = 30  # tenants without a slot are spread over this many minutes after each tick (by their id)
MAX_SLOT = 45  # minutes: a run queued longer than QUEUED_STALE (1 h) is given up, so a slot stays well below it
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")
_KV_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
FIELDS = ("tenant", "cloud", "datasets", "domains", "slot", "auth", "addedAt")
AUTH_FIELDS = ("clientId", "secretName", "certificateName")
# Settings an entry's fields become, to name the field when the settings' validation finds a problem.
_FIELD_OF = {"M365_TENANT_ID": "tenant", "M365_CLOUD": "cloud", "M365_DATASETS": "datasets",
             "M365_DOMAINS": "domains", "M365_CLIENT_ID": "auth.clientId", "M365_CLIENT_SECRET_NAME": "auth.secretName",
             "M365_CLIENT_CERTIFICATE_NAME": "auth.certificateName"}


# Token errors that mean the app is not consented in the tenant: AADSTS700016 "not found in the directory ... not
# been installed by the administrator of the tenant or consented to" (graph-facts §7), AADSTS7000229 (the app has
# no service principal in the tenant), AADSTS65001 (consent missing).
CONSENT_CODES = frozenset({"AADSTS700016", "AADSTS7000229", "AADSTS65001"})


def needs_consent(error: Mapping[str, Any] | None) -> bool:
    """Whether a run's or check's error (`code` AADSTS...) says the tenant has not consented to the app."""
    return bool(error) and str((error or {}).get("code")) in CONSENT_CODES


class RegistryError(ValueError):
    """The registry or one of its entries is malformed; the message names the entry and the field."""


class NotRegistered(LookupError):
    """A tenant that the registry does not list."""


@dataclass(frozen=True)
class TenantEntry:
    """One registered tenant; None fields take the deployment's settings."""

    tenant: str
    cloud: str | None = None
    datasets: tuple[str, ...] | None = None  # None: M365_DATASETS; ("*",) every default dataset
    domains: tuple[str, ...] | None = None  # None: M365_DOMAINS; ("*",) every user
    slot: int | None = None
    client_id: str | None = None  # an app registration of the tenant's own (None: the deployment's app)
    secret_name: str | None = None
    certificate_name: str | None = None
    added_at: str | None = None

    @property
    def key(self) -> str:
        """Lower case: the folder of the tenant's status records and lock, as M365_TENANT_ID is today."""
        return self.tenant.strip().lower()

    @property
    def auth(self) -> str:
        """`app` (the deployment's multi-tenant app), `secret` or `certificate` (named in Key Vault)."""
        return "certificate" if self.certificate_name else "secret" if self.secret_name else "app"

    def schedule_slot(self) -> int:
        """Minutes after each schedule tick at which the tenant is collected: its slot, else one from its id."""
        if self.slot is not None:
            return self.slot
        return int(hashlib.sha256(self.key.encode()).hexdigest(), 16) % SPREAD_MINUTES

    def delay_seconds(self) -> int:
        """Seconds after a schedule tick at which the tenant's run is delivered: its slot's minutes plus a second
        within the minute from its id, so tenants sharing a slot do not all start in the same second."""
        second = int(hashlib.sha256(f"second:{self.key}".encode()).hexdigest(), 16) % 60
        return self.schedule_slot() * 60 + second

    def env(self) -> dict[str, str]:
        """The settings this entry overrides, as app settings."""
        out = {"M365_TENANT_ID": self.tenant}
        if self.cloud:
            out["M365_CLOUD"] = self.cloud
        if self.datasets is not None:
            out["M365_DATASETS"] = ",".join(self.datasets)
        if self.domains is not None:
            out["M365_DOMAINS"] = ",".join(self.domains)
        if self.client_id:
            out["M365_CLIENT_ID"] = self.client_id
        if self.auth == "secret":  # from Key Vault, never a secret of the deployment's own app
            out.update(M365_AUTH_MODE="secret", M365_CLIENT_SECRET="", M365_CLIENT_SECRET_NAME=self.secret_name or "")
        elif self.auth == "certificate":
            out.update(M365_AUTH_MODE="certificate", M365_CLIENT_CERTIFICATE_NAME=self.certificate_name or "")
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tenant": self.tenant}
        for name, value in (("cloud", self.cloud), ("datasets", self.datasets), ("domains", self.domains),
                            ("slot", self.slot), ("addedAt", self.added_at)):
            if value is not None:
                out[name] = ("*" if value == ("*",) else list(value)) if isinstance(value, tuple) else value
        if self.auth != "app":
            out["auth"] = {k: v for k, v in (("clientId", self.client_id), ("secretName", self.secret_name),
                                             ("certificateName", self.certificate_name)) if v}
        return out


def _where(position: int, obj: Any) -> str:
    tenant = obj.get("tenant") if isinstance(obj, dict) else None
    named = f" ({tenant})" if isinstance(tenant, str) and len(tenant) <= 253 and tenant.isprintable() else ""
    return f"tenant registry ({REGISTRY_PATH}) entry {position}{named}"


def _names(value: Any, where: str, field: str) -> tuple[str, ...]:
    if value == "*":
        return ("*",)
    if isinstance(value, str):
        value = [v.strip() for v in re.split(r"[,\s]+", value) if v.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise RegistryError(f"{where}: field {field} must be \"*\" or a list of names.")
    return tuple(dict.fromkeys(value))


def valid_tenant(value: object) -> bool:
    """A tenant id (GUID) or a domain, as M365_TENANT_ID takes it (and not a name of the files beside the tenants'
    folders: tenants/summary.json and summary.html)."""
    if not isinstance(value, str):
        return False
    lowered = value.strip().lower()
    try:
        is_guid = len(lowered) == 36 and uuid.UUID(lowered) is not None
    except ValueError:
        is_guid = False
    return is_guid or (bool(_DOMAIN_RE.match(lowered)) and not lowered.endswith((".json", ".html")))


def _auth(value: Any, where: str) -> dict[str, str]:
    if value in (None, "app"):
        return {}
    if not isinstance(value, dict):
        raise RegistryError(f"{where}: field auth must be \"app\" (the deployment's multi-tenant app) or an object "
                            "with clientId and secretName or certificateName (names in Key Vault).")
    unknown = [k for k in value if k not in AUTH_FIELDS]
    if unknown:
        raise RegistryError(f"{where}: field auth.{unknown[0]} is not known; auth takes {', '.join(AUTH_FIELDS)}.")
    for name in ("secretName", "certificateName"):
        if name in value and not (isinstance(value[name], str) and _KV_NAME.fullmatch(value[name])):
            raise RegistryError(f"{where}: field auth.{name} must be a Key Vault name (letters, digits and '-'), "
                                "not a secret's value.")
    if ("secretName" in value) == ("certificateName" in value):
        raise RegistryError(f"{where}: field auth needs exactly one of secretName and certificateName.")
    return {k: v for k, v in value.items() if isinstance(v, str)}


def parse_entry(obj: Any, position: int) -> TenantEntry:
    """One entry of the document, checked field by field; RegistryError names the entry and the field."""
    where = _where(position, obj)
    if not isinstance(obj, dict):
        raise RegistryError(f"{where}: is not a JSON object.")
    unknown = [k for k in obj if k not in FIELDS]
    if unknown:
        raise RegistryError(f"{where}: field {unknown[0]} is not known; an entry has {', '.join(FIELDS)}.")
    if not valid_tenant(obj.get("tenant")):
        raise RegistryError(f"{where}: field tenant must be the Directory (tenant) ID (a GUID) or the tenant's "
                            "domain, such as contoso.onmicrosoft.com.")
    cloud = obj.get("cloud")
    if cloud is not None and cloud not in CLOUDS:
        raise RegistryError(f"{where}: field cloud must be one of {', '.join(CLOUDS)}.")
    slot = obj.get("slot")
    if slot is not None and (not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < MAX_SLOT):
        raise RegistryError(f"{where}: field slot must be whole minutes after the schedule's tick, 0 to "
                            f"{MAX_SLOT - 1}.")
    auth = _auth(obj.get("auth"), where)
    added = obj.get("addedAt")
    return TenantEntry(
        tenant=obj["tenant"].strip(), cloud=cloud, slot=slot,
        datasets=_names(obj["datasets"], where, "datasets") if obj.get("datasets") is not None else None,
        domains=_names(obj["domains"], where, "domains") if obj.get("domains") is not None else None,
        client_id=auth.get("clientId"), secret_name=auth.get("secretName"),
        certificate_name=auth.get("certificateName"), added_at=added if isinstance(added, str) else None)


def entry_settings(entry: TenantEntry, env: Mapping[str, str], position: int | None = None,
                   extra: Mapping[str, str] | None = None) -> Settings:
    """The connector's settings for one tenant: the deployment's, with what the entry names (and `extra`, a
    command line's options, on top). A problem that comes from the entry names the entry and the field."""
    try:
        return load_settings({**env, **entry.env(), **(extra or {})})
    except ConfigError as exc:
        where = f"tenant registry ({REGISTRY_PATH}) entry {position or '?'} ({entry.tenant})"
        problems = [replace(p, setting=f"{where}: field {_FIELD_OF[p.setting]}") if p.setting in _FIELD_OF and
                    (p.setting != "M365_CLIENT_ID" or entry.client_id) else p for p in exc.problems]
        raise ConfigError(problems) from None


class Registry:
    """The registry of a deployment's store; without its document, the one tenant of M365_TENANT_ID."""

    def __init__(self, store: Store, env: Mapping[str, str]):
        self.store = store
        self.env = env

    def _read(self) -> tuple[list[TenantEntry], str | None] | None:
        found = self.store.read_tagged(REGISTRY_PATH)
        if found is None:
            return None
        data, tag = found
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise RegistryError(f"tenant registry ({REGISTRY_PATH}) is not JSON; fix or remove the file.") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("tenants"), list):
            raise RegistryError(f"tenant registry ({REGISTRY_PATH}): field tenants must be a list of entries.")
        entries = [parse_entry(obj, i) for i, obj in enumerate(doc["tenants"], 1)]
        keys = [e.key for e in entries]
        for i, key in enumerate(keys, 1):
            if keys.index(key) != i - 1:
                raise RegistryError(f"tenant registry ({REGISTRY_PATH}) entry {i} ({key}): field tenant is "
                                    f"registered twice (entry {keys.index(key) + 1} too).")
        return entries, tag

    @property
    def stored(self) -> bool:
        """Whether the deployment has a registry document (else it is M365_TENANT_ID's registry of one)."""
        return self.store.read_tagged(REGISTRY_PATH) is not None

    def entries(self) -> list[TenantEntry]:
        """Every registered tenant, in the document's order."""
        read = self._read()
        if read is not None:
            return read[0]
        tenant = (self.env.get("M365_TENANT_ID") or "").strip()
        return [TenantEntry(tenant)] if tenant else []

    def find(self, tenant: str) -> tuple[int, TenantEntry]:
        """The entry (and its position) for a tenant id or domain; NotRegistered when none lists it."""
        key = tenant.strip().lower()
        for position, entry in enumerate(self.entries(), 1):
            if entry.key == key:
                return position, entry
        raise NotRegistered(key)

    def settings(self, tenant: str) -> Settings:
        position, entry = self.find(tenant)
        return entry_settings(entry, self.env, position)

    def _write(self, change: Any) -> bool:
        """Apply `change(entries) -> entries | None` under the document's ETag (retried when another writer won)."""
        for _ in range(10):
            read = self._read()
            if read is None:
                home = (self.env.get("M365_TENANT_ID") or "").strip()
                current, tag = ([TenantEntry(home)] if valid_tenant(home) else []), None
            else:
                current, tag = read
            changed = change(list(current))
            if changed is None:
                return False
            body = orjson.dumps({"version": 1, "tenants": [e.to_json() for e in changed]}, option=orjson.OPT_INDENT_2)
            if tag is None and self.store.create(REGISTRY_PATH, body + b"\n"):
                return True
            if tag is not None and self.store.replace_if_unchanged(REGISTRY_PATH, body + b"\n", tag):
                return True
        raise RegistryError(f"tenant registry ({REGISTRY_PATH}) kept changing under this update; try again.")

    def add(self, entry: TenantEntry) -> bool:
        """Register a tenant, or replace its entry; True when the registry changed. The first `add` of a
        deployment keeps its M365_TENANT_ID tenant registered (remove it to stop collecting it)."""
        def change(entries: list[TenantEntry]) -> list[TenantEntry] | None:
            kept = [e for e in entries if e.key != entry.key]
            old = next((e for e in entries if e.key == entry.key), None)
            new = replace(entry, added_at=(old.added_at if old else None) or entry.added_at)
            return None if old == new else [*kept, new] if old is None else [new if e.key == entry.key else e
                                                                             for e in entries]
        return self._write(change)

    def remove(self, tenant: str) -> bool:
        key = tenant.strip().lower()

        def change(entries: list[TenantEntry]) -> list[TenantEntry] | None:
            kept = [e for e in entries if e.key != key]
            return None if len(kept) == len(entries) else kept
        return self._write(change)


# The redirect URI of the admin-consent URL when M365_CONSENT_REDIRECT_URI is unset: it must be one the app
# registration lists (v2-admin-consent: "must exactly match one of the redirect URIs that you registered").
DEFAULT_REDIRECT_URI = "https://login.microsoftonline.com/common/oauth2/nativeclient"


def consent_url(settings: Settings, env: Mapping[str, str] | None = None, redirect_uri: str | None = None) -> str:
    """The v2.0 admin-consent URL of a tenant's app (learn.microsoft.com/entra/identity-platform/v2-admin-consent:
    tenant, client_id, redirect_uri and scope required; `{resource}/.default` asks for every application permission
    configured on the app registration), in the tenant's cloud."""
    from urllib.parse import quote, urlencode

    redirect = redirect_uri or (env or {}).get("M365_CONSENT_REDIRECT_URI") or DEFAULT_REDIRECT_URI
    tenant = settings.tenant_id.strip()
    query = urlencode({"client_id": settings.client_id, "scope": f"{settings.graph_resource}/.default",
                       "redirect_uri": redirect, "state": tenant.lower()}, quote_via=quote)
    return f"{settings.authority_host.rstrip('/')}/{quote(tenant)}/v2.0/adminconsent?{query}"
