"""Deterministic directory inventory beyond users: groups and memberships, devices, Intune
managed devices and detected apps, directory roles, company subscriptions and
authentication-method registration details (graph-facts §3, §5, §8, §9).

Everything derives from the tenant's seed, so a test can compare what a client collected with
what this module says exists. Built lazily and once: the first request that needs it pays.
"""

from __future__ import annotations

import base64
import random
import threading
import uuid
from collections import deque
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .tenant import DAY, KIND_GUEST, KIND_MEMBER, KIND_SERVICE, LICENSE_GROUP_SKUS, LICENSE_GROUPS, _digest, _guid, _iso

if TYPE_CHECKING:
    from .tenant import Tenant, TenantSpec

USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"
DEVICE_TYPE = "#microsoft.graph.device"
SP_TYPE = "#microsoft.graph.servicePrincipal"
APP_TYPE = "#microsoft.graph.application"

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

# (displayName, publisher, platform, versions)
APP_CATALOG: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("Microsoft 365 Apps for enterprise - en-us", "Microsoft Corporation", "windows", ("16.0.17328.20184",
                                                                                     "16.0.17425.20176")),
    ("Microsoft Edge", "Microsoft Corporation", "windows", ("124.0.2478.80", "125.0.2535.51")),
    ("Google Chrome", "Google LLC", "windows", ("124.0.6367.208", "125.0.6422.112")),
    ("Mozilla Firefox (x64 en-US)", "Mozilla", "windows", ("126.0",)),
    ("7-Zip 23.01 (x64)", "Igor Pavlov", "windows", ("23.01",)),
    ("Notepad++ (64-bit x64)", "Notepad++ Team", "windows", ("8.6.5",)),
    ("Zoom Workplace (64-bit)", "Zoom Video Communications, Inc.", "windows", ("6.0.11",)),
    ("Adobe Acrobat Reader DC", "Adobe Inc.", "windows", ("24.002.20759",)),
    ("Microsoft Visio - en-us", "Microsoft Corporation", "windows", ("16.0.17328.20184",)),
    ("Python 3.12.3 (64-bit)", "Python Software Foundation", "windows", ("3.12.3150.0",)),
    ("Microsoft Teams", "Microsoft", "macOS", ("24124.1412.2911.3341",)),
    ("Microsoft Outlook", "Microsoft", "macOS", ("16.85",)),
    ("Slack", "Slack Technologies", "macOS", ("4.38.121",)),
    ("Microsoft Authenticator", "Microsoft Corporation", "ios", ("6.8.9",)),
    ("Outlook", "Microsoft Corporation", "ios", ("4.2418.0",)),
    ("WhatsApp", "WhatsApp Inc.", "ios", ("24.10.74",)),
    ("Microsoft Teams", "Microsoft Corporation", "androidWorkProfile", ("1416/1.0.0.2024091201",)),
    ("Company Portal", "Microsoft Corporation", "androidWorkProfile", ("5.0.6198.0",)),
    ("Fabrikam Expenses", "", "windows", ("2.1.0",)),
)

# Device flavours: (operatingSystem (Entra), version, trustType, manufacturer, model, Intune os, platform)
DEVICE_KINDS: tuple[tuple[str, str, str, str, str, str, str], ...] = (
    ("Windows", "10.0.22631.3593", "AzureAd", "Microsoft Corporation", "Surface Laptop 5", "Windows", "windows"),
    ("Windows", "10.0.19045.4412", "ServerAd", "Dell Inc.", "Latitude 7440", "Windows", "windows"),
    ("Windows", "10.0.22631.3737", "AzureAd", "LENOVO", "21HD0040GE", "Windows", "windows"),
    ("MacMDM", "14.5", "Workplace", "Apple", "MacBookPro18,3", "macOS", "macOS"),
    ("iOS", "17.5.1", "Workplace", "Apple", "iPhone 15", "iOS", "ios"),
    ("Android", "14", "Workplace", "samsung", "SM-S918B", "Android", "androidWorkProfile"),
)
COMPLIANCE = ("compliant",) * 8 + ("noncompliant", "inGracePeriod", "unknown")

# companySubscription lifecycle per SKU status
_SUBSCRIPTION_STATUS = {"Enabled": "Enabled", "Warning": "Warning", "Suspended": "Suspended", "LockedOut": "LockedOut"}


def role_assignment_id(role_definition_id: str, principal_id: str) -> str:
    """§9: base64url(roleDefinitionId.bytes_le + principalId.bytes_le) without padding, plus '-1'."""
    raw = uuid.UUID(role_definition_id).bytes_le + uuid.UUID(principal_id).bytes_le
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "-1"


class Inventory:
    """Groups, devices, roles, subscriptions and MFA registration of one simulated tenant."""

    def __init__(self, tenant: Tenant, spec: TenantSpec) -> None:
        self.tenant = tenant
        self.tenant_spec = spec
        self.seed = tenant.seed
        users = tenant.user_count
        self.group_count = spec.groups if spec.groups is not None else max(12, users // 25)
        self.device_count = spec.devices if spec.devices is not None else int(users * 0.6)
        self._lock = threading.RLock()

    def _rnd(self, label: str) -> random.Random:
        return random.Random(int.from_bytes(_digest(self.seed, label), "big"))

    def _user_kind(self, index: int) -> int:
        d = _digest(self.seed, f"user:{index}")
        return KIND_GUEST if d[4] < 14 else KIND_SERVICE if d[4] < 18 else KIND_MEMBER

    # ------------------------------------------------------------------ groups

    @cached_property
    def _groups(self) -> tuple[list[dict[str, Any]], list[list[tuple[str, str]]]]:
        """(group objects, direct members as (odata type, id)), built once."""
        with self._lock:
            return self._build_groups()

    def _build_groups(self) -> tuple[list[dict[str, Any]], list[list[tuple[str, str]]]]:
        t = self.tenant
        n, users = self.group_count, t.user_count
        groups: list[dict[str, Any]] = []
        members: list[list[tuple[str, str]]] = []
        kinds: list[str] = []
        sku_ids = {s.key: s.sku_id for s in t.skus}
        licence_members = self._licence_members()
        base = t.now_epoch - 2000 * DAY
        for g in range(n):
            rnd = self._rnd(f"group:{g}")
            if g < len(LICENSE_GROUPS):
                gid = LICENSE_GROUPS[g]
                kind = "licence"
            else:
                gid = _guid(_digest(self.seed, f"group-id:{g}"))
                draw = rnd.random()
                kind = ("all" if g == 3 else "dynamic" if g == 4 else "security" if g in (5, 6, 7) else
                        "unified" if draw < 0.4 else
                        "security" if draw < 0.85 else "mailsecurity" if draw < 0.95 else "roleassignable")
            kinds.append(kind)
            nick = {"licence": f"lic-{['m365-e3', 'm365-e5', 'ems'][g % 3]}", "all": "allcompany",
                    "dynamic": "sales-dynamic"}.get(kind, f"{kind[:4]}-{g:05d}")
            unified = kind in ("unified", "all")
            mail_enabled = kind in ("unified", "all", "mailsecurity")
            mail = f"{nick}@{t.default_domain}" if mail_enabled else None
            group = {
                "id": gid,
                "deletedDateTime": None,
                "classification": None,
                "createdDateTime": _iso(base + rnd.randrange(0, 1900) * DAY + rnd.randrange(DAY)),
                "description": None if rnd.random() < 0.3 else f"{kind.title()} group {g}",
                "displayName": {"licence": f"LIC - {['Microsoft 365 E3', 'Office 365 E5', 'EMS E3'][g % 3]}",
                                "all": "All Company", "dynamic": "Sales (dynamic)"}.get(kind, f"Group {g:05d}"),
                "expirationDateTime": None,
                "groupTypes": ["Unified"] if unified else ["DynamicMembership"] if kind == "dynamic" else [],
                "isAssignableToRole": True if kind == "roleassignable" else None,
                "mail": mail,
                "mailEnabled": mail_enabled,
                "mailNickname": nick,
                "membershipRule": '(user.department -eq "Sales")' if kind == "dynamic" else None,
                "membershipRuleProcessingState": "On" if kind == "dynamic" else None,
                "onPremisesLastSyncDateTime": None,
                "onPremisesSecurityIdentifier": None,
                "onPremisesSyncEnabled": True if kind == "security" and rnd.random() < 0.3 else None,
                "preferredDataLocation": None,
                "proxyAddresses": [f"SMTP:{mail}"] if mail else [],
                "renewedDateTime": None,
                "resourceProvisioningOptions": ["Team"] if unified and rnd.random() < 0.6 else [],
                "securityEnabled": not unified or kind == "all",
                "securityIdentifier": "S-1-12-1-" + "-".join(str(rnd.randrange(2**32)) for _ in range(4)),
                "visibility": self._visibility(g, rnd.random()) if unified else None,
                "assignedLicenses": [{"disabledPlans": [], "skuId": sku_ids[LICENSE_GROUP_SKUS[g]]}]
                if kind == "licence" and LICENSE_GROUP_SKUS[g] in sku_ids else [],
            }
            if kind == "licence":
                direct = [(USER_TYPE, t.user_id(i)) for i in licence_members[g]]
            elif kind == "all":
                direct = [(USER_TYPE, t.user_id(i)) for i in range(users)]
            elif kind == "dynamic":
                direct = [(USER_TYPE, t.user_id(i)) for i in range(users)
                          if self._user_kind(i) == KIND_MEMBER and _digest(self.seed, f"user:{i}")[11] % 9 == 0]
            else:
                k = min(users, int(rnd.expovariate(1 / 12)) + (5 if kind == "licence" else 0))
                direct = [(USER_TYPE, t.user_id(i)) for i in sorted(rnd.sample(range(users), k))]
                if kind in ("security", "mailsecurity") and self.device_count and (g == 5 or rnd.random() < 0.1):
                    direct += [(DEVICE_TYPE, self.device(i)["id"])
                               for i in sorted(rnd.sample(range(self.device_count), min(3, self.device_count)))]
            groups.append(group)
            members.append(direct)
        # Nesting: security groups may contain security groups with a higher index (no cycles);
        # groups 5 > 6 > 7 always form a two-level chain.
        for g, c in ((5, 6), (6, 7)):
            if c < n:
                members[g].append((GROUP_TYPE, groups[c]["id"]))
        for g in range(8, n):
            rnd = self._rnd(f"nest:{g}")
            if kinds[g] not in ("security", "mailsecurity") or rnd.random() >= 0.15:
                continue
            children = [c for c in range(g + 1, min(n, g + 40)) if kinds[c] in ("security", "roleassignable")]
            for c in rnd.sample(children, min(len(children), 1 + (rnd.random() < 0.3))):
                members[g].append((GROUP_TYPE, groups[c]["id"]))
        unified = [g for g in range(8, n) if kinds[g] == "unified"]
        if unified and not any(groups[g]["visibility"] == "HiddenMembership" for g in unified):
            groups[unified[0]]["visibility"] = "HiddenMembership"  # every tenant of a few groups has one
        # Service principals are members of some security groups (group 7, the end of the 5 > 6 > 7 chain,
        # always: their memberships of 5 and 6 are transitive). v1.0 /groups/{id}/members does not list them
        # (see access.py); /servicePrincipals/{id}/memberOf does.
        sp_ids = self.apps.sp_ids
        for g in range(5, n):
            if kinds[g] not in ("security", "mailsecurity") or not sp_ids:
                continue
            rnd = self._rnd(f"sp-member:{g}")
            if g == 7 or rnd.random() < 0.06:
                members[g].append((SP_TYPE, sp_ids[rnd.randrange(len(sp_ids))]))
        return groups, members

    def _visibility(self, g: int, draw: float) -> str:
        """Microsoft 365 groups: Public, Private, or HiddenMembership for about one in twelve (resources/group.md:
        members of a hidden-membership group are visible to owners, members and Member.Read.Hidden only)."""
        if self._rnd(f"hidden:{g}").random() < 0.08:
            return "HiddenMembership"
        return "Public" if draw < 0.5 else "Private"

    @cached_property
    def apps(self) -> Any:
        """Applications, service principals, owners, grants, PIM schedules and managers (simulator/access.py)."""
        from .access import AppDirectory

        return AppDirectory(self)

    def _licence_members(self) -> list[list[int]]:
        """Users of each licence group: exactly those whose licence assignment names the group."""
        t = self.tenant
        members: list[list[int]] = [[] for _ in LICENSE_GROUPS]
        for i in range(t.user_count):
            core = t._core(i)
            if core.combo:
                for grant in t.grants(i, core):
                    if grant.group is not None:
                        members[grant.group].append(i)
        return members

    def groups(self) -> list[dict[str, Any]]:
        return self._groups[0]

    @cached_property
    def _group_index(self) -> dict[str, int]:
        return {g["id"]: i for i, g in enumerate(self.groups())}

    def group_index(self, group_id: str) -> int | None:
        return self._group_index.get(group_id.lower())

    def direct_members(self, index: int) -> list[tuple[str, str]]:
        """(@odata.type, id) of the group's direct members, in paging order."""
        return self._groups[1][index]

    def transitive_members(self, index: int) -> list[tuple[str, str]]:
        """Direct members first, then members reached through nested groups (breadth first), once each."""
        seen: dict[str, str] = {}
        queue = deque([index])
        visited = {index}
        while queue:
            g = queue.popleft()
            for odata_type, oid in self.direct_members(g):
                seen.setdefault(oid, odata_type)
                if odata_type == GROUP_TYPE:
                    child = self._group_index[oid]
                    if child not in visited:
                        visited.add(child)
                        queue.append(child)
        seen.pop(self.groups()[index]["id"], None)
        return [(t, oid) for oid, t in seen.items()]

    def directory_object(self, odata_type: str, oid: str) -> dict[str, Any]:
        """The member object as Graph returns it in a directoryObject collection (no $select)."""
        if odata_type == USER_TYPE:
            index = self.tenant.index_of(oid)
            assert index is not None
            from .services import DEFAULT_USER_PROPERTIES

            return {"@odata.type": USER_TYPE, **self.tenant.user(index, DEFAULT_USER_PROPERTIES)}
        if odata_type == GROUP_TYPE:
            g = self.groups()[self._group_index[oid]]
            return {"@odata.type": GROUP_TYPE, "id": oid, "displayName": g["displayName"], "mail": g["mail"],
                    "securityEnabled": g["securityEnabled"], "mailEnabled": g["mailEnabled"]}
        if odata_type == DEVICE_TYPE:
            d = self.device(self._device_index[oid])
            return {"@odata.type": DEVICE_TYPE, "id": oid, "displayName": d["displayName"],
                    "deviceId": d["deviceId"], "operatingSystem": d["operatingSystem"],
                    "accountEnabled": d["accountEnabled"]}
        if odata_type == SP_TYPE:
            sp = self.apps.service_principal_by_id(oid)
            if sp is not None:
                return {"@odata.type": SP_TYPE, "id": oid, "appId": sp["appId"], "displayName": sp["displayName"],
                        "servicePrincipalType": sp["servicePrincipalType"], "accountEnabled": sp["accountEnabled"]}
        if odata_type == APP_TYPE:
            app = self.apps.application_by_id(oid)
            if app is not None:
                return {"@odata.type": APP_TYPE, "id": oid, "appId": app["appId"], "displayName": app["displayName"]}
        return {"@odata.type": odata_type, "id": oid}

    # ------------------------------------------------------------------ devices

    def _device_owner(self, index: int) -> int:
        users = self.tenant.user_count
        return int.from_bytes(_digest(self.seed, f"device-owner:{index}")[:4], "big") % max(1, users)

    def device(self, index: int) -> dict[str, Any]:
        """Entra device object (§8 /devices)."""
        rnd = self._rnd(f"device:{index}")
        os_name, version, trust, _mf, model, _ios, _pf = DEVICE_KINDS[rnd.randrange(len(DEVICE_KINDS))]
        managed = rnd.random() < 0.75
        registered = self.tenant.now_epoch - rnd.randrange(30, 1500) * DAY - rnd.randrange(DAY)
        last = self.tenant.now_epoch - int(rnd.expovariate(1 / 6) * DAY)
        prefix = {"Windows": "DESKTOP-", "MacMDM": "MAC-", "iOS": "iPhone-", "Android": "Galaxy-"}[os_name]
        device_id = _guid(_digest(self.seed, f"device-deviceid:{index}"))
        return {
            "id": _guid(_digest(self.seed, f"device-id:{index}")),
            "deletedDateTime": None,
            "accountEnabled": rnd.random() < 0.97,
            "approximateLastSignInDateTime": _iso(max(registered, last)),
            "complianceExpirationDateTime": None,
            "createdDateTime": _iso(registered),
            "deviceCategory": None,
            "deviceId": device_id,
            "deviceMetadata": None,
            "deviceOwnership": "Company" if trust != "Workplace" else ("Personal" if rnd.random() < 0.5 else "Company"),
            "deviceVersion": 2,
            "displayName": f"{prefix}{device_id[:7].upper()}",
            "domainName": None,
            "enrollmentProfileName": None,
            "enrollmentType": "AzureDomainJoined" if trust == "AzureAd" else "OnPremiseCoManaged"
            if trust == "ServerAd" else "UserEnrollment",
            "externalSourceName": None,
            "isCompliant": managed and rnd.random() < 0.85,
            "isManaged": managed,
            "isRooted": False,
            "managementType": "MDM" if managed else None,
            "manufacturer": _mf,
            "mdmAppId": "0000000a-0000-0000-c000-000000000000" if managed else None,
            "model": model,
            "onPremisesLastSyncDateTime": _iso(self.tenant.now_epoch - 1800) if trust == "ServerAd" else None,
            "onPremisesSecurityIdentifier": None,
            "onPremisesSyncEnabled": True if trust == "ServerAd" else None,
            "operatingSystem": os_name,
            "operatingSystemVersion": version,
            "physicalIds": [],
            "profileType": "RegisteredDevice",
            "registrationDateTime": _iso(registered),
            "sourceType": None,
            "systemLabels": [],
            "trustType": trust,
            "alternativeSecurityIds": [],
        }

    def devices(self) -> list[dict[str, Any]]:
        return self._devices

    @cached_property
    def _devices(self) -> list[dict[str, Any]]:
        return [self.device(i) for i in range(self.device_count)]

    @cached_property
    def _device_index(self) -> dict[str, int]:
        return {d["id"]: i for i, d in enumerate(self._devices)}

    @cached_property
    def _managed(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, list[int]]]:
        """(managed devices, detected apps, detected app id -> indexes of its managed devices), consistent."""
        with self._lock:
            managed: list[dict[str, Any]] = []
            app_devices: dict[tuple[int, str], list[int]] = {}
            for i, dev in enumerate(self._devices):
                if not dev["isManaged"]:
                    continue
                rnd = self._rnd(f"managed:{i}")
                kind = next(k for k in DEVICE_KINDS if k[0] == dev["operatingSystem"] and k[4] == dev["model"])
                owner = self._device_owner(i)
                user = self.tenant.user(owner, ("id", "userPrincipalName", "displayName", "mail"))
                enrolled = rnd.randrange(30, 1400)
                total = rnd.choice((128, 256, 512)) * 1024**3
                managed.append({
                    "@odata.type": "#microsoft.graph.managedDevice",
                    "id": _guid(_digest(self.seed, f"managed-id:{i}")),
                    "userId": user["id"],
                    "deviceName": dev["displayName"],
                    "managedDeviceOwnerType": "company" if dev["deviceOwnership"] == "Company" else "personal",
                    "enrolledDateTime": _iso(self.tenant.now_epoch - enrolled * DAY),
                    "lastSyncDateTime": _iso(self.tenant.now_epoch - rnd.randrange(0, 14 * DAY)),
                    "operatingSystem": kind[5],
                    "complianceState": COMPLIANCE[rnd.randrange(len(COMPLIANCE))],
                    "jailBroken": "False" if kind[6] in ("ios", "androidWorkProfile") else "Unknown",
                    "managementAgent": "mdm",
                    "osVersion": dev["operatingSystemVersion"],
                    "easActivated": rnd.random() < 0.3,
                    "easDeviceId": None,
                    "easActivationDateTime": "0001-01-01T00:00:00Z",
                    "azureADRegistered": True,
                    "deviceEnrollmentType": "windowsAzureADJoin" if kind[6] == "windows" else "userEnrollment",
                    "activationLockBypassCode": None,
                    "emailAddress": user["mail"],
                    "azureADDeviceId": dev["deviceId"],
                    "deviceRegistrationState": "registered",
                    "deviceCategoryDisplayName": "Unknown Category",
                    "isSupervised": False,
                    "exchangeLastSuccessfulSyncDateTime": "0001-01-01T00:00:00Z",
                    "exchangeAccessState": "none",
                    "exchangeAccessStateReason": "none",
                    "remoteAssistanceSessionUrl": None,
                    "remoteAssistanceSessionErrorDetails": None,
                    "isEncrypted": rnd.random() < 0.9,
                    "userPrincipalName": user["userPrincipalName"],
                    "model": dev["model"],
                    "manufacturer": dev["manufacturer"],
                    "imei": None,
                    "complianceGracePeriodExpirationDateTime": "9999-12-31T23:59:59Z",
                    "serialNumber": _digest(self.seed, f"serial:{i}").hex()[:12].upper(),
                    "phoneNumber": None,
                    "androidSecurityPatchLevel": "2024-05-01" if kind[6] == "androidWorkProfile" else None,
                    "userDisplayName": user["displayName"],
                    "configurationManagerClientEnabledFeatures": None,
                    "wiFiMacAddress": _digest(self.seed, f"mac:{i}").hex()[:12],
                    "deviceHealthAttestationState": None,
                    "subscriberCarrier": "",
                    "meid": None,
                    "totalStorageSpaceInBytes": total,
                    "freeStorageSpaceInBytes": int(total * rnd.uniform(0.05, 0.8)),
                    "managedDeviceName": f"{user['userPrincipalName'].split('@')[0]}_{kind[5]}",
                    "partnerReportedThreatState": "unknown",
                    "requireUserEnrollmentApproval": None,
                    "managementCertificateExpirationDate": _iso(self.tenant.now_epoch + rnd.randrange(30, 365) * DAY),
                    "iccid": None,
                    "udid": None,
                    "notes": None,
                    "ethernetMacAddress": None,
                    "physicalMemoryInBytes": 0,
                    "deviceActionResults": [],
                })
                apps = [a for a in range(len(APP_CATALOG)) if APP_CATALOG[a][2] == kind[6]]
                for a in apps:
                    if rnd.random() < 0.6:
                        version = rnd.choice(APP_CATALOG[a][3])
                        app_devices.setdefault((a, version), []).append(len(managed) - 1)
            detected = []
            devices_of: dict[str, list[int]] = {}
            for (a, version), on in sorted(app_devices.items()):
                name, publisher, platform, _ = APP_CATALOG[a]
                count = len(on)
                app_id = _digest(self.seed, f"app:{a}:{version}").hex()
                devices_of[app_id] = on
                detected.append({
                    "@odata.type": "#microsoft.graph.detectedApp",
                    "id": app_id,
                    "displayName": name,
                    "version": version,
                    "sizeInByte": (a + 1) * 7340032 if platform == "windows" else 0,
                    "deviceCount": count,
                    "publisher": publisher,
                    "platform": platform,
                })
            return managed, detected, devices_of

    def managed_devices(self) -> list[dict[str, Any]]:
        return self._managed[0]

    def detected_apps(self) -> list[dict[str, Any]]:
        return self._managed[1]

    def detected_app_devices(self, app_id: str) -> list[dict[str, Any]] | None:
        """The managed devices a detected app is on (None: no such detected app)."""
        on = self._managed[2].get(app_id)
        return None if on is None else [self._managed[0][i] for i in on]

    # ------------------------------------------------------------------ roles

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
        rnd = self._rnd("roles")
        members = [i for i in range(t.user_count) if self._user_kind(i) == KIND_MEMBER]
        pairs: list[tuple[str, dict[str, Any]]] = []
        if members:
            count = max(8, t.user_count // 100)
            for n in range(count):
                role = ROLE_TEMPLATES[0 if n < 3 else rnd.randrange(len(ROLE_TEMPLATES))][1]
                user = t.user(rnd.choice(members), ("id", "displayName", "userPrincipalName", "accountEnabled",
                                                    "userType"))
                pairs.append((role, {"@odata.type": USER_TYPE, **user}))
        for g in self.groups():
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

    # ------------------------------------------------------------------ subscriptions

    def subscriptions(self) -> list[dict[str, Any]]:
        """/directory/subscriptions: one companySubscription per SKU, matching /subscribedSkus."""
        t = self.tenant
        out = []
        for sku in t.subscribed_skus():
            key = sku["skuPartNumber"]
            rnd = self._rnd(f"subscription:{key}")
            prepaid = sku["prepaidUnits"]
            created = t.now_epoch - rnd.randrange(200, 1500) * DAY
            trial = key in ("STREAM", "FLOW_FREE")
            out.append({
                "id": _guid(_digest(self.seed, f"company-subscription:{key}")),
                "commerceSubscriptionId": sku["subscriptionIds"][0],
                "createdDateTime": _iso(created),
                "isTrial": trial,
                "nextLifecycleDateTime": _iso(t.now_epoch + rnd.randrange(5, 360) * DAY),
                "ownerId": None,
                "ownerTenantId": None,
                "ownerType": None,
                "serviceStatus": [{"appliesTo": p["appliesTo"], "provisioningStatus": p["provisioningStatus"],
                                   "servicePlanId": p["servicePlanId"], "servicePlanName": p["servicePlanName"]}
                                  for p in sku["servicePlans"]],
                "skuId": sku["skuId"],
                "skuPartNumber": key,
                "status": _SUBSCRIPTION_STATUS.get(sku["capabilityStatus"], "Enabled"),
                "totalLicenses": sum(prepaid.values()),
            })
        return out

    # ------------------------------------------------------------------ MFA registration

    def registration_details(self) -> list[dict[str, Any]]:
        """userRegistrationDetails (§5), one per user, in user order."""
        return self._registration

    @cached_property
    def _registration(self) -> list[dict[str, Any]]:
        t = self.tenant
        admins = {p["id"] for a, p in self.role_assignments() if a["roleDefinitionId"] == ROLE_TEMPLATES[0][1]}
        out = []
        methods_pool = ("microsoftAuthenticatorPush", "softwareOneTimePasscode", "mobilePhone", "email",
                        "windowsHelloForBusiness", "fido2SecurityKey")
        for i in range(t.user_count):
            u = t.user(i, ("id", "userPrincipalName", "displayName", "userType"))
            rnd = self._rnd(f"mfa:{i}")
            guest = u["userType"] == "Guest"
            methods = sorted(rnd.sample(methods_pool, rnd.choice((0, 1, 1, 2, 2, 3)))) if rnd.random() < 0.9 else []
            mfa = any(m in methods for m in ("microsoftAuthenticatorPush", "softwareOneTimePasscode", "mobilePhone",
                                             "fido2SecurityKey", "windowsHelloForBusiness"))
            preferred = ("push" if "microsoftAuthenticatorPush" in methods else "oath"
                         if "softwareOneTimePasscode" in methods else "sms" if "mobilePhone" in methods else "none")
            out.append({
                "id": u["id"],
                "isAdmin": u["id"] in admins,
                "isMfaCapable": mfa,
                "isMfaRegistered": mfa,
                "isPasswordlessCapable": "fido2SecurityKey" in methods or "windowsHelloForBusiness" in methods,
                "isSsprCapable": mfa and not guest,
                "isSsprEnabled": not guest,
                "isSsprRegistered": bool(methods) and not guest,
                "isSystemPreferredAuthenticationMethodEnabled": True,
                "lastUpdatedDateTime": _iso(t.now_epoch - rnd.randrange(1, 400) * DAY - rnd.randrange(DAY))[:-1]
                + f".{rnd.randrange(10**7):07d}Z",
                "methodsRegistered": methods,
                "systemPreferredAuthenticationMethods": [preferred] if preferred != "none" else [],
                "userDisplayName": u["displayName"],
                "userPrincipalName": u["userPrincipalName"],
                "userPreferredMethodForSecondaryAuthentication": "" if guest and not methods else preferred,
                "userType": "guest" if guest else "member",
            })
        return out


__all__ = ["Inventory", "role_assignment_id"]
