"""The shape every area of the Graph API shares: it answers its own paths and passes on the others."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..state import SimulatorState
    from ..web import Request, Response
    from .limits import Limits
    from .paging import Pager


class Area:
    """One area of Graph (users, groups, apps...), sharing the service's paging keys and limits."""

    def __init__(self, sim: SimulatorState, pager: Pager, limits: Limits) -> None:
        self.sim = sim
        self.pager = pager
        self.limits = limits

    def route(self, req: Request, claims: dict[str, Any], raw: list[str], rest: list[str]) -> Response | None:
        """The answer for a GET of ``raw`` (path segments after /v1.0; ``rest`` lower-cased), or None when
        the path is not this area's."""
        raise NotImplementedError
