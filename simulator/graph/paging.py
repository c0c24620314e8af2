"""Paging of Graph collections: ``$top`` page sizes, opaque tamper-evident ``$skiptoken`` values bound to
the query, next links, and one page of a collection with ``$select``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from ..web import Request, Response
from .protocol import METADATA, GraphError, ok

if TYPE_CHECKING:
    from ..state import SimulatorState


def page_size(options: dict[str, str], default: int, max_top: int) -> int:
    """``$top`` (1 to ``max_top``), else ``default``."""
    if "$top" not in options:
        return default
    top = options["$top"]
    if not re.fullmatch(r"\d+", top) or not 1 <= int(top) <= max_top:
        raise GraphError(400, "Request_UnsupportedQuery",
                         f"Invalid page size specified: '{top}'. Must be between 1 and {max_top} inclusive.")
    return int(top)


class Pager:
    """Skip tokens signed with a per-service key, and next links on the Graph endpoint (or the decoy's,
    when the spec asks for a foreign next link)."""

    def __init__(self, sim: SimulatorState) -> None:
        self.sim = sim
        self._skiptoken_key = os.urandom(16)


    def _mac(self, position: int, salt: bytes, filter_text: str) -> bytes:
        return hmac.new(self._skiptoken_key, f"{position}|{filter_text}".encode() + salt, hashlib.sha256).digest()[:12]

    def make_skiptoken(self, position: int, filter_text: str) -> str:
        """Opaque, tamper-evident: RFNwdA-like base64 of position, salt and MAC."""
        salt = os.urandom(6)
        raw = b"DSpt" + position.to_bytes(4, "big") + salt + self._mac(position, salt, filter_text)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def read_skiptoken(self, token: str, filter_text: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raw = b""
        if len(raw) == 26 and raw[:4] == b"DSpt":
            position = int.from_bytes(raw[4:8], "big")
            if hmac.compare_digest(raw[14:], self._mac(position, raw[8:14], filter_text)):
                return position
        raise GraphError(400, "Request_BadRequest", "The specified page token value has expired or is invalid.")

    def next_link(self, req: Request, token: str) -> str:
        base = self.sim.decoy_endpoint if self.sim.spec.foreign_next_link else self.sim.graph_endpoint
        kept = [
            part
            for part in req.raw_query.split("&")
            if part and (parse_qsl(part, keep_blank_values=True) or [("", "")])[0][0].lower() != "$skiptoken"
        ]
        kept.append(f"$skiptoken={quote(token, safe='')}")
        return f"{base}{req.path}?{'&'.join(kept)}"

    def list_page(self, req: Request, items: Any, context: str, page: int, max_top: int, *, type_name: str = "",
              render: Any = None, odata_type: bool = False, ignore_top: bool = False) -> Response:
        """One page of a collection: $select, $top (or, with `ignore_top`, always `page`), opaque $skiptoken
        bound to the query."""
        options = {k.lower(): v for k, v in req.pairs if k.startswith("$")}
        size = page if ignore_top else page_size(options, page, max_top)
        all_items = items()
        select = options.get("$select")
        bound = f"{req.path.lower()}|{select or ''}"
        start = self.read_skiptoken(options["$skiptoken"], bound) if "$skiptoken" in options else 0
        chunk = all_items[start : start + size]
        objects = [render(x) for x in chunk] if render else list(chunk)
        if select is not None:
            names = [p.strip() for p in select.split(",")]
            if not select.strip() or any(not n for n in names):
                raise GraphError(400, "BadRequest", f"Invalid $select: '{select}'.")
            if type_name and objects:
                known = {p.lower() for p in objects[0]}
                for n in names:
                    if n.lower() not in known:
                        raise GraphError(400, "Request_BadRequest", f"Could not find a property named '{n}' on "
                                         f"type 'microsoft.graph.{type_name}'.")
            wanted = {n.lower() for n in names} | {"id"}
            objects = [{k: v for k, v in o.items() if k.lower() in wanted or (odata_type and k == "@odata.type")}
                       for o in objects]
        body: dict[str, Any] = {"@odata.context": f"{METADATA}#{context}" + (f"({select})" if select else "")}
        if start + len(chunk) < len(all_items):
            body["@odata.nextLink"] = self.next_link(req, self.make_skiptoken(start + len(chunk), bound))
        body["value"] = objects
        return ok(body)
