"""The Microsoft Download Center stand-in: serves the "Product names and service plan identifiers for
licensing" CSV at the path Microsoft publishes it under, so the connector's run-time refresh of friendly
product names is exercised over real HTTPS.

Source of the path and format: learn.microsoft.com/entra/identity/users/licensing-service-plan-reference
("Product names and service plan identifiers for licensing", the downloadable CSV: UTF-8 with BOM, columns
Product_Display_Name, String_Id, GUID, Service_Plan_Name, Service_Plan_Id,
Service_Plans_Included_Friendly_Names). By default the simulator serves the copy the connector ships.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from .web import Request, Response

if TYPE_CHECKING:
    from .state import SimulatorState

PRODUCT_NAMES_PATH = ("/download/e/3/e/e3e9faf2-f28b-490a-9ada-c6089a1fc5b0/"
                      "Product%20names%20and%20service%20plan%20identifiers%20for%20licensing.csv")
_SHIPPED = Path(__file__).resolve().parent.parent / "connector" / "insights" / "data" / "product-names.csv.gz"


def shipped_product_names() -> bytes:
    """Microsoft's CSV as the connector ships it."""
    return gzip.decompress(_SHIPPED.read_bytes())


class DownloadCenterService:
    """download.microsoft.com: anonymous GETs of published files."""

    def __init__(self, sim: SimulatorState) -> None:
        self.sim = sim

    def __call__(self, req: Request) -> Response:
        if req.method not in ("GET", "HEAD") or unquote(req.path) != unquote(PRODUCT_NAMES_PATH):
            return Response(404, b"Not found", {"Content-Type": "text/html"})
        spec = self.sim.spec
        if spec.product_names_status != 200:
            return Response(spec.product_names_status, b"Service unavailable", {"Content-Type": "text/html"})
        body = spec.product_names_csv if spec.product_names_csv is not None else shipped_product_names()
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        return Response(200, body if req.method == "GET" else b"",
                        {"Content-Type": "application/octet-stream", "ETag": etag})
