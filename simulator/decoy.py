"""A foreign HTTPS host: clients must never send it a token or follow a next link to it."""

from __future__ import annotations

from .graph.protocol import METADATA, ODATA_JSON
from .tokens import new_guid
from .web import Request, Response


class DecoyService:
    """A foreign host: answers every request with an empty collection (the recording is the point)."""

    def __call__(self, req: Request) -> Response:
        return Response.json(
            200, {"@odata.context": f"{METADATA}#users", "value": []}, ODATA_JSON, {"request-id": new_guid()}
        )
