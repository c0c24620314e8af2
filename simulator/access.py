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
import bisect
import math
import random
import re
import threading
import time
import uuid
from collections import deque
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .inventory import APP_TYPE, GROUP_TYPE, ROLE_TEMPLATES, SP_TYPE, USER_TYPE
from .tenant import DAY, KIND_MEMBER, _digest, _guid, _iso

if TYPE_CHECKING:
    from .inventory import Inventory
    from .services import GraphService
    from .web import Request, Response

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
KEY_SELECT_LIMIT = 150  # $select=keyCredentials: 150 requests per minute per tenant (api/application-list.md,
KEY_SELECT_WINDOW = 60.0  # api/serviceprincipal-list.md)
EXPAND_PAGE = 100  # $expand on directory objects returns at most 100 objects (Graph known issue 13635)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Exception:
    from .services import GraphError as ServiceError

    return ServiceError(status, code, message, headers)


def _uid(seed: int, label: str) -> str:
    return _guid(_digest(seed, label))


class AppDirectory:
    """App registrations, service principals and their relationships for one simulated tenant."""

    def __init__(self, inv: Inventory) -> None:
        self.inv = inv
        self.tenant = inv.tenant
        self.spec = inv.tenant_spec
        self.seed = inv.seed
        users = self.tenant.user_count
        spec_apps = self.spec.applications
        self.app_count = spec_apps if spec_apps is not None else max(8, users // 50)
        self.identity_count = 1 + self.app_count // 20
        self.vendor_count = min(len(VENDORS), 2 + self.app_count // 10)
        self._lock = threading.RLock()
        self._key_selects: deque[float] = deque()

    def _rnd(self, label: str) -> random.Random:
        return random.Random(int.from_bytes(_digest(self.seed, label), "big"))

    # ------------------------------------------------------------------ objects

    @cached_property
    def sp_ids(self) -> list[str]:
        """Every service principal id, in listing order (apps, Microsoft, managed identities, vendors)."""
        return [sp["id"] for sp in self.service_principals]

    def _credentials(self, label: str, own: bool, certificate_share: float) -> tuple[list[dict], list[dict]]:
        """passwordCredentials and keyCredentials (resources/passwordcredential.md, keycredential.md): secretText is
        returned only when a secret is created, so it is null here; `key` only with $select=keyCredentials."""
        rnd = self._rnd(f"creds:{label}")
        now = self.tenant.now_epoch
        passwords, keys = [], []

        def end() -> int:
            draw = rnd.random()
            if draw < 0.15:
                return now - rnd.randrange(1, 700) * DAY  # expired
            if draw < 0.25:
                return now + rnd.randrange(1, 30) * DAY + rnd.randrange(DAY)  # expiring within 30 days
            return now + rnd.randrange(31, 730) * DAY

        secrets = [now + self.spec.own_secret_days * DAY] if own else [end() for _ in range(rnd.choice((0, 1, 1, 2)))]
        for n, stop in enumerate(secrets):
            start = stop - rnd.choice((180, 365, 730)) * DAY
            passwords.append({"customKeyIdentifier": None, "displayName": "connector" if own else f"secret {n + 1}",
                              "endDateTime": _iso(stop), "hint": ("Sim" if own else f"{rnd.choice('aBc7Q')}x~"),
                              "keyId": _uid(self.seed, f"pw:{label}:{n}"), "secretText": None,
                              "startDateTime": _iso(min(start, now - DAY))})
        if not own and rnd.random() < certificate_share:
            stop = end()
            thumb = _digest(self.seed, f"thumb:{label}")[:20]
            keys.append({"customKeyIdentifier": base64.b64encode(thumb).decode(), "displayName": f"CN={label}",
                         "endDateTime": _iso(stop), "key": base64.b64encode(_digest(self.seed, f"cert:{label}") * 8)
                         .decode(), "keyId": _uid(self.seed, f"key:{label}"),
                         "startDateTime": _iso(stop - 365 * DAY), "type": "AsymmetricX509Cert", "usage": "Verify"})
        return passwords, keys

    @cached_property
    def applications(self) -> list[dict[str, Any]]:
        """App registrations (resources/application.md); index 0 is the connector's own."""
        t = self.tenant
        out = []
        for i in range(self.app_count):
            own = i == 0
            rnd = self._rnd(f"application:{i}")
            passwords, keys = self._credentials(f"app{i}", own, 0.3)
            graph_roles = ([role_id(self.seed, r) for r in sorted(self.spec.roles)] if own else
                           [role_id(self.seed, GRAPH_ROLES[rnd.randrange(len(GRAPH_ROLES))][0])
                            for _ in range(rnd.randrange(0, 3))])
            out.append({
                "id": _uid(self.seed, f"app-object:{i}"),
                "appId": t.client_id if own else _uid(self.seed, f"app-id:{i}"),
                "displayName": ("M365 Inventory Connector" if own else
                                f"Contoso {APP_WORDS[i % len(APP_WORDS)]} {i:04d}"),
                "createdDateTime": _iso(t.now_epoch - rnd.randrange(10, 1500) * DAY),
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

    def _app_roles(self, label: str, count: int) -> list[dict[str, Any]]:
        return [{"allowedMemberTypes": ["User"], "description": f"Role {n}", "displayName": f"Role {n}",
                 "id": _uid(self.seed, f"approle:{label}:{n}"), "isEnabled": True, "origin": "Application",
                 "value": f"Role.{n}"} for n in range(count)]

    @cached_property
    def service_principals(self) -> list[dict[str, Any]]:
        """resources/serviceprincipal.md: one per app registration, Microsoft's first-party apps, managed
        identities (their certificates are rotated by Azure) and multi-tenant vendor apps."""
        t = self.tenant
        out = []

        def sp(sp_id: str, app_id: str, name: str, kind: str, owner_org: str, label: str, *, roles: list | None = None,
               required: bool = False, creds: tuple[list, list] = ([], []), sso: str | None = None) -> None:
            out.append({
                "id": sp_id, "deletedDateTime": None, "accountEnabled": True, "appDisplayName": name, "appId": app_id,
                "appOwnerOrganizationId": owner_org, "appRoleAssignmentRequired": required,
                "appRoles": roles or [], "disabledByMicrosoftStatus": None, "displayName": name,
                "keyCredentials": creds[1], "passwordCredentials": creds[0], "preferredSingleSignOnMode": sso,
                "servicePrincipalType": kind, "signInAudience": None if kind == "ManagedIdentity" else "AzureADMyOrg",
                "tags": [], "verifiedPublisher": {"displayName": None, "verifiedPublisherId": None,
                                                  "addedDateTime": None}, "_label": label})

        for i, app in enumerate(self.applications):
            custom = i % 5 == 3
            sp(t.service_principal_id if i == 0 else _uid(self.seed, f"sp-app:{i}"), app["appId"], app["displayName"],
               "Application", t.tenant_id, f"app{i}", roles=self._app_roles(f"app{i}", 3) if custom else None,
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
            key = {"customKeyIdentifier": None, "displayName": f"CN={k}", "endDateTime": _iso(stop), "key": None,
                   "keyId": _uid(self.seed, f"mi-key:{k}"), "startDateTime": _iso(stop - 90 * DAY),
                   "type": "AsymmetricX509Cert", "usage": "Verify"}
            sp(_uid(self.seed, f"sp-mi:{k}"), _uid(self.seed, f"mi-app:{k}"), f"func-contoso-{k:03d}",
               "ManagedIdentity", None, f"mi{k}", creds=([], [key]))
        for k in range(self.vendor_count):
            sp(_uid(self.seed, f"sp-vendor:{k}"), _uid(self.seed, f"vendor-app:{k}"), VENDORS[k], "Application",
               _uid(self.seed, f"vendor-tenant:{k}"), f"vendor{k}", roles=self._app_roles(f"vendor{k}", 2),
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

    def _members(self) -> list[int]:
        inv = self.inv
        return [i for i in range(self.tenant.user_count) if inv._user_kind(i) == KIND_MEMBER] or \
            list(range(self.tenant.user_count))

    @cached_property
    def member_users(self) -> list[int]:
        return self._members()

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
            rnd = self._rnd(f"app-owners:{i}")
            owners = self._big(rnd) if i == 1 else self._some_users(rnd, rnd.choice((0, 1, 1, 2, 3)))
            if i > 0 and rnd.random() < 0.1:
                owners.append((SP_TYPE, sps[rnd.randrange(len(sps))]["id"]))
            out[app["id"]] = owners
        for k, sp in enumerate(self.service_principals):
            if sp["appOwnerOrganizationId"] != self.tenant.tenant_id:
                continue
            rnd = self._rnd(f"sp-owners:{k}")
            out[sp["id"]] = self._big(rnd) if k == 2 else self._some_users(rnd, rnd.choice((0, 0, 1, 2)))
        return out

    @cached_property
    def group_owners(self) -> list[list[tuple[str, str]]]:
        """Owners per group index: users, and service principals for a few security groups (group 6 always).
        Group 9 has hundreds."""
        inv, sp_ids = self.inv, [s["id"] for s in self.service_principals]
        out = []
        for g, group in enumerate(inv.groups()):
            rnd = self._rnd(f"group-owners:{g}")
            owners = self._big(rnd) if g == 9 else self._some_users(rnd, rnd.choice((0, 1, 1, 2, 3)))
            if group["securityEnabled"] and not group["mailEnabled"] and (g == 6 or rnd.random() < 0.05):
                owners.append((SP_TYPE, sp_ids[rnd.randrange(len(sp_ids))]))
            out.append(owners)
        return out

    @cached_property
    def member_of(self) -> dict[str, list[str]]:
        """Groups each service principal is a direct member of (from the inventory's memberships)."""
        inv, out = self.inv, {}
        for g, group in enumerate(inv.groups()):
            for odata_type, oid in inv.direct_members(g):
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
                    out.setdefault(owner, []).append((GROUP_TYPE, self.inv.groups()[g]["id"]))
        return out

    @cached_property
    def app_role_assignments(self) -> dict[str, list[dict[str, Any]]]:
        """appRoleAssignedTo per resource service principal (resources/approleassignment.md): Graph's application
        permissions granted to apps (the connector's own: the roles its token carries), users and groups
        assigned to enterprise apps; one app (index 3) has hundreds."""
        t, inv = self.tenant, self.inv
        out: dict[str, list[dict[str, Any]]] = {}
        graph = self.graph_sp
        roles = {r["value"]: r["id"] for r in graph["appRoles"]}

        def add(resource: dict[str, Any], principal_type: str, principal_id: str, name: str, app_role: str,
                label: str) -> None:
            raw = uuid.UUID(principal_id).bytes_le + _digest(self.seed, label)[:16]
            out.setdefault(resource["id"], []).append({
                "id": base64.urlsafe_b64encode(raw).decode().rstrip("="), "deletedDateTime": None,
                "appRoleId": app_role, "createdDateTime": _iso(t.now_epoch - len(label) * DAY - 3600),
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
                rnd = self._rnd(f"graph-grants:{k}")
                for value in sorted({GRAPH_ROLES[rnd.randrange(len(GRAPH_ROLES))][0]
                                     for _ in range(rnd.choice((0, 0, 1, 2)))}):
                    add(graph, "ServicePrincipal", sp["id"], sp["displayName"], roles[value], f"{k}:{value}")
            if sp["appRoleAssignmentRequired"]:
                rnd = self._rnd(f"assignments:{k}")
                app_roles = [r["id"] for r in sp["appRoles"]] or [DEFAULT_ACCESS]
                users = self._big(rnd) if k == 3 else self._some_users(rnd, rnd.randrange(1, 8))
                for _, uid in users:
                    index = t.index_of(uid)
                    name = t.user(index, ("displayName",))["displayName"] if index is not None else None
                    add(sp, "User", uid, name, app_roles[rnd.randrange(len(app_roles))], f"{k}:{uid}")
                groups = inv.groups()
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
            rnd = self._rnd(f"grants:{k}")
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
        inv = self.inv
        if index == 0 or inv._user_kind(index) != KIND_MEMBER:
            return None
        boss = (index - 1) // 7
        return boss if inv._user_kind(boss) == KIND_MEMBER else None

    @cached_property
    def eligibility_schedules(self) -> list[dict[str, Any]]:
        """unifiedRoleEligibilitySchedule (resources/unifiedroleeligibilityschedule.md)."""
        t = self.tenant
        rnd = self._rnd("eligibility")
        out = []
        for n, (_, uid) in enumerate(self._some_users(rnd, max(3, t.user_count // 200))):
            role = ROLE_TEMPLATES[rnd.randrange(len(ROLE_TEMPLATES))][1]
            start = t.now_epoch - rnd.randrange(10, 400) * DAY
            permanent = rnd.random() < 0.4
            out.append(self._schedule(f"elig:{n}", uid, role, start, permanent, rnd))
        return out

    @cached_property
    def assignment_schedules(self) -> list[dict[str, Any]]:
        """unifiedRoleAssignmentSchedule: every active assignment (permanent 'Assigned'), plus activations of
        some eligibilities ('Activated', ending within hours)."""
        t = self.tenant
        rnd = self._rnd("assignment-schedules")
        out = []
        for n, (assignment, _principal) in enumerate(self.inv.role_assignments()):
            item = self._schedule(f"assign:{n}", assignment["principalId"], assignment["roleDefinitionId"],
                                  t.now_epoch - (n + 30) * DAY, True, rnd)
            item["assignmentType"] = "Assigned"
            out.append(item)
        for n, elig in enumerate(self.eligibility_schedules[::3]):
            item = self._schedule(f"activated:{n}", elig["principalId"], elig["roleDefinitionId"],
                                  t.now_epoch - 3600, False, rnd, hours=8)
            item.update(assignmentType="Activated", createdUsing=elig["id"])
            out.append(item)
        return out

    def _schedule(self, label: str, principal: str, role: str, start: int, permanent: bool, rnd: random.Random,
                  hours: int | None = None) -> dict[str, Any]:
        sid = _uid(self.seed, f"schedule:{label}")
        end = start + hours * 3600 if hours else start + rnd.randrange(90, 400) * DAY
        return {"id": sid, "principalId": principal, "roleDefinitionId": role, "directoryScopeId": "/",
                "appScopeId": None, "createdUsing": sid, "createdDateTime": _iso(start),
                "modifiedDateTime": None, "status": "Provisioned", "memberType": "Direct",
                "scheduleInfo": {"startDateTime": _iso(start), "recurrence": None, "expiration": (
                    {"type": "noExpiration", "endDateTime": None, "duration": None} if permanent else
                    {"type": "afterDateTime", "endDateTime": _iso(end), "duration": None})}}

    # ------------------------------------------------------------------ routes

    def route(self, svc: GraphService, req: Request, claims: dict[str, Any], raw: list[str],
              rest: list[str]) -> Response | None:
        """Graph routes for these objects; None for anything else."""
        from .services import GROUP_ROLES, INTUNE_ROLES, USER_ROLES

        app_roles = frozenset({"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All",
                               "Directory.ReadWrite.All", "Application.ReadWrite.OwnedBy"})
        inv = self.inv
        if rest in (["applications"], ["serviceprincipals"]):
            return self._objects(svc, req, claims, app_roles, rest[0])
        if len(rest) == 3 and rest[0] in ("applications", "serviceprincipals"):
            svc._options(req, {"$select", "$top", "$skiptoken"}, rest[2])
            svc._deny(claims, app_roles)
            owner = self._by_id.get(raw[1].lower())
            kind = "application" if rest[0] == "applications" else "servicePrincipal"
            if owner is None or owner[0] != kind:
                raise _not_found(raw[1])
            obj_id = owner[1]["id"]
            if rest[2] == "owners":
                pairs = self.owners.get(obj_id, [])
            elif kind == "servicePrincipal" and rest[2] == "memberof":
                # api/serviceprincipal-list-memberof.md: groups and directory roles, direct only; 100 / 999.
                pairs = [(GROUP_TYPE, g) for g in self.member_of.get(obj_id, [])]
            elif kind == "servicePrincipal" and rest[2] == "ownedobjects":
                pairs = self.owned_objects.get(obj_id, [])  # api/serviceprincipal-list-ownedobjects.md
            elif kind == "servicePrincipal" and rest[2] == "approleassignedto":
                # api/serviceprincipal-list-approleassignedto.md; page sizes not documented [UNVERIFIED 100/999]
                items = self.app_role_assignments.get(obj_id, [])
                return svc._list(req, lambda: items, f"servicePrincipals('{obj_id}')/appRoleAssignedTo", 100, 999)
            else:
                return None
            return svc._list(req, lambda: pairs, "directoryObjects", 100, 999, render=_renderer(inv, req),
                             odata_type=True)
        if len(rest) == 3 and rest[0] == "groups" and rest[2] in ("members", "transitivemembers", "owners"):
            return self._group_relation(svc, req, claims, raw, rest, GROUP_ROLES)
        if rest == ["oauth2permissiongrants"]:
            # api/oauth2permissiongrant-list.md: "supports the $filter (eq) OData query parameter" only; the page
            # size is not documented [UNVERIFIED: 100]. Permissions: see connector/catalog/datasets.py GRANT_READ.
            svc._options(req, {"$skiptoken"}, "oauth2PermissionGrants")
            svc._deny(claims, frozenset({"DelegatedPermissionGrant.Read.All", "Directory.Read.All",
                                         "DelegatedPermissionGrant.ReadWrite.All", "Directory.ReadWrite.All"}))
            return svc._list(req, lambda: self.grants, "oauth2PermissionGrants", 100, 100)
        if rest[:2] == ["rolemanagement", "directory"] and rest[2:] in (["roleeligibilityschedules"],
                                                                       ["roleassignmentschedules"]):
            return self._schedules(svc, req, claims, rest[2])
        if len(rest) == 4 and rest[:2] == ["devicemanagement", "detectedapps"] and rest[3] == "manageddevices":
            # api/intune-devices-manageddevice-list.md: GET /deviceManagement/detectedApps/{id}/managedDevices
            svc._options(req, {"$select", "$top", "$skiptoken"}, "managedDevices")
            scopes = ", ".join(sorted(INTUNE_ROLES))
            svc._deny(claims, INTUNE_ROLES, "Forbidden", "Application is not authorized to perform this operation. "
                      f"Application must have one of the following scopes: {scopes}")
            devices = inv.detected_app_devices(raw[2])
            if devices is None:
                raise _not_found(raw[2])
            return svc._list(req, lambda: devices, f"deviceManagement/detectedApps('{raw[2]}')/managedDevices",
                             1000, 1000, odata_type=True)
        if rest == ["users"] and any(k.lower() == "$expand" for k, _ in req.pairs):
            return self._users_with_manager(svc, req, claims, USER_ROLES)
        return None

    def _objects(self, svc: GraphService, req: Request, claims: dict[str, Any], roles: frozenset[str],
                 name: str) -> Response:
        """/applications and /servicePrincipals: default 100, $top up to 999 (api/application-list.md,
        serviceprincipal-list.md). keyCredentials' `key` only with $select=keyCredentials, and such requests are
        limited to 150 a minute per tenant (same pages)."""
        options = svc._options(req, {"$select", "$top", "$skiptoken"}, name)
        svc._deny(claims, roles)
        select = [p.strip().lower() for p in options.get("$select", "").split(",") if p.strip()]
        with_key = "keycredentials" in select
        if with_key:
            with self._lock:
                now = time.monotonic()
                while self._key_selects and self._key_selects[0] <= now - KEY_SELECT_WINDOW:
                    self._key_selects.popleft()
                if len(self._key_selects) >= KEY_SELECT_LIMIT:
                    wait = max(1, math.ceil(self._key_selects[0] + KEY_SELECT_WINDOW - now))
                    raise _error(429, "TooManyRequests", "Please retry again later.", {"Retry-After": str(wait)})
                self._key_selects.append(now)
        source = self.applications if name == "applications" else self.service_principals

        def render(obj: dict[str, Any]) -> dict[str, Any]:
            out = {k: v for k, v in obj.items() if not k.startswith("_")}
            if not with_key:
                out["keyCredentials"] = [{**c, "key": None} for c in obj["keyCredentials"]]
            return out

        context = "applications" if name == "applications" else "servicePrincipals"
        return svc._list(req, lambda: source, context, 100, 999, render=render,
                         type_name="application" if name == "applications" else "servicePrincipal")

    def _group_relation(self, svc: GraphService, req: Request, claims: dict[str, Any], raw: list[str],
                        rest: list[str], group_roles: frozenset[str]) -> Response:
        inv = self.inv
        svc._options(req, {"$select", "$top", "$skiptoken"}, rest[2])
        svc._deny(claims, group_roles)
        index = inv.group_index(raw[1])
        if index is None:
            raise _not_found(raw[1])
        if rest[2] == "owners":
            # api/group-list-owners.md: "service principals are not listed as group owners" in v1.0.
            pairs = [p for p in self.group_owners[index] if p[0] != SP_TYPE]
        else:
            # api/group-list-members.md: hidden-membership groups need Member.Read.Hidden as well [the exact
            # refusal is not documented: 403 Authorization_RequestDenied here]; and "This API has a known issue
            # where service principals are not listed as group members in v1.0" (also concepts/known-issues.md).
            # transitiveMembers likewise [UNVERIFIED for transitiveMembers].
            if inv.groups()[index]["visibility"] == "HiddenMembership" and \
                    "Member.Read.Hidden" not in (claims.get("roles") or ()):
                raise _error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
            cache = self.__dict__.setdefault("_without_sps", {})
            pairs = cache.get((index, rest[2]))
            if pairs is None:  # computed once per group: the largest have every user as a member
                members = inv.direct_members(index) if rest[2] == "members" else inv.transitive_members(index)
                pairs = cache[(index, rest[2])] = [p for p in members if p[0] != SP_TYPE]
        return svc._list(req, lambda: pairs, "directoryObjects", 100, 999, render=_renderer(inv, req),
                         odata_type=True)

    def _schedules(self, svc: GraphService, req: Request, claims: dict[str, Any], which: str) -> Response:
        """PIM schedules (api/rbacapplication-list-roleeligibilityschedules.md, -roleassignmentschedules.md):
        $select, $filter and $expand, no $top; page size not documented [UNVERIFIED: 100]. Needs Entra ID P2:
        without it the tenant gets AadPremiumLicenseRequired [code observed in third-party reports; status
        UNVERIFIED: 403 here]."""
        svc._options(req, {"$select", "$skiptoken"}, which)
        eligibility = which == "roleeligibilityschedules"
        allowed = frozenset({"RoleManagement.Read.Directory", "RoleManagement.Read.All",
                             "RoleManagement.ReadWrite.Directory"} | (
            {"RoleEligibilitySchedule.Read.Directory", "RoleEligibilitySchedule.ReadWrite.Directory"} if eligibility
            else {"RoleAssignmentSchedule.Read.Directory", "RoleAssignmentSchedule.ReadWrite.Directory"}))
        svc._deny(claims, allowed)
        if not (self.spec.premium and self.spec.p2):
            raise _error(403, "AadPremiumLicenseRequired", "The tenant needs an AAD Premium 2 license.")
        items = self.eligibility_schedules if eligibility else self.assignment_schedules
        name = "roleEligibilitySchedules" if eligibility else "roleAssignmentSchedules"
        return svc._list(req, lambda: items, f"roleManagement/directory/{name}", 100, 100)

    @cached_property
    def _sorted_upns(self) -> tuple[list[str], list[int]]:
        """Lower-case UPNs in sorted order with their user indexes: a prefix is a contiguous range."""
        t = self.tenant
        pairs = sorted((t.upn(i).lower(), i) for i in range(t.user_count))
        return [u for u, _ in pairs], [i for _, i in pairs]

    def _prefix_matches(self, prefixes: tuple[str, ...]) -> tuple[int, ...]:
        """Same answer as Tenant.prefix_matches (indexes in paging order), by bisection and cached per
        filter: thousands of two-character chains would each scan every UPN on every page otherwise."""
        cache = self.__dict__.setdefault("_prefix_cache", {})
        found = cache.get(prefixes)
        if found is None:
            upns, indexes = self._sorted_upns
            hits: list[int] = []
            for prefix in {p.lower() for p in prefixes}:
                lo = bisect.bisect_left(upns, prefix)
                hi = lo
                while hi < len(upns) and upns[hi].startswith(prefix):
                    hi += 1
                hits.extend(indexes[lo:hi])
            found = cache[prefixes] = tuple(sorted(set(hits)))
        return found

    def _users_with_manager(self, svc: GraphService, req: Request, claims: dict[str, Any],
                            user_roles: frozenset[str]) -> Response:
        """GET /users?$expand=manager (api/user-list-manager.md). $expand is not supported with advanced queries
        (concepts/query-parameters.md), so $count or ConsistencyLevel is a 400; $select inside $expand needs
        $levels, and $levels works on a single user only (microsoft-graph-docs-contrib #1777: "Transitive
        manager's list is only supported on a single user"); at most 100 users per page (known issue 13635)."""
        from .services import DEFAULT_USER_PROPERTIES, METADATA, parse_upn_prefix_filter

        options = svc._options(req, {"$select", "$top", "$filter", "$expand", "$skiptoken"}, "users")
        if req.headers.get("consistencylevel", "").lower() == "eventual":
            raise _error(400, "Request_UnsupportedQuery", "$expand is not supported with advanced queries.")
        expand = options["$expand"].strip()
        if expand.lower() != "manager":
            if re.search(r"\$levels", expand, re.I):
                raise _error(400, "Request_Unsupported", "Transitive manager's list is only supported on a single "
                             "user, send the $expand request on /users/{id} endpoint")
            raise _error(400, "BadRequest", f"Unsupported $expand '{expand}' on users: only manager (with $levels for "
                         "a nested $select).")
        svc._deny(claims, user_roles)
        tenant = self.tenant
        if "$filter" in options:
            try:
                candidates: Any = self._prefix_matches(parse_upn_prefix_filter(options["$filter"]))
            except ValueError:
                raise _error(400, "Request_UnsupportedQuery", "Unsupported or invalid query filter clause.") from None
        else:
            candidates = range(tenant.user_count)
        props = list(DEFAULT_USER_PROPERTIES)
        if "$select" in options:
            props = svc._select(options["$select"], svc.user_properties, "user")
            if "id" not in props:
                props.append("id")
        size = EXPAND_PAGE
        if "$top" in options:
            top = options["$top"]
            if not re.fullmatch(r"\d+", top) or not 1 <= int(top) <= 999:
                raise _error(400, "Request_UnsupportedQuery", f"Invalid page size specified: '{top}'. Must be between "
                             "1 and 999 inclusive.")
            size = min(int(top), EXPAND_PAGE)
        bound = f"{req.path.lower()}|expand|{options.get('$filter', '')}"
        start = svc._read_skiptoken(options["$skiptoken"], bound) if "$skiptoken" in options else 0
        page = candidates[start:start + size]
        values = []
        for i in page:
            user = tenant.user(i, props)
            boss = self.manager_of(i)
            if boss is not None:
                user["manager"] = {"@odata.type": USER_TYPE, **tenant.user(boss, DEFAULT_USER_PROPERTIES)}
            values.append(user)
        body: dict[str, Any] = {"@odata.context": f"{METADATA}#users"}
        if start + len(page) < len(candidates):
            body["@odata.nextLink"] = svc._next_link(req, svc._make_skiptoken(start + len(page), bound))
        body["value"] = values
        return svc._ok(body)


def _renderer(inv: Inventory, req: Request) -> Any:
    """directoryObject rendering; with $select=id only the id and @odata.type survive the selection, so
    the full object (a user's default properties) is not built for every member of a 100,000-member group."""
    select = {p.strip().lower() for k, v in req.pairs if k.lower() == "$select" for p in v.split(",")}
    if select == {"id"}:
        return lambda pair: {"@odata.type": pair[0], "id": pair[1]}
    return lambda pair: inv.directory_object(*pair)


def role_id(seed: int, value: str) -> str:
    """A Microsoft Graph app role's id: the published one where known."""
    known = dict(GRAPH_ROLES).get(value)
    return known or _uid(seed, f"graph-role:{value}")


def _not_found(key: str) -> Exception:
    return _error(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist or one of its queried "
                  "reference-property objects are not present.")


__all__ = ["AppDirectory", "role_id"]
