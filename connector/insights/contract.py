"""The JSON Schema of insights.json (version 1), written to docs/schema/insights.schema.json by
`python -m connector docs` beside the datasets' schemas. docs/insights.md explains every field."""

from __future__ import annotations

from typing import Any

_INT = {"type": "integer"}
_NINT = {"type": ["integer", "null"]}
_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_BOOL = {"type": "boolean"}
_NUM = {"type": "number"}
_NNUM = {"type": ["number", "null"]}
_MONEY = {"type": ["object", "null"], "additionalProperties": _NUM,
          "description": "amount per ISO 4217 currency code; null without a price sheet"}
_GUID = {"type": "string", "pattern": "^[0-9a-f-]{36}$"}
_CLASSES = {"type": "object", "additionalProperties": False,
            "required": ["active", "new", "inactive", "neverSignedIn", "disabled", "unknown"],
            "properties": {k: _INT for k in ("active", "new", "inactive", "neverSignedIn", "disabled", "unknown")}}
CODES = ("unused_seats", "licence_on_disabled_account", "licence_never_used", "licence_inactive", "over_assigned",
         "subscription_not_active", "group_assignment_error", "direct_and_group_assignment", "licence_on_guest",
         "overlapping_licence", "renewal_unused_seats", "trial_ending", "downgrade_candidate", "copilot_unused")

_SKU = {
    "type": "object", "additionalProperties": False,
    "required": ["skuId", "skuPartNumber", "productName", "capabilityStatus", "appliesTo", "enabled", "consumed",
                 "available", "assigned", "assignedDisabled", "assignedInactive", "assignedNeverSignedIn",
                 "assignedGuests", "directAndGroup", "groupErrors", "assignedByActivity", "unusedSeats", "wasteSeats",
                 "isTrial", "nextLifecycleDateTime", "billed", "free", "freeReason"],
    "properties": {
        "skuId": _STR, "skuPartNumber": _STR, "productName": _NSTR, "capabilityStatus": _NSTR, "appliesTo": _NSTR,
        **{k: _NINT for k in ("enabled", "suspended", "warning", "lockedOut", "consumed", "available",
                              "assignedInactive", "assignedNeverSignedIn")},
        **{k: _INT for k in ("assigned", "assignedDisabled", "assignedGuests", "directAndGroup", "groupErrors",
                             "unusedSeats", "wasteSeats")},
        "assignedByActivity": _CLASSES, "isTrial": {"type": ["boolean", "null"]}, "nextLifecycleDateTime": _NSTR,
        "billed": _BOOL, "free": _BOOL, "freeReason": {"enum": ["list", "priceSheet", None]},
        "monthlyPrice": _NNUM, "currency": _NSTR, "monthlyCost": _NNUM, "monthlyWaste": _NNUM,
    },
}
_TARGET = {"type": "object", "additionalProperties": False,
           "required": ["skuPartNumber", "skuId", "productName", "monthlyPrice", "currency"],
           "properties": {"skuPartNumber": _STR, "skuId": _GUID, "productName": _NSTR, "monthlyPrice": _NNUM,
                          "currency": _NSTR}}
_FINDING = {
    "type": "object", "additionalProperties": False,
    "required": ["code", "severity", "skuId", "skuPartNumber", "productName", "count", "unit", "message", "remedy",
                 "sampleUserIds"],
    "properties": {
        "code": {"enum": list(CODES)}, "severity": {"enum": ["high", "medium", "low", "info"]},
        "skuId": _STR, "skuPartNumber": _STR, "productName": _NSTR, "count": _INT,
        "unit": {"enum": ["users", "seats"]}, "message": _STR, "remedy": _STR,
        "sampleUserIds": {"type": "array", "items": _STR, "maxItems": 20},
        "monthlyWaste": _NUM, "monthlySaving": _NUM, "yearlySaving": _NUM, "currency": _STR,
        "renewsOn": _STR, "endsOn": _STR, "days": _INT, "window": {"enum": [30, 60, 90]}, "seats": _INT,
        "subscriptions": {"type": "array", "items": {"anyOf": [
            _NSTR, {"type": "object", "required": ["id", "renewsOn", "seats"],
                    "properties": {"id": _NSTR, "renewsOn": _STR, "seats": _INT}}]}},
        "downgradeTo": _TARGET,
    },
}
_CHANGES = {
    "type": ["object", "null"],
    "required": ["previousRunId", "previousStartedAt", "usersAdded", "usersRemoved", "licencesAssigned",
                 "licencesRemoved", "seatsBought", "seatsDropped", "skus"],
    "properties": {
        "previousRunId": _STR, "previousStartedAt": _NSTR,
        **{k: _INT for k in ("usersAdded", "usersRemoved", "licencesAssigned", "licencesRemoved", "seatsBought",
                             "seatsDropped")},
        "skus": {"type": "array", "items": {
            "type": "object", "required": ["skuId", "skuPartNumber", "licencesAssigned", "licencesRemoved",
                                           "seatsBefore", "seatsAfter", "seatsChange"],
            "properties": {"skuId": _STR, "skuPartNumber": _STR, **{k: _INT for k in (
                "licencesAssigned", "licencesRemoved", "seatsBefore", "seatsAfter", "seatsChange")}}}},
    },
}
_TOTALS = {
    "type": "object",
    "required": ["users", "licensedUsers", "guests", "licensedGuests", "licensedUsersByActivity", "skus", "enabled",
                 "consumed", "assigned", "unusedSeats", "wasteSeats", "monthlyCost", "monthlyWaste", "findings",
                 "enabledPaid", "free", "monthlySavingByCode"],
    "properties": {
        **{k: _INT for k in ("users", "licensedUsers", "guests", "licensedGuests", "skus", "findings", "enabledPaid")},
        **{k: _NINT for k in ("enabled", "consumed", "assigned", "assignedDisabled", "assignedInactive",
                              "assignedNeverSignedIn", "assignedGuests", "directAndGroup", "groupErrors",
                              "unusedSeats", "wasteSeats")},
        "licensedUsersByActivity": _CLASSES, "monthlyCost": _MONEY, "monthlyWaste": _MONEY,
        "free": {"type": "object", "required": ["skus", "enabled", "assigned"],
                 "properties": {"skus": _INT, "enabled": _INT, "assigned": _INT}},
        "monthlySavingByCode": {"type": ["object", "null"], "propertyNames": {"enum": list(CODES)},
                                "additionalProperties": {"type": "object", "additionalProperties": _NUM}},
    },
}
_BASIS = {
    "type": "object",
    "required": ["runId", "tenantId", "startedAt", "inactiveDays", "inactiveBefore", "activitySource", "inputs",
                 "fallbacks", "domainFilter", "productNames", "freeSkus", "exclusions"],
    "properties": {
        "runId": _STR, "tenantId": _STR, "startedAt": _STR, "inactiveDays": _INT, "inactiveBefore": _STR,
        "activitySource": {"enum": ["signInActivity", "usageReports", None]},
        "inputs": {"type": "object", "required": ["users", "subscribedSkus", "signInActivity"]},
        "fallbacks": {"type": "object", "additionalProperties": _STR, "required": [
            "assignedInactive", "assignedNeverSignedIn", "wasteSeats", "monthlyWaste", "productName", "changes",
            "downgrades", "copilotSeats"]},
        "domainFilter": {"type": ["object", "null"]},
        "productNames": {"type": "object", "required": ["source"]},
        "freeSkus": {"type": "object", "required": ["source", "skus"]},
        "exclusions": {"type": ["object", "null"]},
    },
}
_TREND = {"type": "object", "required": ["runId", "startedAt", "assigned", "enabled", "unusedSeats", "wasteSeats",
                                         "monthlyWaste"],
          "properties": {"runId": _STR, "startedAt": _STR, "assigned": _NINT, "enabled": _NINT,
                         "unusedSeats": _NINT, "wasteSeats": _NINT, "monthlyWaste": _MONEY}}


def insights_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "insights.schema.json",
        "title": "insights.json (licence insights, version 1)",
        "description": "Derived from one run's snapshot; docs/insights.md explains every field.",
        "type": "object", "additionalProperties": False,
        "required": ["version", "generatedBy", "basis", "totals", "skus", "findings", "excluded", "changes", "trend"],
        "properties": {
            "version": {"const": 1}, "generatedBy": _STR, "basis": _BASIS, "totals": _TOTALS,
            "skus": {"type": "array", "items": _SKU}, "findings": {"type": "array", "items": _FINDING},
            "excluded": {"type": "array", "items": {
                "type": "object", "additionalProperties": False,
                "required": ["code", "skuId", "skuPartNumber", "count"],
                "properties": {"code": {"enum": list(CODES)}, "skuId": _STR, "skuPartNumber": _STR, "count": _INT}}},
            "changes": _CHANGES, "trend": {"type": "array", "items": _TREND},
        },
    }
