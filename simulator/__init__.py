"""Local simulator of Entra ID, App Service managed identity, Key Vault and Microsoft Graph v1.0.

A development tool (tests, demo, benchmark); not deployed. See :class:`Simulator`.
"""

from .server import Simulator
from .state import SECRET_NAME
from .tenant import Tenant, TenantSpec
from .web import RequestRecord

__all__ = ["SECRET_NAME", "RequestRecord", "Simulator", "Tenant", "TenantSpec"]
