"""Entra devices (§8 /devices) and Intune: managed devices, detected apps and the devices each app is on."""

from __future__ import annotations

from typing import Any

from ..web import Request, Response
from .area import Area
from .protocol import GraphError, not_found, ok, query_options, require

DEVICE_ROLES = frozenset({"Device.Read.All", "Device.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
INTUNE_ROLES = frozenset({"DeviceManagementManagedDevices.Read.All", "DeviceManagementManagedDevices.ReadWrite.All"})


def _require_intune(claims: dict[str, Any], licensed: bool) -> None:
    scopes = ", ".join(sorted(INTUNE_ROLES))
    require(claims, INTUNE_ROLES, "Forbidden", "Application is not authorized to perform this operation. "
            f"Application must have one of the following scopes: {scopes}")
    if not licensed:
        # "The Microsoft Graph API for Intune requires an active Intune license for the tenant" (every Intune
        # API page); the answer on an unlicensed tenant is not documented. This is the one reported for an
        # Intune-backed API (msgraph-beta-sdk-go #198) [UNVERIFIED for /deviceManagement/*].
        raise GraphError(400, "BadRequest", "Request not applicable to target tenant.")


class DevicesArea(Area):
    """/devices, /deviceManagement/{managedDevices, detectedApps} and
    /deviceManagement/detectedApps/{id}/managedDevices."""

    def route(self, req: Request, claims: dict[str, Any], raw: list[str], rest: list[str]) -> Response | None:
        inv = self.sim.inventory
        spec = self.sim.spec
        if rest == ["devices"]:
            query_options(req, {"$select", "$top", "$skiptoken"}, "devices")
            require(claims, DEVICE_ROLES)
            # type_name: a $select of a property `device` does not define in v1.0 (createdDateTime, beta only) is a
            # 400 "Could not find a property named ..." ("Selecting an undefined property can be refused with
            # 400", graph-facts §12; the simulator's devices hold the v1.0 properties only).
            return self.pager.list_page(req, inv.devices, "devices", 100, 999, type_name="device")
        if rest == ["devicemanagement", "manageddeviceoverview"]:
            # api/intune-devices-manageddeviceoverview-get.md (v1.0): the entity itself [the doc sample wraps it in
            # {"value": ...}, as Intune samples do; the simulator answers the entity, the collector reads both].
            query_options(req, {"$select", "$expand"}, "managedDeviceOverview")
            _require_intune(claims, spec.intune_licensed)
            return ok({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#deviceManagement/"
                                         "managedDeviceOverview/$entity", **inv.managed_device_overview()})
        if rest[:1] == ["devicemanagement"] and rest[1:] in (["manageddevices"], ["detectedapps"]):
            query_options(req, {"$select", "$top", "$skiptoken"}, raw[1])
            _require_intune(claims, spec.intune_licensed)
            items = inv.managed_devices if rest[1] == "manageddevices" else inv.detected_apps
            # microsoft-graph-docs #21659: an unfiltered managedDevices listing returned fewer devices than exist.
            left_out = spec.managed_devices_left_out if rest[1] == "manageddevices" else 0
            listed = (lambda: items()[:max(0, len(items()) - left_out)]) if left_out else items
            name = "managedDevices" if rest[1] == "manageddevices" else "detectedApps"
            return self.pager.list_page(req, listed, f"deviceManagement/{name}", 1000, 1000, odata_type=True)
        if len(rest) == 4 and rest[:2] == ["devicemanagement", "detectedapps"] and rest[3] == "manageddevices":
            # api/intune-devices-manageddevice-list.md: GET /deviceManagement/detectedApps/{id}/managedDevices
            query_options(req, {"$select", "$top", "$skiptoken"}, "managedDevices")
            _require_intune(claims, spec.intune_licensed)
            devices = inv.detected_app_devices(raw[2])
            if devices is None:
                raise not_found(raw[2])
            return self.pager.list_page(req, lambda: devices,
                                        f"deviceManagement/detectedApps('{raw[2]}')/managedDevices", 1000, 1000,
                                        odata_type=True)
        return None
