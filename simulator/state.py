"""What the simulated services share: the tenant and its inventory, the spec's knobs, the app's
credentials and Key Vault secrets, registered report downloads, fault rules, and the record of every
request. :class:`simulator.server.Simulator` adds the listening services on top.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import threading
import time
from typing import Any

from . import tls
from .app_quotas import AppLimits
from .changes import TenantChanges
from .inventory import Inventory
from .tenant import Tenant, TenantSpec
from .tokens import GRAPH_RESOURCE, TOKEN_EXCHANGE_RESOURCE, VAULT_RESOURCE, TokenIssuer
from .usage import UsageReports
from .web import BREAKS, RequestRecord, Service

SECRET_NAME = "m365-client-secret"
CERTIFICATE_NAME = "m365-client-certificate"


class SimulatorState:
    """The simulator's data, knobs, faults and statistics; each service reads it on every request.
    ``spec`` stays mutable: services read its knobs on every request."""

    def __init__(self, spec: TenantSpec | None = None, app_limits: AppLimits | None = None) -> None:
        self.spec = spec if spec is not None else TenantSpec()
        self.tenant = Tenant(self.spec)
        self.tenant_id = self.tenant.tenant_id
        self.inventory = Inventory(self.tenant, self.spec)
        self.usage = UsageReports(self.tenant)
        # Changes between collections, and their log for delta queries (simulator/changes.py).
        self.changes = TenantChanges(self.tenant, self.inventory)
        # Pre-authenticated report downloads: token -> {report, period, concealed, expires}
        self._downloads: dict[str, dict[str, Any]] = {}
        self.client_id = self.tenant.client_id
        self.client_secret = self.tenant.client_secret
        self.secret_name = SECRET_NAME
        self.identity_header = hashlib.sha256(f"{self.spec.seed}:identity-header".encode()).hexdigest()[:32].upper()
        # Resources the managed-identity endpoint hands out tokens for; add to it as needed.
        self.identity_resources: set[str] = {
            VAULT_RESOURCE,
            GRAPH_RESOURCE,
            TOKEN_EXCHANGE_RESOURCE,
            "https://management.azure.com",
            "https://storage.azure.com",
        }
        self.issuer = TokenIssuer(self.tenant_id)
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._rng = random.Random(self.spec.seed)
        self._requests: list[RequestRecord] = []
        self._counters: dict[str, int] = {"tokens_issued": 0, "identity_tokens_issued": 0, "throttled_count": 0}
        self._failures: list[dict[str, Any]] = []
        self._breaks: list[dict[str, Any]] = []
        # Tests of races: called before each GET /users page with (simulator, filter, next user index);
        # users_cursors holds, per filter, the highest user index served so far.
        self.on_users_page: Any = None
        self.users_cursors: dict[str, int] = {}
        self._secrets: dict[str, list[dict[str, Any]]] = {}
        self.set_secret(SECRET_NAME, self.client_secret)
        # A Key Vault certificate is readable as a secret: PEM (key + certificate) for a PEM policy.
        self.certificate_name = CERTIFICATE_NAME
        self.app_certificate = tls.app_certificate()
        self.set_secret(CERTIFICATE_NAME, self.app_certificate.pem, "application/x-pem-file")
        self._services: dict[str, Service] = {}
        self.ca_file = ""
        # Graph's quotas per app across all tenants, when one simulator serves several (simulator/fleet.py), or
        # states given one AppLimits to share.
        self.app_limits: AppLimits | None = app_limits

    # ------------------------------------------------------------------ endpoints

    def _origin(self, name: str) -> str:
        if name not in self._services:
            raise RuntimeError("the simulator is not started")
        return self._services[name].origin

    @property
    def authority_host(self) -> str:
        """``https://127.0.0.1:<port>`` of the Entra token endpoint (an MSAL authority host)."""
        return self._origin("login")

    @property
    def graph_endpoint(self) -> str:
        """Graph API root; requests go to ``/v1.0/...``."""
        return self._origin("graph")

    @property
    def key_vault_url(self) -> str:
        """Vault URL with a trailing slash, like ``https://name.vault.azure.net/``."""
        return self._origin("keyvault") + "/"

    @property
    def identity_endpoint(self) -> str:
        """App Service ``IDENTITY_ENDPOINT`` (plain HTTP, as on App Service)."""
        return self._origin("identity") + "/msi/token"

    @property
    def decoy_endpoint(self) -> str:
        """A second, foreign HTTPS origin that records what it receives."""
        return self._origin("decoy")

    @property
    def download_endpoint(self) -> str:
        """The usage-report download host (``reports.office.com`` in the real service): another origin."""
        return self._origin("download")

    def register_download(self, report: str, period: str | None, concealed: bool, lifetime: float = 300) -> str:
        """A short-lived pre-authenticated download URL for one report file."""
        token = base64.urlsafe_b64encode(os.urandom(18)).decode()
        with self._lock:
            now = time.time()
            self._downloads = {k: v for k, v in self._downloads.items() if v["expires"] > now}
            self._downloads[token] = {"report": report, "period": period, "concealed": concealed,
                                      "expires": now + lifetime}
        return f"{self.download_endpoint}/data/download/{token}"

    def take_download(self, token: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._downloads.get(token)
            return dict(entry) if entry and entry["expires"] > time.time() else None

    # ------------------------------------------------------------------ Key Vault contents

    def set_secret(self, name: str, value: str, content_type: str = "text/plain") -> str:
        """Add a new version of a Key Vault secret (it becomes the current one); returns the version."""
        with self._lock:
            versions = self._secrets.setdefault(name, [])
            version = hashlib.sha256(f"{self.spec.seed}:{name}:{len(versions)}".encode()).hexdigest()[:32]
            created = int(self.started_at) - 30 * 86400 + len(versions)
            versions.append({"value": value, "version": version, "created": created, "contentType": content_type})
            return version

    def get_secret_version(self, name: str, version: str | None = None) -> dict[str, Any] | None:
        """The current (or the given) version of a secret, or None."""
        with self._lock:
            versions = self._secrets.get(name) or []
            if version is None:
                return dict(versions[-1]) if versions else None
            return next((dict(v) for v in versions if v["version"] == version), None)

    # ------------------------------------------------------------------ faults

    def fail_next(
        self, path_prefix: str, status: int, code: str, message: str, times: int = 1, service: str = "graph"
    ) -> None:
        """Answer the next ``times`` requests whose path starts with ``path_prefix`` with this error.

        Replaces any earlier rule for the same prefix; ``times=0`` just removes it.
        """
        with self._lock:
            self._failures = [f for f in self._failures if (f["service"], f["prefix"]) != (service, path_prefix)]
            if times > 0:
                self._failures.append(
                    {
                        "service": service,
                        "prefix": path_prefix,
                        "status": status,
                        "code": code,
                        "message": message,
                        "remaining": times,
                    }
                )

    def break_next(self, path_prefix: str, kind: str, times: int = 1, service: str = "graph",
                   exact: bool = False) -> None:
        """Spoil the next ``times`` answers to paths starting with ``path_prefix``: ``reset`` (connection
        closed, no answer), ``cut`` (half the body, then closed), ``truncated`` (complete answer, JSON cut
        short) or ``garbage`` (200 with a body that is not JSON). ``times=0`` removes the rule; ``exact``
        matches the path itself only."""
        if kind not in BREAKS:
            raise ValueError(f"kind must be one of {BREAKS}")
        with self._lock:
            self._breaks = [b for b in self._breaks if (b["service"], b["prefix"]) != (service, path_prefix)]
            if times > 0:
                self._breaks.append({"service": service, "prefix": path_prefix, "kind": kind, "remaining": times,
                                     "exact": exact})

    def _take_break(self, service: str, path: str) -> str | None:
        with self._lock:
            for rule in self._breaks:
                wanted, got = rule["prefix"].lower(), path.lower()
                if rule["service"] == service and (got == wanted if rule["exact"] else got.startswith(wanted)):
                    rule["remaining"] -= 1
                    if rule["remaining"] <= 0:
                        self._breaks.remove(rule)
                    return rule["kind"]
        return None

    def _take_failure(self, service: str, path: str) -> dict[str, Any] | None:
        with self._lock:
            for rule in self._failures:
                if rule["service"] == service and path.lower().startswith(rule["prefix"].lower()):
                    rule["remaining"] -= 1
                    if rule["remaining"] <= 0:
                        self._failures.remove(rule)
                    return dict(rule)
        return None

    def _draw(self) -> tuple[float, float]:
        """Two numbers from the seeded fault RNG (one request's fault decision)."""
        with self._lock:
            return self._rng.random(), self._rng.random()

    # ------------------------------------------------------------------ recording & stats

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget recorded requests (counters are kept)."""
        with self._lock:
            self._requests.clear()

    def request_count(self, path_prefix: str | None = None, service: str | None = "graph") -> int:
        """Recorded requests for ``service`` (None = all) whose path starts with ``path_prefix``."""
        return sum(
            1
            for r in self.requests
            if (service is None or r.service == service) and (path_prefix is None or r.path.startswith(path_prefix))
        )

    @property
    def tokens_issued(self) -> int:
        """Access tokens issued by the Entra token endpoint (not by the managed identity)."""
        return self._counters["tokens_issued"]

    @property
    def identity_tokens_issued(self) -> int:
        """Access tokens issued by the managed-identity endpoint."""
        return self._counters["identity_tokens_issued"]

    @property
    def throttled_count(self) -> int:
        """Graph requests answered 429."""
        return self._counters["throttled_count"]
