"""User objects as Graph v1.0 serves them (graph-facts §0, §1), built from a user's traits, index and
UPN. Properties come in groups generated only when selected, so serving 200,000 users with a narrow
``$select`` stays cheap.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Collection
from typing import Any

from .licensing import Licences
from .people import DEPARTMENT_NAMES, DEPARTMENTS, KIND_GUEST, KIND_SERVICE, OFFICES, UserTraits
from .seeded import DAY, digest, guid, iso

_SUCCESSFUL_SIGN_IN_START = 1701388800  # 2023-12-01T00:00:00Z
# What Graph returns for a user without $select (and inside directoryObject collections).
DEFAULT_USER_PROPERTIES = (
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
)

# Which generator group produces each served property (groups are generated only when selected).
_CONTACT = "contact"
_LICENSES = "licenses"
_SIGN_IN = "signIn"
_ON_PREM = "onPrem"
_GROUP_OF: dict[str, str] = {
    **dict.fromkeys(
        (
            "otherMails",
            "businessPhones",
            "mobilePhone",
            "jobTitle",
            "employeeId",
            "employeeType",
            "employeeHireDate",
            "employeeOrgData",
            "externalUserState",
            "externalUserStateChangeDateTime",
            "lastPasswordChangeDateTime",
        ),
        _CONTACT,
    ),
    **dict.fromkeys(("assignedLicenses", "licenseAssignmentStates", "assignedPlans", "provisionedPlans"), _LICENSES),
    "signInActivity": _SIGN_IN,
    **dict.fromkeys(
        (
            "onPremisesLastSyncDateTime",
            "onPremisesImmutableId",
            "onPremisesSamAccountName",
            "onPremisesDomainName",
            "onPremisesUserPrincipalName",
            "onPremisesDistinguishedName",
            "onPremisesSecurityIdentifier",
            "onPremisesExtensionAttributes",
        ),
        _ON_PREM,
    ),
}

# Properties a user can be served with without building the rest of the object.
_NARROW = frozenset({"id", "userPrincipalName", "signInActivity"})


class UserObjects:
    """Builds one tenant's user objects; the tenant supplies each user's traits and current UPN."""

    def __init__(self, seed: int, now_epoch: int, initial_domain: str, default_domain: str,
                 licences: Licences) -> None:
        self.seed = seed
        self.now_epoch = now_epoch
        self.initial_domain = initial_domain
        self.default_domain = default_domain
        self.licences = licences

    def build(self, index: int, core: UserTraits, upn: str, invited_upn: str,
              properties: Collection[str] | None = None) -> dict[str, Any]:
        """The user object for ``index`` (Graph v1.0 names and shapes).

        ``properties`` limits the result to those (canonical) names and skips generating the
        rest, which keeps serving 200,000 users with a narrow ``$select`` cheap.
        """
        d = core.digest
        guest = core.kind == KIND_GUEST
        service = core.kind == KIND_SERVICE
        if properties is not None and _NARROW.issuperset(properties):
            # Only id, UPN and sign-in activity asked for (the sign-in listing): the rest of the
            # object is not built, which halves the cost of serving those pages.
            user: dict[str, Any] = {"id": guid(d[16:]), "userPrincipalName": upn}
            if "signInActivity" in properties:
                user["signInActivity"] = self.sign_in(index, service)
            return {p: user[p] for p in properties if p in user}
        created = (
            self.now_epoch - (30 + int.from_bytes(d[8:10], "big") % 2970) * DAY - int.from_bytes(d[12:15], "big") % DAY
        )
        office = OFFICES[d[10] % len(OFFICES)]
        dept = DEPARTMENT_NAMES[d[11] % len(DEPARTMENT_NAMES)]
        synced = not guest and d[15] < 154
        user = self._directory_properties(core, upn, invited_upn, created, office, dept, synced)
        groups = (
            {_GROUP_OF[p] for p in properties if p in _GROUP_OF} if properties is not None else set(_GROUP_OF.values())
        )
        if _CONTACT in groups:
            user.update(self._contact(index, core, created, office, dept))
        if _LICENSES in groups:
            user.update(self.licences.user_licenses(index, self.licences.grants(index, core.kind, core.combo), created))
        if _SIGN_IN in groups:
            user["signInActivity"] = self.sign_in(index, service)
        if _ON_PREM in groups:
            user.update(self._on_premises(index, core, upn, user["displayName"], dept, synced))
        if properties is not None:
            return {p: user[p] for p in properties if p in user}
        return user

    def _directory_properties(self, core: UserTraits, upn: str, invited_upn: str, created: int, office: tuple,
                              dept: str, synced: bool) -> dict[str, Any]:
        """Identity, mail, organisation and account properties (always built unless the request is narrow)."""
        d = core.digest
        guest = core.kind == KIND_GUEST
        service = core.kind == KIND_SERVICE
        uid = guid(d[16:])
        first, last = core.first, core.last
        local, domain = upn.split("@", 1)
        licensed = bool(core.combo)
        has_mailbox = "E3" in core.combo or "E5" in core.combo

        if guest:
            # A guest's UPN is created as <invited address with @ as _>#EXT#@<tenant domain> and its mail is the
            # invited address (learn.microsoft.com entra/external-id/user-properties, "Properties of a B2B
            # collaboration user"); userPrincipalName and mail are separate properties, updated on their own
            # (graph/api/user-update), so an admin renaming the UPN leaves the mail as it was.
            ext_local, ext_domain = invited_upn.split("#EXT#")[0].rsplit("_", 1)
            mail: str | None = f"{ext_local}@{ext_domain}"
            display = f"{first[0]} {last[0]} (Guest)" if d[13] < 77 else f"{first[0]} {last[0]}"
            proxies = [f"SMTP:{mail}"]
        elif service:
            mail = f"{local}@{domain}" if d[13] < 100 else None
            display = local.replace("-", " ").replace("_", " ").replace(".", " ").title()
            proxies = [f"SMTP:{mail}"] if mail else []
        else:
            display = f"{first[0]} {last[0]}"
            mail = f"{local}@{domain}" if has_mailbox else None
            proxies = [f"SMTP:{mail}"] if mail else []
            if mail and domain != self.initial_domain:
                proxies.append(f"smtp:{local}@{self.initial_domain}")

        user = {
            "id": uid,
            "userPrincipalName": upn,
            "displayName": display,
            "givenName": None if service else first[0],
            "surname": None if service else last[0],
            "mail": mail,
            "mailNickname": local.split("#EXT#")[0] if guest else local,
            "proxyAddresses": proxies,
            "imAddresses": [upn] if has_mailbox else [],
            "accountEnabled": d[14] < (180 if service else 238),
            "userType": "Guest" if guest else "Member",
            "creationType": "Invitation" if guest else None,
            "createdDateTime": iso(created),
            "deletedDateTime": None,
            "department": None if guest or service else dept,
            "companyName": None if guest else ("Fabrikam, Inc." if "fabrikam" in domain else "Contoso Ltd."),
            "officeLocation": None if guest else office[0],
            "streetAddress": None if guest else office[6],
            "city": None if guest else office[1],
            "state": None if guest else office[2],
            "postalCode": None if guest else office[5],
            "country": None if guest else office[3],
            "usageLocation": office[4] if licensed else None,
            "preferredLanguage": None if guest else office[8],
            "faxNumber": None,
            "employeeLeaveDateTime": None,
            "ageGroup": None,
            "consentProvidedForMinor": None,
            "legalAgeGroupClassification": None,
            "isResourceAccount": None,
            "showInAddressList": None,
            "passwordPolicies": "DisablePasswordExpiration" if service else None,
            "securityIdentifier": "S-1-12-1-"
            + "-".join(str(int.from_bytes(d[16 + i : 20 + i], "little")) for i in range(0, 16, 4)),
            "onPremisesSyncEnabled": True if synced else None,
        }
        return user

    def _contact(self, index: int, core: UserTraits, created: int, office: tuple, dept: str) -> dict[str, Any]:
        """Other mails, phones, job and employee data, guest invitation state, last password change."""
        guest = core.kind == KIND_GUEST
        service = core.kind == KIND_SERVICE
        first, last = core.first, core.last
        rnd = random.Random(int.from_bytes(digest(self.seed, f"contact:{index}"), "big"))
        employee = not guest and not service and rnd.random() < 0.7
        phone = office[7]
        return {
            "otherMails": [f"{first[1]}.{last[1]}@gmail.com"] if not guest and rnd.random() < 0.05 else [],
            "businessPhones": [f"{phone}{rnd.randrange(100, 9999):04d}"]
            if phone and not guest and rnd.random() < 0.8
            else [],
            "mobilePhone": f"+1 555 01{rnd.randrange(100):02d} {rnd.randrange(10000):04d}"
            if not guest and rnd.random() < 0.4
            else None,
            "jobTitle": None if guest or service else rnd.choice(DEPARTMENTS[dept]),
            "employeeId": f"{rnd.randrange(10**5, 10**6)}" if employee else None,
            "employeeType": rnd.choice(("Employee", "Employee", "Employee", "Contractor", "Intern"))
            if employee
            else None,
            "employeeHireDate": iso(created - rnd.randrange(0, 20) * DAY) if employee else None,
            "employeeOrgData": {"division": dept, "costCenter": f"CC-{rnd.randrange(1000, 9999)}"}
            if employee
            else None,
            "externalUserState": rnd.choice(("Accepted", "Accepted", "Accepted", "PendingAcceptance"))
            if guest
            else None,
            "externalUserStateChangeDateTime": iso(created + DAY) if guest else None,
            "lastPasswordChangeDateTime": iso(
                min(created + rnd.randrange(0, 400) * DAY, self.now_epoch - DAY)
            ),
        }

    def _on_premises(self, index: int, core: UserTraits, upn: str, display: str, dept: str,
                     synced: bool) -> dict[str, Any]:
        """Properties synchronised from on-premises Active Directory (null for cloud-only users)."""
        first, last = core.first, core.last
        local = upn.split("@", 1)[0]
        rnd = random.Random(int.from_bytes(digest(self.seed, f"onprem:{index}"), "big"))
        onprem_domain = "corp." + self.default_domain
        return {
            "onPremisesLastSyncDateTime": iso(self.now_epoch - rnd.randrange(5, 180) * 60) if synced else None,
            "onPremisesImmutableId": base64.b64encode(rnd.randbytes(16)).decode() if synced else None,
            "onPremisesSamAccountName": (first[1][:1] + last[1])[:20] if synced else None,
            "onPremisesDomainName": onprem_domain if synced else None,
            "onPremisesUserPrincipalName": f"{local}@{onprem_domain}" if synced else None,
            "onPremisesDistinguishedName": (
                f"CN={display},OU=Users,OU={dept.split()[0]},DC=corp,DC={self.default_domain.split('.')[0]},DC=com"
                if synced
                else None
            ),
            "onPremisesSecurityIdentifier": (
                f"S-1-5-21-{rnd.randrange(10**8, 4 * 10**9)}-{rnd.randrange(10**8, 4 * 10**9)}-"
                f"{rnd.randrange(10**8, 4 * 10**9)}-{1000 + index}"
                if synced
                else None
            ),
            "onPremisesExtensionAttributes": {
                f"extensionAttribute{n}": (f"EA{n}-{rnd.randrange(100)}" if synced and n in (1, 7) else None)
                for n in range(1, 16)
            },
        }

    def sign_in(self, index: int, service: bool) -> dict[str, Any] | None:
        """signInActivity, or None for users who never signed in (about 12%)."""
        rnd = random.Random(int.from_bytes(digest(self.seed, f"signin:{index}"), "big"))
        if rnd.random() < 0.12 or (service and rnd.random() < 0.5):
            return None
        now = self.now_epoch
        days = int(rnd.expovariate(1 / 25)) if rnd.random() < 0.85 else rnd.randrange(90, 900)
        last_i = now - days * DAY - rnd.randrange(DAY)
        last_ni = last_i + rnd.randrange(-72, 72) * 3600 if rnd.random() < 0.9 else None
        if last_ni is not None and last_ni > now:
            last_ni = now - rnd.randrange(1, 600) * 60
        id_i, id_ni = guid(rnd.randbytes(16)), guid(rnd.randbytes(16))
        # the last interactive attempt failed for ~5% of users, so "successful" falls back to non-interactive
        ok = [
            (t, rid) for t, rid in ((last_i if rnd.random() < 0.95 else None, id_i), (last_ni, id_ni)) if t is not None
        ]
        last_ok, id_ok = max(ok) if ok else (None, None)
        if last_ok is not None and last_ok < _SUCCESSFUL_SIGN_IN_START:
            last_ok = id_ok = None  # lastSuccessfulSignInDateTime was not backfilled before 1 Dec 2023
        activity = {
            "lastSignInDateTime": iso(last_i),
            "lastSignInRequestId": id_i,
            "lastNonInteractiveSignInDateTime": iso(last_ni),
            "lastNonInteractiveSignInRequestId": id_ni if last_ni is not None else None,
            "lastSuccessfulSignInDateTime": iso(last_ok),
            "lastSuccessfulSignInRequestId": id_ok,
        }
        # Graph's own samples (user-list.md, "Get users including their last sign-in time") write an unset
        # lastSuccessfulSignInDateTime as "" with request id "", and a missing non-interactive sign-in as
        # 0001-01-01T00:00:00Z with request id "", though the CSDL types are nullable: about half of the
        # users without one get that form (graph-facts §1 and §11).
        if rnd.random() < 0.5:
            if last_ok is None:
                activity["lastSuccessfulSignInDateTime"] = activity["lastSuccessfulSignInRequestId"] = ""
            if last_ni is None:
                activity["lastNonInteractiveSignInDateTime"] = "0001-01-01T00:00:00Z"
                activity["lastNonInteractiveSignInRequestId"] = ""
        return activity
