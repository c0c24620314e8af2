"""licence_findings.jsonl.gz lines and licence_findings.csv rows, assembled from pre-serialised pieces.

A finding line is what `orjson.dumps` makes of {userId, userPrincipalName, displayName, skuId, skuPartNumber,
code, evidence: {accountEnabled, userType, createdDateTime, <last activity>, activitySource, assignment, groups,
[error], [capabilityStatus], [extra...]}, [excluded]}. Users share few licence combinations, so everything but
the user's own fields is serialised once per combination and finding (`Piece`) and the line is a few byte
concatenations (a fifth of building and dumping the dict: docs/performance.md); the bytes are the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from orjson import dumps

_CSV_SPECIAL = re.compile('[,"\r\n]').search  # what makes the csv module quote a field (QUOTE_MINIMAL, "\r\n" lines)


@dataclass(slots=True)
class Piece:
    """One finding about one SKU of a licence combination: its key, its line's fixed parts, its CSV columns."""

    key: tuple[str, str]  # (code, skuId)
    sku: Any  # analysis.SkuTally
    groups: list[str]  # every group that assigns the user a licence (exclusions by group)
    middle: bytes  # "skuId":..,"skuPartNumber":..,"code":..,"evidence":{
    tail: bytes  # "assignment":..,"groups":[..][,"error":..][,"capabilityStatus":..][,extra..]}
    csv: str  # the CSV columns after the user's: product, finding, severity, part number, SKU id, target
    csv_cache: dict[str | None, str]  # the row after the user's columns, per exclusion reason
    finding: Any = None  # analysis.Finding, once the first user has it


def piece(code: str, sku: Any, sid: str, severity: str, product: str, assignment: str,
          groups: list[dict[str, Any]], group_ids: list[str], error: str | None = None,
          status: tuple[Any] | None = None, extra: dict[str, Any] | None = None) -> Piece:
    middle = (b'"skuId":' + dumps(sid) + b',"skuPartNumber":' + dumps(sku.part_number) + b',"code":' + dumps(code)
              + b',"evidence":{')
    evidence: dict[str, Any] = {"assignment": assignment, "groups": groups}
    if error:
        evidence["error"] = error
    if status is not None:
        evidence["capabilityStatus"] = status[0]
    if extra:
        evidence.update(extra)
    target = (extra or {}).get("downgradeTo") or ""
    csv = csv_fields((product, code, severity, sku.part_number, sid, target))
    return Piece((code, sku.sku_id), sku, group_ids, middle, dumps(evidence)[1:], csv, {})


def csv_fields(values: tuple[Any, ...]) -> str:
    """Fields joined as the csv module's default writer joins them: quoted only when they hold a comma, a quote
    or a line break, quotes doubled (the test compares whole files with what csv.writer wrote before)."""
    out = []
    for v in values:
        s = v if isinstance(v, str) else str(v)
        if _CSV_SPECIAL(s):
            s = '"' + s.replace('"', '""') + '"'
        out.append(s)
    return ",".join(out)


class UserLines:
    """One user's fixed parts of every finding line and CSV row, made at the user's first finding."""

    __slots__ = ("head", "evidence", "csv")

    def __init__(self, user: Any, last: str | None, last_key: str, source: str | None):
        self.head = dumps({"userId": user.id, "userPrincipalName": user.userPrincipalName,
                           "displayName": user.displayName})[:-1] + b","
        self.evidence = dumps({"accountEnabled": user.accountEnabled, "userType": user.userType,
                               "createdDateTime": user.createdDateTime, last_key: last,
                               "activitySource": source})[1:-1] + b","
        name, upn, uid = user.displayName or "", user.userPrincipalName or "", user.id or ""
        block = "True" if user.accountEnabled is False else "False"
        if _CSV_SPECIAL(f"{name}{upn}{uid}") is None:
            self.csv = f"{name},{upn},{uid},{block}"  # what csv_fields gives (str() of each, unquoted), faster
        else:
            self.csv = csv_fields((name, upn, uid, block))

    def line(self, p: Piece, excluded: str | None) -> bytes:
        if excluded:
            return b"".join((self.head, p.middle, self.evidence, p.tail, b',"excluded":', dumps(excluded), b"}"))
        return b"".join((self.head, p.middle, self.evidence, p.tail, b"}"))

    def row(self, p: Piece, excluded: str | None) -> str:
        rest = p.csv_cache.get(excluded)
        if rest is None:
            rest = p.csv_cache[excluded] = "," + p.csv + "," + csv_fields((excluded or "",)) + "\r\n"
        return self.csv + rest
