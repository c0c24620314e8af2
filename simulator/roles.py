"""Directory roles (§9): built-in role definitions and role assignments to users, a role-assignable group
and the connector's own service principal; deterministic from the tenant's seed.
"""

from __future__ import annotations

import base64
import uuid
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .object_types import GROUP_TYPE, SP_TYPE, USER_TYPE
from .people import KIND_MEMBER, user_kind
from .seeded import seeded_random

if TYPE_CHECKING:
    from .groups import Groups
    from .tenant import Tenant


# Built-in directory roles: (displayName, templateId). The template ids are Microsoft's published ones.
ROLE_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("Global Administrator", "62e90394-69f5-4237-9190-012177145e10"),
    ("User Administrator", "fe930be7-5e62-47db-91af-98c3a49a38b1"),
    ("Global Reader", "f2ef992c-3afb-46b9-b7cf-a126ee74c451"),
    ("Exchange Administrator", "29232cdf-9323-42fd-ade2-1d097af3e4de"),
    ("SharePoint Administrator", "f28a1f50-f6e7-4571-818b-6a12f2af6b6c"),
    ("Teams Administrator", "69091246-20e8-4a56-aa4d-066075b2a7a8"),
    ("Security Reader", "5d6b6bb7-de71-4623-b4af-96380a352509"),
    ("Helpdesk Administrator", "729827e3-9c14-49f7-bb1b-9608f156bbb8"),
    ("Billing Administrator", "b0f54661-2d74-4c50-afa3-1ec803f12efe"),
    ("License Administrator", "4d6ac14f-3453-41d0-bef9-a3e0c569773a"),
    ("Intune Administrator", "3a2c62db-5318-420d-8d74-23affee5d9d5"),
    ("Application Administrator", "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3"),
    ("Reports Reader", "4a5d8f65-41da-4de4-8968-e035b65339cf"),
)


def role_assignment_id(role_definition_id: str, principal_id: str) -> str:
    """§9: base64url(roleDefinitionId.bytes_le + principalId.bytes_le) without padding, plus '-1'."""
    raw = uuid.UUID(role_definition_id).bytes_le + uuid.UUID(principal_id).bytes_le
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "-1"


class DirectoryRoles:
    """One tenant's role definitions and role assignments."""

    def __init__(self, tenant: Tenant, groups: Groups) -> None:
        self.tenant = tenant
        self.seed = tenant.seed
        self.groups = groups

    def role_definitions(self) -> list[dict[str, Any]]:
        return [
            {
                "id": template, "description": f"{name} (built-in role).", "displayName": name, "isBuiltIn": True,
                "isEnabled": True, "resourceScopes": ["/"], "templateId": template, "version": "1",
                "rolePermissions": [{"allowedResourceActions": ["microsoft.directory/allEntities/allProperties/read"],
                                     "condition": None}],
                "inheritsPermissionsFrom": [],
            }
            for name, template in ROLE_TEMPLATES
        ]

    @cached_property
    def service_principal(self) -> dict[str, Any]:
        return {"@odata.type": SP_TYPE, "id": self.tenant.service_principal_id, "appId": self.tenant.client_id,
                "displayName": "M365 Inventory Connector", "servicePrincipalType": "Application",
                "accountEnabled": True}

    @cached_property
    def _role_assignments(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(assignment, principal object) pairs."""
        t = self.tenant
        rnd = seeded_random(self.seed, "roles")
        members = [i for i in range(t.user_count) if user_kind(self.seed, i) == KIND_MEMBER]
        pairs: list[tuple[str, dict[str, Any]]] = []
        if members:
            count = max(8, t.user_count // 100)
            for n in range(count):
                role = ROLE_TEMPLATES[0 if n < 3 else rnd.randrange(len(ROLE_TEMPLATES))][1]
                user = t.user(rnd.choice(members), ("id", "displayName", "userPrincipalName", "accountEnabled",
                                                    "userType"))
                pairs.append((role, {"@odata.type": USER_TYPE, **user}))
        for g in self.groups.groups():
            if g["isAssignableToRole"]:
                pairs.append((ROLE_TEMPLATES[7][1], {"@odata.type": GROUP_TYPE, "id": g["id"],
                                                     "displayName": g["displayName"], "securityEnabled": True,
                                                     "isAssignableToRole": True}))
                break
        pairs.append((ROLE_TEMPLATES[12][1], self.service_principal))
        out, seen = [], set()
        for role, principal in pairs:
            key = (role, principal["id"])
            if key in seen:
                continue
            seen.add(key)
            out.append(({"id": role_assignment_id(role, principal["id"]), "principalId": principal["id"],
                         "directoryScopeId": "/", "resourceScope": "/", "appScopeId": None, "condition": None,
                         "principalOrganizationId": t.tenant_id, "roleDefinitionId": role}, principal))
        return out

    def role_assignments(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return self._role_assignments
