"""Entra devices (§8 /devices), Intune managed devices and the apps Intune detected on them (§8), kept
consistent with each other and with the tenant's users; deterministic from the tenant's seed.
"""

from __future__ import annotations

import random
import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .seeded import DAY, digest, guid, iso, seeded_random

if TYPE_CHECKING:
    from .tenant import Tenant, TenantSpec



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


class Devices:
    """One tenant's devices: Entra device objects, the Intune-managed ones and their detected apps."""

    def __init__(self, tenant: Tenant, spec: TenantSpec) -> None:
        self.tenant = tenant
        self.seed = tenant.seed
        self.device_count = spec.devices if spec.devices is not None else int(tenant.user_count * 0.6)
        self._lock = threading.RLock()

    def _device_owner(self, index: int) -> int:
        users = self.tenant.user_count
        return int.from_bytes(digest(self.seed, f"device-owner:{index}")[:4], "big") % max(1, users)

    def device(self, index: int) -> dict[str, Any]:
        """Entra device object (§8 /devices) with the v1.0 properties only: `device` in v1.0 has no createdDateTime
        (resources/device.md; beta returns it, msgraph-beta-sdk-java #996), nor beta's domainName,
        externalSourceName and sourceType, so a $select of them is refused like any undefined property."""
        rnd = seeded_random(self.seed, f"device:{index}")
        os_name, version, trust, _mf, model, _ios, _pf = DEVICE_KINDS[rnd.randrange(len(DEVICE_KINDS))]
        managed = rnd.random() < 0.75
        registered = self.tenant.now_epoch - rnd.randrange(30, 1500) * DAY - rnd.randrange(DAY)
        last = self.tenant.now_epoch - int(rnd.expovariate(1 / 6) * DAY)
        prefix = {"Windows": "DESKTOP-", "MacMDM": "MAC-", "iOS": "iPhone-", "Android": "Galaxy-"}[os_name]
        device_id = guid(digest(self.seed, f"device-deviceid:{index}"))
        return {
            "id": guid(digest(self.seed, f"device-id:{index}")),
            "deletedDateTime": None,
            "accountEnabled": rnd.random() < 0.97,
            "approximateLastSignInDateTime": iso(max(registered, last)),
            "complianceExpirationDateTime": None,
            "deviceCategory": None,
            "deviceId": device_id,
            "deviceMetadata": None,
            "deviceOwnership": "Company" if trust != "Workplace" else ("Personal" if rnd.random() < 0.5 else "Company"),
            "deviceVersion": 2,
            "displayName": f"{prefix}{device_id[:7].upper()}",
            "enrollmentProfileName": None,
            "enrollmentType": "AzureDomainJoined" if trust == "AzureAd" else "OnPremiseCoManaged"
            if trust == "ServerAd" else "UserEnrollment",
            "isCompliant": managed and rnd.random() < 0.85,
            "isManaged": managed,
            "isRooted": False,
            "managementType": "MDM" if managed else None,
            "manufacturer": _mf,
            "mdmAppId": "0000000a-0000-0000-c000-000000000000" if managed else None,
            "model": model,
            "onPremisesLastSyncDateTime": iso(self.tenant.now_epoch - 1800) if trust == "ServerAd" else None,
            "onPremisesSecurityIdentifier": None,
            "onPremisesSyncEnabled": True if trust == "ServerAd" else None,
            "operatingSystem": os_name,
            "operatingSystemVersion": version,
            "physicalIds": [],
            "profileType": "RegisteredDevice",
            "registrationDateTime": iso(registered),
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
    def device_index(self) -> dict[str, int]:
        """Position of each device by object id."""
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
                rnd = seeded_random(self.seed, f"managed:{i}")
                kind = next(k for k in DEVICE_KINDS if k[0] == dev["operatingSystem"] and k[4] == dev["model"])
                owner = self._device_owner(i)
                user = self.tenant.user(owner, ("id", "userPrincipalName", "displayName", "mail"))
                managed.append(self._managed_device(i, dev, kind, user, rnd))
                apps = [a for a in range(len(APP_CATALOG)) if APP_CATALOG[a][2] == kind[6]]
                for a in apps:
                    if rnd.random() < 0.6:
                        version = rnd.choice(APP_CATALOG[a][3])
                        app_devices.setdefault((a, version), []).append(len(managed) - 1)
            detected, devices_of = self._detected_apps(app_devices)
            return managed, detected, devices_of

    def _managed_device(self, i: int, dev: dict[str, Any], kind: tuple[str, ...], user: dict[str, Any],
                        rnd: random.Random) -> dict[str, Any]:
        """The Intune managedDevice of Entra device ``i`` (owned by ``user``)."""
        enrolled = rnd.randrange(30, 1400)
        total = rnd.choice((128, 256, 512)) * 1024**3
        return {
                "@odata.type": "#microsoft.graph.managedDevice",
                "id": guid(digest(self.seed, f"managed-id:{i}")),
                "userId": user["id"],
                "deviceName": dev["displayName"],
                "managedDeviceOwnerType": "company" if dev["deviceOwnership"] == "Company" else "personal",
                "enrolledDateTime": iso(self.tenant.now_epoch - enrolled * DAY),
                "lastSyncDateTime": iso(self.tenant.now_epoch - rnd.randrange(0, 14 * DAY)),
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
                "serialNumber": digest(self.seed, f"serial:{i}").hex()[:12].upper(),
                "phoneNumber": None,
                "androidSecurityPatchLevel": "2024-05-01" if kind[6] == "androidWorkProfile" else None,
                "userDisplayName": user["displayName"],
                "configurationManagerClientEnabledFeatures": None,
                "wiFiMacAddress": digest(self.seed, f"mac:{i}").hex()[:12],
                "deviceHealthAttestationState": None,
                "subscriberCarrier": "",
                "meid": None,
                "totalStorageSpaceInBytes": total,
                "freeStorageSpaceInBytes": int(total * rnd.uniform(0.05, 0.8)),
                "managedDeviceName": f"{user['userPrincipalName'].split('@')[0]}_{kind[5]}",
                "partnerReportedThreatState": "unknown",
                "requireUserEnrollmentApproval": None,
                "managementCertificateExpirationDate": iso(self.tenant.now_epoch + rnd.randrange(30, 365) * DAY),
                "iccid": None,
                "udid": None,
                "notes": None,
                "ethernetMacAddress": None,
                "physicalMemoryInBytes": 0,
                "deviceActionResults": [],
            }

    def _detected_apps(self, app_devices: dict[tuple[int, str], list[int]]) -> tuple[list[dict[str, Any]],
                                                                                dict[str, list[int]]]:
        """Detected apps (one per app and version) and, per detected app id, its managed devices' positions."""
        detected = []
        devices_of: dict[str, list[int]] = {}
        for (a, version), on in sorted(app_devices.items()):
            name, publisher, platform, _ = APP_CATALOG[a]
            count = len(on)
            app_id = digest(self.seed, f"app:{a}:{version}").hex()
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
        return detected, devices_of

    def managed_devices(self) -> list[dict[str, Any]]:
        return self._managed[0]

    def managed_device_overview(self) -> dict[str, Any]:
        """GET /deviceManagement/managedDeviceOverview (api/intune-devices-manageddeviceoverview-get.md, v1.0):
        enrolledDeviceCount is every enrolled device (the simulator has no Intune PC agent devices, which it
        leaves out); the other counts are consistent with the managed devices."""
        devices = self._managed[0]
        by_os = {os_name: sum(d["operatingSystem"] == os_name for d in devices)
                 for os_name in ("Android", "iOS", "macOS", "Windows")}
        return {
            "@odata.type": "#microsoft.graph.managedDeviceOverview",
            "id": guid(digest(self.seed, "managed-device-overview")),
            "enrolledDeviceCount": len(devices),
            "mdmEnrolledCount": sum(d["managementAgent"] == "mdm" for d in devices),
            "dualEnrolledDeviceCount": sum(bool(d["easActivated"]) for d in devices),
            "deviceOperatingSystemSummary": {
                "@odata.type": "microsoft.graph.deviceOperatingSystemSummary",
                "androidCount": by_os["Android"], "iosCount": by_os["iOS"], "macOSCount": by_os["macOS"],
                "windowsMobileCount": 0, "windowsCount": by_os["Windows"], "unknownCount": 0,
            },
            "deviceExchangeAccessStateSummary": {
                "@odata.type": "microsoft.graph.deviceExchangeAccessStateSummary",
                "allowedDeviceCount": 0, "blockedDeviceCount": 0, "quarantinedDeviceCount": 0,
                "unknownDeviceCount": 0, "unavailableDeviceCount": len(devices),
            },
        }

    def detected_apps(self) -> list[dict[str, Any]]:
        return self._managed[1]

    def detected_app_devices(self, app_id: str) -> list[dict[str, Any]] | None:
        """The managed devices a detected app is on (None: no such detected app)."""
        on = self._managed[2].get(app_id)
        return None if on is None else [self._managed[0][i] for i in on]
