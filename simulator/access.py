"""Applications, service principals and the relationships access reviews need: owners, delegated and
application permission grants, group owners, managers, PIM schedules, service principals' group
memberships and detected apps' devices; plus the Graph routes that serve them.

Deterministic from the tenant's seed like the rest of the inventory. Sources are the Microsoft Graph
v1.0 docs (repository microsoftgraph/microsoft-graph-docs-contrib, api-reference/v1.0/api/<page>.md,
or learn.microsoft.com/graph/api/<page>) named at each behaviour; [UNVERIFIED] marks what the docs
do not state (the simulator then does the conservative thing and says so).
"""

from __future__ import annotations

import base64
import random
import uuid
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .object_types import APP_TYPE, GROUP_TYPE, SP_TYPE, USER_TYPE
from .people import KIND_MEMBER, user_kind
from .roles import ROLE_TEMPLATES
from .seeded import DAY, digest, guid, iso, seeded_random

if TYPE_CHECKING:
    from .groups import Groups
    from .roles import DirectoryRoles
    from .tenant import Tenant, TenantSpec


GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
MICROSOFT_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"  # appOwnerOrganizationId of Microsoft's own apps
DEFAULT_ACCESS = "00000000-0000-0000-0000-000000000000"  # appRoleId of an assignment without a specific role
# Microsoft Graph application permissions (app roles of its service principal): published ids where known.
GRAPH_ROLES: tuple[tuple[str, str | None], ...] = (
    ("User.Read.All", "df021288-bdef-4463-88db-98f22de89214"),
    ("Application.Read.All", "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30"),
    ("AuditLog.Read.All", "b0afded3-3588-46d8-8b3d-9842eff778da"),
    ("Device.Read.All", "7438b122-aefc-4978-80ed-43db9fcc7715"),
    ("GroupMember.Read.All", "98830695-27a2-44f7-8c18-0c3ebc9698f6"),
    ("Group.Read.All", "5b567255-7703-4780-807c-7be8301ae99b"),
    ("Organization.Read.All", "498476ce-e0fe-48b0-b801-37ba7e2685c6"),
    ("RoleManagement.Read.Directory", "483bed4a-2ad3-4361-a73b-c83ccdbdc53c"),
    ("RoleManagement.Read.All", "c7fbd983-d9aa-4fa7-84b8-17382c103bc4"),
    ("DelegatedPermissionGrant.Read.All", "81b4724a-58aa-41c1-8a55-84ef97466587"),
    ("DeviceManagementManagedDevices.Read.All", "2f51be20-0bb4-4fed-bf7b-db946066c75e"),
    ("RoleEligibilitySchedule.Read.Directory", "ff278e11-4a33-4d0c-83d2-d01dc58929a5"),
    ("Policy.Read.All", "246dd0d5-5bd0-4def-940b-0421030a5b68"),
    ("Directory.Read.All", None), ("Reports.Read.All", None), ("ReportSettings.Read.All", None),
    ("Member.Read.Hidden", None), ("RoleAssignmentSchedule.Read.Directory", None), ("Mail.Read", None),
    ("Sites.Read.All", None), ("Files.Read.All", None),
)
FIRST_PARTY = (("Microsoft Graph", GRAPH_APP_ID),
               ("Office 365 Exchange Online", "00000002-0000-0ff1-ce00-000000000000"),
               ("Office 365 SharePoint Online", "00000003-0000-0ff1-ce00-000000000000"),
               ("Microsoft Teams Services", "cc15fd57-2c6c-4117-a88c-83b1d56b4bbe"),
               ("Azure Portal", "c44b4083-3bb0-49c1-b47d-974e53cbdf3c"),
               ("Microsoft Intune", "0000000a-0000-0000-c000-000000000000"))
VENDORS = ("Zoom", "Slack", "Salesforce", "ServiceNow", "Box", "DocuSign", "Adobe Acrobat Sign", "Atlassian Cloud")
APP_WORDS = ("Payroll", "Expenses", "HR Portal", "Intranet", "Backup Agent", "Sync Service", "Reporting", "Ticketing",
             "Provisioning", "Data Export", "Mobile App", "Web Shop", "CRM Connector", "Scanner", "Monitoring")


def _uid(seed: int, label: str) -> str:
    return guid(digest(seed, label))


def role_id(seed: int, value: str) -> str:
    """A Microsoft Graph app role's id: the published one where known."""
    known = dict(GRAPH_ROLES).get(value)
    return known or _uid(seed, f"graph-role:{value}")


def app_credentials(seed: int, now: int, own_secret_days: int, label: str, own: bool,
                    certificate_share: float) -> tuple[list[dict], list[dict]]:
    """passwordCredentials and keyCredentials (resources/passwordcredential.md, keycredential.md): secretText is
    returned only when a secret is created, so it is null here; `key` only with $select=keyCredentials."""
    rnd = seeded_random(seed, f"creds:{label}")
    passwords, keys = [], []

    def end() -> int:
        draw = rnd.random()
        if draw < 0.15:
            return now - rnd.randrange(1, 700) * DAY  # expired
        if draw < 0.25:
            return now + rnd.randrange(1, 30) * DAY + rnd.randrange(DAY)  # expiring within 30 days
        return now + rnd.randrange(31, 730) * DAY

    secrets = [now + own_secret_days * DAY] if own else [end() for _ in range(rnd.choice((0, 1, 1, 2)))]
    for n, stop in enumerate(secrets):
        start = stop - rnd.choice((180, 365, 730)) * DAY
        passwords.append({"customKeyIdentifier": None, "displayName": "connector" if own else f"secret {n + 1}",
                          "endDateTime": iso(stop), "hint": ("Sim" if own else f"{rnd.choice('aBc7Q')}x~"),
                          "keyId": _uid(seed, f"pw:{label}:{n}"), "secretText": None,
                          "startDateTime": iso(min(start, now - DAY))})
    if not own and rnd.random() < certificate_share:
        stop = end()
        thumb = digest(seed, f"thumb:{label}")[:20]
        keys.append({"customKeyIdentifier": base64.b64encode(thumb).decode(), "displayName": f"CN={label}",
                     "endDateTime": iso(stop), "key": base64.b64encode(digest(seed, f"cert:{label}") * 8)
                     .decode(), "keyId": _uid(seed, f"key:{label}"),
                     "startDateTime": iso(stop - 365 * DAY), "type": "AsymmetricX509Cert", "usage": "Verify"})
    return passwords, keys


def _service_principal(sp_id: str, app_id: str, name: str, kind: str, owner_org: str, label: str, *,
                       roles: list | None = None, required: bool = False, creds: tuple[list, list] = ([], []),
                       sso: str | None = None) -> dict[str, Any]:
    """A servicePrincipal object (resources/serviceprincipal.md); `_label` is the simulator's own."""
    return {
        "id": sp_id, "deletedDateTime": None, "accountEnabled": True, "appDisplayName": name, "appId": app_id,
        "appOwnerOrganizationId": owner_org, "appRoleAssignmentRequired": required,
        "appRoles": roles or [], "disabledByMicrosoftStatus": None, "displayName": name,
        "keyCredentials": creds[1], "passwordCredentials": creds[0], "preferredSingleSignOnMode": sso,
        "servicePrincipalType": kind, "signInAudience": None if kind == "ManagedIdentity" else "AzureADMyOrg",
        "tags": [], "verifiedPublisher": {"displayName": None, "verifiedPublisherId": None,
                                          "addedDateTime": None}, "_label": label}


def _app_roles(seed: int, label: str, count: int) -> list[dict[str, Any]]:
    return [{"allowedMemberTypes": ["User"], "description": f"Role {n}", "displayName": f"Role {n}",
             "id": _uid(seed, f"approle:{label}:{n}"), "isEnabled": True, "origin": "Application",
             "value": f"Role.{n}"} for n in range(count)]


def _role_schedule(seed: int, label: str, principal: str, role: str, start: int, permanent: bool, rnd: random.Random,
                   hours: int | None = None) -> dict[str, Any]:
    """A unifiedRoleEligibilitySchedule / unifiedRoleAssignmentSchedule (permanent, or ending after a time)."""
    sid = _uid(seed, f"schedule:{label}")
    end = start + hours * 3600 if hours else start + rnd.randrange(90, 400) * DAY
    return {"id": sid, "principalId": principal, "roleDefinitionId": role, "directoryScopeId": "/",
            "appScopeId": None, "createdUsing": sid, "createdDateTime": iso(start),
            "modifiedDateTime": None, "status": "Provisioned", "memberType": "Direct",
            "scheduleInfo": {"startDateTime": iso(start), "recurrence": None, "expiration": (
                {"type": "noExpiration", "endDateTime": None, "duration": None} if permanent else
                {"type": "afterDateTime", "endDateTime": iso(end), "duration": None})}}


class AppDirectory:
    """App registrations, service principals and their relationships for one simulated tenant."""

    def __init__(self, tenant: Tenant, spec: TenantSpec, groups: Groups, roles: DirectoryRoles) -> None:
        self.tenant = tenant
        self.spec = spec
        self.seed = tenant.seed
        self.groups = groups
        self.roles = roles
        users = self.tenant.user_count
        spec_apps = self.spec.applications
        self.app_count = spec_apps if spec_apps is not None else max(8, users // 50)
        self.identity_count = 1 + self.app_count // 20
        self.vendor_count = min(len(VENDORS), 2 + self.app_count // 10)

    # ------------------------------------------------------------------ objects

    @cached_property
    def sp_ids(self) -> list[str]:
        """Every service principal id, in listing order (apps, Microsoft, managed identities, vendors)."""
        return [sp["id"] for sp in self.service_principals]

    @cached_property
    def applications(self) -> list[dict[str, Any]]:
        """App registrations (resources/application.md); index 0 is the connector's own."""
        t = self.tenant
        out = []
        for i in range(self.app_count):
            own = i == 0
            rnd = seeded_random(self.seed, f"application:{i}")
            passwords, keys = self._credentials(f"app{i}", own, 0.3)
            graph_roles = ([role_id(self.seed, r) for r in sorted(self.spec.roles)] if own else
                           [role_id(self.seed, GRAPH_ROLES[rnd.randrange(len(GRAPH_ROLES))][0])
                            for _ in range(rnd.randrange(0, 3))])
            out.append({
                "id": _uid(self.seed, f"app-object:{i}"),
                "appId": t.client_id if own else _uid(self.seed, f"app-id:{i}"),
                "displayName": ("M365 Inventory Connector" if own else
                                f"Contoso {APP_WORDS[i % len(APP_WORDS)]} {i:04d}"),
                "createdDateTime": iso(t.now_epoch - rnd.randrange(10, 1500) * DAY),
                "deletedDateTime": None,
                "description": None,
                "disabledByMicrosoftStatus": None,
                "identifierUris": [] if own or rnd.random() < 0.6 else [f"api://{_uid(self.seed, f'app-id:{i}')}"],
                "keyCredentials": keys,
                "notes": None,
                "passwordCredentials": passwords,
                "publisherDomain": t.default_domain,
                "requiredResourceAccess": [{"resourceAppId": GRAPH_APP_ID, "resourceAccess": [
                    {"id": rid, "type": "Role"} for rid in graph_roles] + [
                    {"id": "e1fe6dd8-ba31-4d61-89e7-88639da4683d", "type": "Scope"}]}],
                "signInAudience": "AzureADMyOrg" if own or rnd.random() < 0.8 else "AzureADMultipleOrgs",
                "tags": [],
                "verifiedPublisher": {"displayName": None, "verifiedPublisherId": None, "addedDateTime": None},
            })
        return out

    def _credentials(self, label: str, own: bool, certificate_share: float) -> tuple[list[dict], list[dict]]:
        return app_credentials(self.seed, self.tenant.now_epoch, self.spec.own_secret_days, label, own,
                               certificate_share)

    @cached_property
    def service_principals(self) -> list[dict[str, Any]]:
        """resources/serviceprincipal.md: one per app registration, Microsoft's first-party apps, managed
        identities (their certificates are rotated by Azure) and multi-tenant vendor apps."""
        t = self.tenant
        out = []

        def sp(*args: Any, **kwargs: Any) -> None:
            out.append(_service_principal(*args, **kwargs))

        for i, app in enumerate(self.applications):
            custom = i % 5 == 3
            sp(t.service_principal_id if i == 0 else _uid(self.seed, f"sp-app:{i}"), app["appId"], app["displayName"],
               "Application", t.tenant_id, f"app{i}", roles=_app_roles(self.seed, f"app{i}", 3) if custom else None,
               required=custom, creds=self._credentials(f"sp-app{i}", False, 0.1) if i % 7 == 4 else ([], []),
               sso="saml" if i % 7 == 4 else None)
        for name, app_id in FIRST_PARTY:
            roles = None
            if app_id == GRAPH_APP_ID:
                roles = [{"allowedMemberTypes": ["Application"], "description": value, "displayName": value,
                          "id": role_id(self.seed, value), "isEnabled": True, "origin": "Application", "value": value}
                         for value, _ in GRAPH_ROLES]
            sp(_uid(self.seed, f"sp-ms:{app_id}"), app_id, name, "Application", MICROSOFT_TENANT, name, roles=roles)
        for k in range(self.identity_count):
            stop = t.now_epoch + (k % 3 + 1) * 9 * DAY  # Azure rotates these; never a finding
            key = {"customKeyIdentifier": None, "displayName": f"CN={k}", "endDateTime": iso(stop), "key": None,
                   "keyId": _uid(self.seed, f"mi-key:{k}"), "startDateTime": iso(stop - 90 * DAY),
                   "type": "AsymmetricX509Cert", "usage": "Verify"}
            sp(_uid(self.seed, f"sp-mi:{k}"), _uid(self.seed, f"mi-app:{k}"), f"func-contoso-{k:03d}",
               "ManagedIdentity", None, f"mi{k}", creds=([], [key]))
        for k in range(self.vendor_count):
            sp(_uid(self.seed, f"sp-vendor:{k}"), _uid(self.seed, f"vendor-app:{k}"), VENDORS[k], "Application",
               _uid(self.seed, f"vendor-tenant:{k}"), f"vendor{k}", roles=_app_roles(self.seed, f"vendor{k}", 2),
               required=True, sso="saml" if k % 2 else "oidc")
        return out

    @cached_property
    def _by_id(self) -> dict[str, tuple[str, dict[str, Any]]]:
        out: dict[str, tuple[str, dict[str, Any]]] = {a["id"]: ("application", a) for a in self.applications}
        out.update({s["id"]: ("servicePrincipal", s) for s in self.service_principals})
        return out

    def application_by_id(self, oid: str) -> dict[str, Any] | None:
        found = self._by_id.get(oid.lower())
        return found[1] if found and found[0] == "application" else None

    def service_principal_by_id(self, oid: str) -> dict[str, Any] | None:
        found = self._by_id.get(oid.lower())
        return found[1] if found and found[0] == "servicePrincipal" else None

    @cached_property
    def graph_sp(self) -> dict[str, Any]:
        return next(s for s in self.service_principals if s["appId"] == GRAPH_APP_ID)

    # ------------------------------------------------------------------ relationships

    @cached_property
    def member_users(self) -> list[int]:
        return [i for i in range(self.tenant.user_count) if user_kind(self.seed, i) == KIND_MEMBER] or \
            list(range(self.tenant.user_count))

    def _some_users(self, rnd: random.Random, count: int) -> list[tuple[str, str]]:
        pool = self.member_users
        picks = sorted(rnd.sample(range(len(pool)), min(count, len(pool))))
        return [(USER_TYPE, self.tenant.user_id(pool[p])) for p in picks]

    def _big(self, rnd: random.Random) -> list[tuple[str, str]]:
        """Hundreds (over a page of 999 once the tenant has enough users) of user objects."""
        users = self.tenant.user_count
        return [(USER_TYPE, self.tenant.user_id(i)) for i in sorted(rnd.sample(range(users), min(users, 1005)))]

    @cached_property
    def owners(self) -> dict[str, list[tuple[str, str]]]:
        """Owners per application / service principal id (users, sometimes service principals); application 1
        and the service principal of application 2 have hundreds."""
        out: dict[str, list[tuple[str, str]]] = {}
        sps = [s for s in self.service_principals if s["servicePrincipalType"] == "Application"]
        for i, app in enumerate(self.applications):
            rnd = seeded_random(self.seed, f"app-owners:{i}")
            owners = self._big(rnd) if i == 1 else self._some_users(rnd, rnd.choice((0, 1, 1, 2, 3)))
            if i > 0 and rnd.random() < 0.1:
                owners.append((SP_TYPE, sps[rnd.randrange(len(sps))]["id"]))
            out[app["id"]] = owners
        for k, sp in enumerate(self.service_principals):
            if sp["appOwnerOrganizationId"] != self.tenant.tenant_id:
                continue
            rnd = seeded_random(self.seed, f"sp-owners:{k}")
            out[sp["id"]] = self._big(rnd) if k == 2 else self._some_users(rnd, rnd.choice((0, 0, 1, 2)))
        return out

    @cached_property
    def group_owners(self) -> list[list[tuple[str, str]]]:
        """Owners per group index: users, and service principals for a few security groups (group 6 always).
        Group 9 has hundreds."""
        sp_ids = [s["id"] for s in self.service_principals]
        out = []
        for g, group in enumerate(self.groups.groups()):
            rnd = seeded_random(self.seed, f"group-owners:{g}")
            owners = self._big(rnd) if g == 9 else self._some_users(rnd, rnd.choice((0, 1, 1, 2, 3)))
            if group["securityEnabled"] and not group["mailEnabled"] and (g == 6 or rnd.random() < 0.05):
                owners.append((SP_TYPE, sp_ids[rnd.randrange(len(sp_ids))]))
            out.append(owners)
        return out

    @cached_property
    def member_of(self) -> dict[str, list[str]]:
        """Groups each service principal is a direct member of (from the inventory's memberships)."""
        out: dict[str, list[str]] = {}
        for g, group in enumerate(self.groups.groups()):
            for odata_type, oid in self.groups.direct_members(g):
                if odata_type == SP_TYPE:
                    out.setdefault(oid, []).append(group["id"])
        return out

    @cached_property
    def owned_objects(self) -> dict[str, list[tuple[str, str]]]:
        """What each service principal owns: applications and service principals (owners above) and groups."""
        out: dict[str, list[tuple[str, str]]] = {}
        for oid, owners in self.owners.items():
            kind = APP_TYPE if self.application_by_id(oid) is not None else SP_TYPE
            for owner_type, owner in owners:
                if owner_type == SP_TYPE:
                    out.setdefault(owner, []).append((kind, oid))
        for g, owners in enumerate(self.group_owners):
            for owner_type, owner in owners:
                if owner_type == SP_TYPE:
                    out.setdefault(owner, []).append((GROUP_TYPE, self.groups.groups()[g]["id"]))
        return out

    @cached_property
    def app_role_assignments(self) -> dict[str, list[dict[str, Any]]]:
        """appRoleAssignedTo per resource service principal (resources/approleassignment.md): Graph's application
        permissions granted to apps (the connector's own: the roles its token carries), users and groups
        assigned to enterprise apps; one app (index 3) has hundreds."""
        t = self.tenant
        out: dict[str, list[dict[str, Any]]] = {}
        graph = self.graph_sp
        roles = {r["value"]: r["id"] for r in graph["appRoles"]}

        def add(resource: dict[str, Any], principal_type: str, principal_id: str, name: str, app_role: str,
                label: str) -> None:
            raw = uuid.UUID(principal_id).bytes_le + digest(self.seed, label)[:16]
            out.setdefault(resource["id"], []).append({
                "id": base64.urlsafe_b64encode(raw).decode().rstrip("="), "deletedDateTime": None,
                "appRoleId": app_role, "createdDateTime": iso(t.now_epoch - len(label) * DAY - 3600),
                "principalDisplayName": name, "principalId": principal_id, "principalType": principal_type,
                "resourceDisplayName": resource["displayName"], "resourceId": resource["id"]})

        for k, sp in enumerate(self.service_principals):
            if sp["servicePrincipalType"] != "Application" or sp["appOwnerOrganizationId"] == MICROSOFT_TENANT:
                continue
            if sp["appId"] == t.client_id:
                for value in sorted(self.spec.roles):
                    if value in roles:
                        add(graph, "ServicePrincipal", sp["id"], sp["displayName"], roles[value], f"{k}:{value}")
            else:
                rnd = seeded_random(self.seed, f"graph-grants:{k}")
                for value in sorted({GRAPH_ROLES[rnd.randrange(len(GRAPH_ROLES))][0]
                                     for _ in range(rnd.choice((0, 0, 1, 2)))}):
                    add(graph, "ServicePrincipal", sp["id"], sp["displayName"], roles[value], f"{k}:{value}")
            if sp["appRoleAssignmentRequired"]:
                rnd = seeded_random(self.seed, f"assignments:{k}")
                app_roles = [r["id"] for r in sp["appRoles"]] or [DEFAULT_ACCESS]
                users = self._big(rnd) if k == 3 else self._some_users(rnd, rnd.randrange(1, 8))
                for _, uid in users:
                    index = t.index_of(uid)
                    name = t.user(index, ("displayName",))["displayName"] if index is not None else None
                    add(sp, "User", uid, name, app_roles[rnd.randrange(len(app_roles))], f"{k}:{uid}")
                groups = self.groups.groups()
                if groups and rnd.random() < 0.5:
                    g = groups[rnd.randrange(len(groups))]
                    add(sp, "Group", g["id"], g["displayName"], app_roles[0], f"{k}:{g['id']}")
        return out

    @cached_property
    def grants(self) -> list[dict[str, Any]]:
        """oAuth2PermissionGrants (resources/oauth2permissiongrant.md): admin consents (AllPrincipals, principalId
        null) and user consents (Principal) of client service principals to Microsoft Graph."""
        graph = self.graph_sp
        out = []
        for k, sp in enumerate(self.service_principals):
            if sp["servicePrincipalType"] != "Application" or sp["id"] == graph["id"] or k % 3:
                continue
            rnd = seeded_random(self.seed, f"grants:{k}")
            consents: list[str | None] = [None] if rnd.random() < 0.6 else []
            consents += [uid for _, uid in self._some_users(rnd, rnd.choice((0, 1, 3)))]
            for principal in consents:
                raw = uuid.UUID(sp["id"]).bytes_le + uuid.UUID(graph["id"]).bytes_le
                if principal:
                    raw += uuid.UUID(principal).bytes_le
                out.append({"clientId": sp["id"], "consentType": "Principal" if principal else "AllPrincipals",
                            "id": base64.urlsafe_b64encode(raw).decode().rstrip("="), "principalId": principal,
                            "resourceId": graph["id"],
                            "scope": " ".join(("openid", "profile", "User.Read") + (("Mail.Read",) if principal else
                                                                                     ("Group.Read.All",)))})
        return out

    def manager_of(self, index: int) -> int | None:
        """Members report to a member in a tree of fan-out 7 (user 0 reports to no one); others have no manager."""
        if index == 0 or user_kind(self.seed, index) != KIND_MEMBER:
            return None
        boss = (index - 1) // 7
        return boss if user_kind(self.seed, boss) == KIND_MEMBER else None

    @cached_property
    def eligibility_schedules(self) -> list[dict[str, Any]]:
        """unifiedRoleEligibilitySchedule (resources/unifiedroleeligibilityschedule.md)."""
        t = self.tenant
        rnd = seeded_random(self.seed, "eligibility")
        out = []
        for n, (_, uid) in enumerate(self._some_users(rnd, max(3, t.user_count // 200))):
            role = ROLE_TEMPLATES[rnd.randrange(len(ROLE_TEMPLATES))][1]
            start = t.now_epoch - rnd.randrange(10, 400) * DAY
            permanent = rnd.random() < 0.4
            out.append(_role_schedule(self.seed, f"elig:{n}", uid, role, start, permanent, rnd))
        return out

    @cached_property
    def assignment_schedules(self) -> list[dict[str, Any]]:
        """unifiedRoleAssignmentSchedule: every active assignment (permanent 'Assigned'), plus activations of
        some eligibilities ('Activated', ending within hours)."""
        t = self.tenant
        rnd = seeded_random(self.seed, "assignment-schedules")
        out = []
        for n, (assignment, _principal) in enumerate(self.roles.role_assignments()):
            item = _role_schedule(self.seed, f"assign:{n}", assignment["principalId"], assignment["roleDefinitionId"],
                                  t.now_epoch - (n + 30) * DAY, True, rnd)
            item["assignmentType"] = "Assigned"
            out.append(item)
        for n, elig in enumerate(self.eligibility_schedules[::3]):
            item = _role_schedule(self.seed, f"activated:{n}", elig["principalId"], elig["roleDefinitionId"],
                                  t.now_epoch - 3600, False, rnd, hours=8)
            item.update(assignmentType="Activated", createdUsing=elig["id"])
            out.append(item)
        return out


