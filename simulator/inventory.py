"""Deterministic directory inventory beyond users: groups and memberships, devices, Intune
managed devices and detected apps, directory roles, applications and service principals, company
subscriptions and authentication-method registration details (graph-facts §3, §5, §8, §9).

Everything derives from the tenant's seed, so a test can compare what a client collected with
what this module says exists. Built lazily and once: the first request that needs it pays. The
parts live in their own modules (devices, groups, roles, access); :class:`Inventory` assembles them
and answers for all of them.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from .access import AppDirectory
from .devices import Devices
from .groups import Groups, Member
from .object_types import APP_TYPE, DEVICE_TYPE, GROUP_TYPE, SP_TYPE, USER_TYPE
from .roles import ROLE_TEMPLATES, DirectoryRoles
from .seeded import DAY, digest, guid, iso, seeded_random
from .user_objects import DEFAULT_USER_PROPERTIES

if TYPE_CHECKING:
    from .tenant import Tenant, TenantSpec


# companySubscription lifecycle per SKU status
_SUBSCRIPTION_STATUS = {"Enabled": "Enabled", "Warning": "Warning", "Suspended": "Suspended", "LockedOut": "LockedOut"}


class Inventory:
    """Groups, devices, roles, apps, subscriptions and MFA registration of one simulated tenant."""

    def __init__(self, tenant: Tenant, spec: TenantSpec) -> None:
        self.tenant = tenant
        self.tenant_spec = spec
        self.seed = tenant.seed
        self._devices = Devices(tenant, spec)
        self._groups = Groups(tenant, spec, self._devices, lambda: self.apps.sp_ids)
        self._roles = DirectoryRoles(tenant, self._groups)

    @cached_property
    def apps(self) -> AppDirectory:
        """Applications, service principals, owners, grants, PIM schedules and managers (simulator/access.py)."""
        return AppDirectory(self.tenant, self.tenant_spec, self._groups, self._roles)

    # ------------------------------------------------------------------ groups

    def groups(self) -> list[dict[str, Any]]:
        return self._groups.groups()

    def group_index(self, group_id: str) -> int | None:
        return self._groups.group_index(group_id)

    def direct_members(self, index: int) -> list[Member]:
        """(@odata.type, id) of the group's direct members, in paging order."""
        return self._groups.direct_members(index)

    def transitive_members(self, index: int) -> list[Member]:
        """Direct members first, then members reached through nested groups (breadth first), once each."""
        return self._groups.transitive_members(index)

    # ------------------------------------------------------------------ devices

    def device(self, index: int) -> dict[str, Any]:
        """Entra device object (§8 /devices)."""
        return self._devices.device(index)

    def devices(self) -> list[dict[str, Any]]:
        return self._devices.devices()

    def managed_devices(self) -> list[dict[str, Any]]:
        return self._devices.managed_devices()

    def managed_device_overview(self) -> dict[str, Any]:
        return self._devices.managed_device_overview()

    def detected_apps(self) -> list[dict[str, Any]]:
        return self._devices.detected_apps()

    def detected_app_devices(self, app_id: str) -> list[dict[str, Any]] | None:
        """The managed devices a detected app is on (None: no such detected app)."""
        return self._devices.detected_app_devices(app_id)

    # ------------------------------------------------------------------ roles

    def role_definitions(self) -> list[dict[str, Any]]:
        return self._roles.role_definitions()

    def role_assignments(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(assignment, principal object) pairs."""
        return self._roles.role_assignments()

    # ------------------------------------------------------------------ directory objects

    def directory_object(self, odata_type: str, oid: str) -> dict[str, Any]:
        """The member object as Graph returns it in a directoryObject collection (no $select)."""
        if odata_type == USER_TYPE:
            index = self.tenant.index_of(oid)
            assert index is not None
            return {"@odata.type": USER_TYPE, **self.tenant.user(index, DEFAULT_USER_PROPERTIES)}
        if odata_type == GROUP_TYPE:
            g = self.groups()[self._groups.index_by_id[oid]]
            return {"@odata.type": GROUP_TYPE, "id": oid, "displayName": g["displayName"], "mail": g["mail"],
                    "securityEnabled": g["securityEnabled"], "mailEnabled": g["mailEnabled"]}
        if odata_type == DEVICE_TYPE:
            d = self.device(self._devices.device_index[oid])
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

    # ------------------------------------------------------------------ subscriptions

    def subscriptions(self) -> list[dict[str, Any]]:
        """/directory/subscriptions: one companySubscription per SKU, matching /subscribedSkus."""
        t = self.tenant
        out = []
        for sku in t.subscribed_skus():
            key = sku["skuPartNumber"]
            rnd = seeded_random(self.seed, f"subscription:{key}")
            prepaid = sku["prepaidUnits"]
            created = t.now_epoch - rnd.randrange(200, 1500) * DAY
            trial = key in ("STREAM", "FLOW_FREE")
            out.append({
                "id": guid(digest(self.seed, f"company-subscription:{key}")),
                "commerceSubscriptionId": sku["subscriptionIds"][0],
                "createdDateTime": iso(created),
                "isTrial": trial,
                "nextLifecycleDateTime": iso(t.now_epoch + rnd.randrange(5, 360) * DAY),
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
            rnd = seeded_random(self.seed, f"mfa:{i}")
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
                "lastUpdatedDateTime": iso(t.now_epoch - rnd.randrange(1, 400) * DAY - rnd.randrange(DAY))[:-1]
                + f".{rnd.randrange(10**7):07d}Z",
                "methodsRegistered": methods,
                "systemPreferredAuthenticationMethods": [preferred] if preferred != "none" else [],
                "userDisplayName": u["displayName"],
                "userPrincipalName": u["userPrincipalName"],
                "userPreferredMethodForSecondaryAuthentication": "" if guest and not methods else preferred,
                "userType": "guest" if guest else "member",
            })
        return out
