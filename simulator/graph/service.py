"""Microsoft Graph v1.0: one service answering every area (simulator/graph/*.py) behind the same
authentication, throttling, faults, compression and latency (§0, §1, §3, §6)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from isal import isal_zlib

from ..tokens import GRAPH_RESOURCE, new_guid
from ..web import Request, Response, broken
from .apps import AppsArea
from .batch import batch
from .copilot import CopilotArea
from .delta import DeltaArea
from .devices import DevicesArea
from .groups import GroupsArea
from .limits import Limits
from .organization import OrganizationArea
from .paging import Pager
from .protocol import GraphError, graph_date, retry_after
from .reports import ReportsArea
from .roles import RolesArea
from .users import UsersArea

if TYPE_CHECKING:
    from ..state import SimulatorState


# Graph compresses a response body when the request accepts gzip: the SDKs' decompression middleware is
# specified for it (msgraph-sdk-design middleware/DecompressionHandler.md: "Decompress response bodies
# that have the header Content-Encoding: gzip"; Python's HTTPX sends Accept-Encoding and decodes by
# itself), and Graph's answers carry "Vary: Accept-Encoding" (the captured response in
# middleware/CompressionHandler.md). Graph's threshold and level are not documented; small bodies stay
# plain here, and ISA-L's fast level keeps the stand-in's CPU low.
GZIP_MIN_BYTES = 1024


def _encoded(req: Request, response: Response) -> Response:
    accepted = req.headers.get("accept-encoding", "")
    if len(response.body) < GZIP_MIN_BYTES or "gzip" not in accepted.lower():
        return response
    packer = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
    body = packer.compress(response.body) + packer.flush()
    headers = {**response.headers, "Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
    return Response(response.status, body, headers, fault=response.fault)


class GraphService:
    """Microsoft Graph v1.0: auth, permissions, paging, faults and throttling around the areas' routes."""

    def __init__(self, sim: SimulatorState) -> None:
        self.sim = sim
        self.limits = Limits(sim)
        pager = Pager(sim)
        self.areas = [area(sim, pager, self.limits) for area in (
            DeltaArea, AppsArea, GroupsArea, RolesArea, DevicesArea, ReportsArea, OrganizationArea, UsersArea)]
        self.beta = CopilotArea(sim, pager, self.limits)

    # ------------------------------------------------------------------ entry

    def __call__(self, req: Request) -> Response:
        """`latency` is the whole time a Graph request takes, like a real page: the time spent
        building the answer counts towards it, so tenant size does not add simulator overhead."""
        started = time.monotonic()
        response = self._handle(req)
        fault = self.sim._take_break("graph", req.path)
        if fault is not None:
            response = broken(response, fault)
        response = _encoded(req, response)
        remaining = self.sim.spec.latency - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        return response

    def _handle(self, req: Request) -> Response:
        sim = self.sim
        request_id = new_guid()
        client_request_id = req.headers.get("client-request-id") or new_guid()
        headers = {
            "request-id": request_id,
            "client-request-id": client_request_id,
            "Cache-Control": "no-cache",
            "Strict-Transport-Security": "max-age=31536000",
            "x-ms-ags-diagnostic": '{"ServerInfo":{"DataCenter":"Simulated","Slice":"E","Ring":"1",'
            '"ScaleUnit":"000","RoleInstance":"SIM"}}',
        }
        try:
            claims = self._authenticate(req)
            self._faults(req, headers)
            response = self._route(req, claims, headers)
        except GraphError as err:
            headers.update(err.headers)
            if err.status == 429:
                sim._count("throttled_count")
                body: dict[str, Any] = {
                    "error": {
                        "code": err.code,
                        "innerError": {
                            "code": "429",
                            "date": graph_date(),
                            "message": "Please retry after",
                            "request-id": request_id,
                            "status": "429",
                            "client-request-id": client_request_id,
                        },
                        "message": err.message,
                    }
                }
            else:
                body = {
                    "error": {
                        "code": err.code,
                        "message": err.message,
                        "innerError": {
                            "date": graph_date(),
                            "request-id": request_id,
                            "client-request-id": client_request_id,
                        },
                    }
                }
            return Response.json(err.status, body, "application/json", headers)
        response.headers.update(headers)
        return response

    # ------------------------------------------------------------------ cross-cutting

    def _authenticate(self, req: Request) -> dict[str, Any]:
        auth = req.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        challenge = {
            "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
            'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
        }
        if not token:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", challenge)
        claims, reason = self.sim.issuer.verify(token, (GRAPH_RESOURCE, "00000003-0000-0000-c000-000000000000"))
        messages = {
            "malformed": "IDX14100: JWT is not well formed, there are no dots (.).",
            "signature": "Access token validation failure. Invalid signature.",
            "expired": "Lifetime validation failed, the token is expired.",
            "tenant": "Access token validation failure. Invalid issuer.",
            "audience": "Access token validation failure. Invalid audience.",
        }
        if reason == "malformed" and token.count(".") == 2:
            messages["malformed"] = "Access token validation failure. Invalid token."
        if reason:
            raise GraphError(401, "InvalidAuthenticationToken", messages[reason], challenge)
        assert claims is not None
        return claims

    def _faults(self, req: Request, headers: dict[str, str]) -> None:
        sim, spec = self.sim, self.sim.spec
        rule = sim._take_failure("graph", req.path)
        if rule is not None:
            extra = {"Retry-After": retry_after(spec.retry_after)} if rule["status"] in (429, 503) else {}
            raise GraphError(rule["status"], rule["code"], rule["message"], extra)
        self.limits.charge(req, headers)
        draw, second = sim._draw()
        if draw < spec.throttle_rate:
            raise GraphError(
                429, "TooManyRequests", "Please retry again later.", {"Retry-After": retry_after(spec.retry_after)}
            )
        if draw < spec.throttle_rate + spec.transient_rate:
            if second < 0.5:
                raise GraphError(
                    503,
                    "serviceNotAvailable",
                    "The service is temporarily unavailable. Try again later.",
                    {"Retry-After": retry_after(spec.retry_after)},
                )
            raise GraphError(504, "UnknownError", "The gateway did not receive a timely response.")

    # ------------------------------------------------------------------ routes

    def _route(self, req: Request, claims: dict[str, Any], headers: dict[str, str]) -> Response:
        segments = [s for s in req.path.split("/") if s]
        if segments and segments[0] == "beta" and req.method == "GET":  # only the Copilot usage report (beta only)
            routed = self.beta.route(req, claims, segments[1:], [s.lower() for s in segments[1:]])
            if routed is not None:
                return routed
        if not segments or segments[0] != "v1.0":
            raise GraphError(400, "BadRequest", f"Invalid version: {segments[0] if segments else ''}")
        rest = [s.lower() for s in segments[1:]]
        if rest == ["$batch"] and req.method == "POST":
            return batch(req, self._handle)
        if req.method != "GET":
            raise GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.")
        for area in self.areas:
            routed = area.route(req, claims, segments[1:], rest)
            if routed is not None:
                return routed
        segment = segments[1] if len(segments) > 1 else ""
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")

