"""The usage-report download host (``reports.office.com`` in the real service, §4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .web import Request, Response

if TYPE_CHECKING:
    from .state import SimulatorState


class DownloadService:
    """The pre-authenticated report download host (§4): serves each report file once it is
    registered; it needs no token and, like a host that must never see one, rejects any
    request carrying an Authorization header."""

    def __init__(self, sim: SimulatorState) -> None:
        self.sim = sim

    def __call__(self, req: Request) -> Response:
        if "authorization" in req.headers:
            return Response(401, b"Authorization header not accepted on pre-authenticated download URLs.",
                            {"Content-Type": "text/plain"})
        segments = [s for s in req.path.split("/") if s]
        if req.method != "GET" or len(segments) != 3 or segments[:2] != ["data", "download"]:
            return Response(404, b"Not found", {"Content-Type": "text/plain"})
        entry = self.sim.take_download(segments[2])
        if entry is None:
            return Response(403, b"The download link has expired.", {"Content-Type": "text/plain"})
        data = self.sim.usage.download(entry["report"], entry["period"], entry["concealed"])
        return Response(200, data, {"Content-Type": "application/octet-stream"})
