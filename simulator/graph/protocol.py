"""What every Graph answer shares: content types, the error shape (:class:`GraphError`), system query
options, permission checks, ``$select`` and the directoryObject rendering of members and owners.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ..web import Request, Response

if TYPE_CHECKING:
    from ..inventory import Inventory

ODATA_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
METADATA = "https://graph.microsoft.com/v1.0/$metadata"
# §0: valid user properties that cannot be returned in a collection -> 501.
NOT_LISTABLE_USER_PROPERTIES = frozenset(
    p.lower()
    for p in (
        "aboutMe",
        "birthday",
        "hireDate",
        "interests",
        "mySite",
        "pastProjects",
        "preferredName",
        "responsibilities",
        "schools",
        "skills",
        "mailboxSettings",
    )
)


class GraphError(Exception):
    """Raised inside the Graph service to answer with Graph's error shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def graph_date() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def retry_after(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def require(claims: dict[str, Any], allowed: frozenset[str], code: str = "Authorization_RequestDenied",
            message: str = "Insufficient privileges to complete the operation.") -> None:
    """403 unless the token carries one of the ``allowed`` application permissions."""
    if not allowed.intersection(claims.get("roles") or ()):
        raise GraphError(403, code, message)


def query_options(req: Request, allowed: set[str], resource: str) -> dict[str, str]:
    """System query options (lower-cased names); any other ``$`` option is a 400."""
    options: dict[str, str] = {}
    for key, value in req.pairs:
        name = key.lower()
        if not name.startswith("$"):
            continue
        if name not in allowed:
            if name == "$skip":
                raise GraphError(400, "Request_BadRequest", "'$skip' is not supported by the service.")
            raise GraphError(
                400, "Request_UnsupportedQuery", f"Query option '{key}' is not supported for '{resource}'."
            )
        if name in options:
            raise GraphError(400, "Request_BadRequest", f"Query option '{key}' was specified more than once.")
        options[name] = value
    return options


def select_properties(raw: str, known: dict[str, str], type_name: str) -> list[str]:
    names = [p.strip() for p in raw.split(",")]
    if not raw.strip() or any(not p for p in names):
        raise GraphError(400, "BadRequest", f"Invalid $select: '{raw}'.")
    canonical: list[str] = []
    for name in names:
        lowered = name.lower()
        if type_name == "user" and lowered in NOT_LISTABLE_USER_PROPERTIES:
            raise GraphError(501, "NotImplemented", "This operation target is not yet supported.")
        if lowered not in known:
            raise GraphError(
                400,
                "Request_BadRequest",
                f"Could not find a property named '{name}' on type 'microsoft.graph.{type_name}'.",
            )
        if known[lowered] not in canonical:
            canonical.append(known[lowered])
    return canonical


def ok(payload: Any) -> Response:
    return Response.json(200, payload, ODATA_JSON, {"OData-Version": "4.0"})


def not_found(key: str) -> GraphError:
    return GraphError(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist or one of its queried "
                      "reference-property objects are not present.")


def directory_objects(inv: Inventory, req: Request) -> Any:
    """directoryObject rendering; with $select=id only the id and @odata.type survive the selection, so
    the full object (a user's default properties) is not built for every member of a 100,000-member group."""
    select = {p.strip().lower() for k, v in req.pairs if k.lower() == "$select" for p in v.split(",")}
    if select == {"id"}:
        return lambda pair: {"@odata.type": pair[0], "id": pair[1]}
    return lambda pair: inv.directory_object(*pair)


def require_audit_log(claims: dict[str, Any]) -> None:
    """Sign-in activity and registration details need AuditLog.Read.All."""
    if "AuditLog.Read.All" not in (claims.get("roles") or ()):
        raise GraphError(403, "Authentication_MSGraphPermissionMissing",
                         "Calling principal does not have required MSGraph permissions AuditLog.Read.All")


def require_premium(premium: bool) -> None:
    """...and a tenant with Entra ID P1 or P2."""
    if not premium:
        raise GraphError(403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                         "Neither tenant is B2C or tenant doesn't have premium license")
