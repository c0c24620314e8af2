"""The words of insights.json: each finding's message and remedy, and the `basis` that says what the figures
rest on and what each falls back to when an input is missing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connector.insights.analysis import Activity, epoch

ADMIN_BILLING = "Microsoft 365 admin center, Billing, Your products"
ENTRA_LICENCES = "Entra admin center, Identity, Billing, Licenses"


def label(sku: dict[str, Any]) -> str:
    name, part = sku.get("productName"), sku["skuPartNumber"]
    return f"{name} ({part})" if name else part


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _advice(code: str, n: int, sku: dict[str, Any], what: str, listed: str, detail: dict[str, Any]
            ) -> tuple[str, str]:
    """(message, remedy) of the recommendation codes: overlaps, renewals, trials."""
    price = sku.get("monthlyPrice")
    money = (f" ({n * price:,.2f} {sku['currency']} a month)" if price is not None and sku.get("billed") else "")
    if code == "overlapping_licence":
        return (f"{_plural(n, 'user')} {'holds' if n == 1 else 'hold'} {what} although every service plan in it "
                "comes from another licence they hold.",
                f"Remove {what} from these users{money}; the other licence keeps the service. {listed}")
    if code == "renewal_unused_seats":
        when = (detail.get("renewsOn") or "")[:10]
        return (f"{_plural(n, 'unused seat')} of {what} renew on {when}, within {detail.get('window')} days.",
                f"Reduce the subscription by {n:,} seats before {when}{money} ({ADMIN_BILLING}).")
    if code == "trial_ending":
        when = (detail.get("endsOn") or "")[:10]
        return (f"{_plural(n, 'user')} {'holds' if n == 1 else 'hold'} {what}, a trial that ends on {when}.",
                f"Buy the product before {when} or move these users to another licence; they lose the service "
                f"when the trial ends ({ADMIN_BILLING}).")
    if code == "copilot_unused":
        return (f"{_plural(n, 'user')} {'holds' if n == 1 else 'hold'} {what} without any Copilot activity in "
                "the Copilot usage report's period (copilot_usage_user_detail).",
                f"Ask these users whether they need Copilot; remove the licence from those who do not{money} and "
                f"reassign or reduce the seats ({ADMIN_BILLING}). {listed}")
    if code == "downgrade_candidate":
        target = detail.get("downgradeTo") or {}
        to = label(target) if target.get("skuPartNumber") else "a frontline plan"
        cheaper = target.get("monthlyPrice")
        same = target.get("currency") == sku.get("currency")
        if price is not None and cheaper is not None and sku.get("billed") and same:
            money = f" (saves {n * max(price - cheaper, 0):,.2f} {sku['currency']} a month)"
        else:
            money = " (price both plans in M365_PRICE_SHEET to see the saving)" if price is not None else ""
        return (f"{_plural(n, 'user')} {'holds' if n == 1 else 'hold'} {what} but in the reports' period used Office "
                "only on the web or mobile, with mailbox and OneDrive under 2 GB: "
                f"{to} would do.",
                f"Confirm with these users (F3 has no desktop Office, no archive mailbox, 2 GB of mailbox and of "
                f"OneDrive), then move them to {to}{money}. {listed}")
    raise KeyError(code)


def describe(code: str, n: int, sku: dict[str, Any], days: int, detail: dict[str, Any] | None = None
             ) -> tuple[str, str]:
    """(message, remedy) of one finding."""
    what = label(sku)
    renewal = sku.get("nextLifecycleDateTime")
    listed = f"The users are listed in licence_findings.jsonl.gz (code {code})."
    if code == "unused_seats":
        when = f" before the subscription renews on {renewal[:10]}" if renewal else " at the next renewal"
        return (f"{_plural(n, 'paid seat')} of {what} {'is' if n == 1 else 'are'} not assigned "
                f"({sku['enabled']:,} enabled, {sku['consumed']:,} consumed).",
                f"Reduce the subscription by up to {n:,} seats{when} ({ADMIN_BILLING}), or assign them to users "
                "waiting for a licence.")
    if code == "over_assigned":
        return (f"{n:,} more {what} licences are assigned than there are paid seats ({sku['consumed']:,} consumed, "
                f"{sku['enabled']:,} enabled).",
                f"Buy {n:,} seats ({ADMIN_BILLING}) or remove the licence from users who do not need it; until then "
                "new assignments of this product fail.")
    if code == "licence_on_disabled_account":
        return (f"{_plural(n, 'user')} with a disabled account {'holds' if n == 1 else 'hold'} {what}.",
                "Remove the licence (directly, or by removing the user from the licensing group). If the mailbox "
                f"must stay, convert it to a shared mailbox, which needs no licence up to 50 GB. {listed}")
    if code == "licence_never_used":
        return (f"{_plural(n, 'user')} {'holds' if n == 1 else 'hold'} {what} but never signed in, with an account "
                f"older than {days} days.",
                f"Check with the user's manager whether the account is needed; remove the licence if not. {listed}")
    if code == "licence_inactive":
        return (f"{_plural(n, 'user')} {'holds' if n == 1 else 'hold'} {what} without a successful sign-in in the "
                f"last {days} days.",
                f"Confirm with their managers, then remove the licence or disable the account. {listed}")
    if code == "subscription_not_active":
        status = sku.get("capabilityStatus")
        fix = ("Renew the subscription before it is suspended, or move these users to another product."
               if status == "Warning" else
               "These users no longer have the service: renew the subscription or give them another product.")
        return (f"{_plural(n, 'user')} {'holds' if n == 1 else 'hold'} {what}, whose subscription is {status}.",
                f"{fix} ({ADMIN_BILLING}) {listed}")
    if code == "group_assignment_error":
        return (f"{_plural(n, 'user')} did not get {what} from a licensing group: the assignment is in error.",
                f"Open the group in the {ENTRA_LICENCES} and fix the error shown for each user (CountViolation: buy "
                "seats or free some; MutuallyExclusiveViolation: remove the conflicting licence; "
                "ProhibitedInUsageLocationViolation: set the user's usage location), then select Reprocess. "
                f"{listed}")
    if code == "direct_and_group_assignment":
        return (f"{_plural(n, 'user')} {'holds' if n == 1 else 'hold'} {what} both directly and through a group.",
                "Remove the direct assignment: the group keeps the licence (one seat is used either way), and "
                f"leaving the group will then remove it as intended. {listed}")
    if code == "licence_on_guest":
        return (f"{_plural(n, 'guest')} {'holds' if n == 1 else 'hold'} {what}.",
                "Check that each guest needs a licence in this tenant: guests usually work with their home "
                f"tenant's licences. {listed}")
    return _advice(code, n, sku, what, listed, detail or {})


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def basis(manifest: dict[str, Any], days: int, activity: Activity, inputs: dict[str, Any], prices: Any,
          names: Any, previous: dict[str, Any] | None, no_changes: str | None, datasets: dict[str, Any]
          ) -> dict[str, Any]:
    started = epoch(manifest["startedAt"]) or 0
    report = datasets.get("report_office365_active_user_detail") or {}
    source = activity.source
    if source == "signInActivity":
        activity_note = ("last successful sign-in from user_sign_in_activity (lastSuccessfulSignInDateTime, else "
                         "the latest of lastSignInDateTime and lastNonInteractiveSignInDateTime)")
        never_note = "no sign-in value at all in user_sign_in_activity, account older than inactiveDays"
    elif source == "usageReports":
        activity_note = ("sign-in activity unavailable: the latest *LastActivityDate of "
                         "report_office365_active_user_detail (names visible), joined on userPrincipalName; a "
                         "licensed user with no date there counts as inactive once the account is older than "
                         "inactiveDays")
        never_note = "null: usage reports record activity, not sign-ins, so never cannot be told from long ago"
    else:
        activity_note = ("null: neither sign-in activity (needs AuditLog.Read.All and Entra ID P1/P2) nor a usage "
                         "report with visible names is in this run")
        never_note = activity_note
    fallbacks = {
        "assignedInactive": activity_note,
        "assignedNeverSignedIn": never_note,
        "wasteSeats": ("unused seats plus users holding the SKU whose account is disabled, inactive or never signed "
                       "in (each user once)" if source else
                       "unused seats plus users with a disabled account only: activity is unknown"),
        "monthlyWaste": ("wasteSeats x monthlyPrice from M365_PRICE_SHEET; SKUs missing from the sheet have null "
                         "money" if prices else "null: no price sheet (M365_PRICE_SHEET)"),
        "productName": (f"Microsoft's product names CSV ({names.basis.get('source')}); null for a SKU it does not "
                        "list"),
        "changes": "compared with the previous published run" if previous else f"null: {no_changes}",
    }
    return {
        "runId": manifest["runId"], "tenantId": manifest["tenantId"], "startedAt": manifest["startedAt"],
        "inactiveDays": days, "inactiveBefore": _iso(started - days * 86400),
        "activitySource": source,
        "inputs": {
            "users": True, "subscribedSkus": True, **inputs,
            "namesConcealed": report.get("concealed") if report else None,
            "groups": (datasets.get("groups") or {}).get("status") == "succeeded",
            "subscriptions": (datasets.get("subscriptions") or {}).get("status") == "succeeded",
            "previousRun": previous["runId"] if previous else None,
            "priceSheet": prices.basis() if prices else None,
        },
        "fallbacks": fallbacks,
        "domainFilter": manifest.get("domainFilter"),
        "productNames": names.basis,
    }
