"""Entra devices (§8 /devices) and Intune: managed devices, detected apps and the devices each app is on."""

from __future__ import annotations

from typing import Any

from ..web import Request, Response
from .area import Area
from .protocol import not_found, query_options, require

DEVICE_ROLES = frozenset({"Device.Read.All", "Device.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
INTUNE_ROLES = frozenset({"DeviceManagementManagedDevices.Read.All", "DeviceManagementManagedDevices.ReadWrite.All"})


def _require_intune(claims: dict[str, Any]) -> None:
    scopes = ", ".join(sorted(INTUNE_ROLES))
    require(claims, INTUNE_ROLES, "Forbidden", "Application is not authorized to perform this operation. "
            f"Application must have one of the following scopes: {scopes}")


class DevicesArea(Area):
    """/devices, /deviceManagement/{managedDevices, detectedApps} and
    /deviceManagement/detectedApps/{id}/managedDevices."""

    def route(self, req: Request, claims: dict[str, Any], raw: list[str], rest: list[str]) -> Response | None:
        inv = self.sim.inventory
        if rest == ["devices"]:
            query_options(req, {"$select", "$top", "$skiptoken"}, "devices")
            require(claims, DEVICE_ROLES)
            return self.pager.list_page(req, inv.devices, "devices", 100, 999, type_name="device")
        if rest[:1] == ["devicemanagement"] and rest[1:] in (["manageddevices"], ["detectedapps"]):
            query_options(req, {"$select", "$top", "$skiptoken"}, raw[1])
            _require_intune(claims)
            items = inv.managed_devices if rest[1] == "manageddevices" else inv.detected_apps
            name = "managedDevices" if rest[1] == "manageddevices" else "detectedApps"
            return self.pager.list_page(req, items, f"deviceManagement/{name}", 1000, 1000, odata_type=True)
        if len(rest) == 4 and rest[:2] == ["devicemanagement", "detectedapps"] and rest[3] == "manageddevices":
            # api/intune-devices-manageddevice-list.md: GET /deviceManagement/detectedApps/{id}/managedDevices
            query_options(req, {"$select", "$top", "$skiptoken"}, "managedDevices")
            _require_intune(claims)
            devices = inv.detected_app_devices(raw[2])
            if devices is None:
                raise not_found(raw[2])
            return self.pager.list_page(req, lambda: devices,
                                        f"deviceManagement/detectedApps('{raw[2]}')/managedDevices", 1000, 1000,
                                        odata_type=True)
        return None
