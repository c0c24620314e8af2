"""The :class:`Simulator`: all simulated services on loopback ports, plus knobs and statistics."""

from __future__ import annotations

import threading
from typing import Literal

from . import tls
from .decoy import DecoyService
from .downloads import DownloadService
from .entra import LoginService
from .graph.service import GraphService
from .graph.users import UsersArea
from .key_vault import KeyVaultService
from .managed_identity import IdentityService
from .reference import PRODUCT_NAMES_PATH, DownloadCenterService
from .state import SimulatorState
from .web import App, Service


class Simulator(SimulatorState):
    """Entra token endpoint, managed identity, Key Vault, Graph and a decoy host, started together.

    Use as a context manager (or call :meth:`start` / :meth:`stop`). ``spec`` stays mutable:
    services read its knobs on every request.
    """

    def start(self) -> Simulator:
        """Generate the CA, bind every service to 127.0.0.1 on a free port and start serving."""
        if self._services:
            return self
        certs = tls.shared()
        self.ca_file = certs.ca_file
        ctx = certs.server_context()
        ctx.set_alpn_protocols(["http/1.1"])
        apps = self._apps()
        for name, app in apps.items():
            if name != "graph":
                self._services[name] = Service(name, app, self._record, None if name == "identity" else ctx)
        # Graph's endpoint URLs (next links) need the other services' ports first.
        self._services["graph"] = Service("graph", apps["graph"], self._record, ctx)
        for service in self._services.values():
            service.start()
        if self.tenant.user_count > 20000:
            # Build the UPN index in the background so a large tenant's first page is not slow.
            threading.Thread(target=self.tenant.upn, args=(0,), name="sim-index", daemon=True).start()
        return self

    def warm_render_cache(self, select: str) -> None:
        """Benchmarks: every user's JSON for this $select built before a client asks (UsersArea.warm)."""
        if not self.spec.render_cache:
            raise ValueError("the render cache is off (TenantSpec.render_cache)")
        for area in self._graph.areas:
            if isinstance(area, UsersArea):
                area.warm(select)

    def _apps(self) -> dict[str, App]:
        """What each service answers with (simulator/fleet.py routes some of them to several tenants)."""
        self._graph = GraphService(self)
        return {"login": LoginService(self), "identity": IdentityService(self), "keyvault": KeyVaultService(self),
                "decoy": DecoyService(), "download": DownloadService(self),
                "downloadcenter": DownloadCenterService(self), "graph": self._graph}

    def stop(self) -> None:
        """Stop every service and cut open connections (the CA stays for the process)."""
        for service in self._services.values():
            service.stop()
        self._services.clear()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ clients

    def env(self, secret_in: Literal["env", "keyvault", "certificate", "federated"] = "env") -> dict[str, str]:
        """Environment variables pointing the connector at this simulator.

        ``env``: the secret itself; ``keyvault``: the secret from Key Vault through the managed
        identity; ``certificate``: a certificate from Key Vault (M365_AUTH_MODE=certificate);
        ``federated``: no secret at all, the managed identity's token as client assertion. For all
        but ``env`` the caller should clear ``AZURE_*`` variables so the managed identity is used.
        """
        env = {
            "M365_TENANT_ID": self.tenant_id,
            "M365_CLIENT_ID": self.client_id,
            "M365_AUTHORITY_HOST": self.authority_host,
            "M365_GRAPH_ENDPOINT": self.graph_endpoint,
            "M365_PRODUCT_NAMES_URL": self._origin("downloadcenter") + PRODUCT_NAMES_PATH,
            "SSL_CERT_FILE": self.ca_file,
            "REQUESTS_CA_BUNDLE": self.ca_file,
        }
        if self.spec.quotas and self.spec.quota_scale != 1:  # the collector paces by the same scaled quotas
            env["M365_GRAPH_QUOTA_SCALE"] = repr(float(self.spec.quota_scale))
        identity = {"IDENTITY_ENDPOINT": self.identity_endpoint, "IDENTITY_HEADER": self.identity_header}
        if secret_in == "env":
            env["M365_CLIENT_SECRET"] = self.client_secret
        elif secret_in == "keyvault":
            env.update({"KEY_VAULT_URL": self.key_vault_url, "M365_CLIENT_SECRET_NAME": self.secret_name, **identity})
        elif secret_in == "certificate":
            env.update({"M365_AUTH_MODE": "certificate", "KEY_VAULT_URL": self.key_vault_url,
                        "M365_CLIENT_CERTIFICATE_NAME": self.certificate_name, **identity})
        elif secret_in == "federated":
            env.update({"M365_AUTH_MODE": "federated", **identity})
        else:
            raise ValueError(f"secret_in must be env, keyvault, certificate or federated, not {secret_in!r}")
        return env
