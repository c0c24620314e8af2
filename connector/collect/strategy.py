"""The strategy registry: how a dataset's records are fetched, looked up by the name its declaration gives.

A strategy is an async generator `(context, dataset) -> lists of records`. Strategy modules
register themselves here with `@register("name")`; neither this module nor the engine imports them
by name in code, they are loaded from STRATEGY_MODULES. A strategy may yield RESTART to discard
what it yielded so far (the engine starts the dataset's file again), e.g. when a concurrent plan
has to fall back to a plain chain.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from connector.catalog.datasets import Dataset
from connector.graph.client import Graph

# Modules that register strategies; importing them fills STRATEGIES.
STRATEGY_MODULES = tuple(f"connector.collect.{name}" for name in ("paging", "batch", "reports", "apps", "beta"))

Records = list[dict[str, Any]]
Strategy = Callable[["Context", Dataset], AsyncIterator[Records]]

STRATEGIES: dict[str, Strategy] = {}


class _Restart(list):
    """Marker: everything yielded before it is discarded."""


RESTART: Records = _Restart()


@dataclass
class Context:
    """What a strategy may use beyond Graph: settings, granted roles, and the dataset's manifest entry
    (`plan` and `extra` fields are merged into it, `warnings` are added to it). A strategy clears
    `domain_filter` when its records cannot be filtered by user principal name (concealed report names)."""

    settings: Any
    graph: Graph
    granted: frozenset[str]
    extra: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    warnings: list[dict[str, str]] = field(default_factory=list)
    domain_filter: bool = True
    # A strategy paging one @odata.nextLink chain sets `next_link` before yielding a page (where the chain
    # continues after it), so the engine can checkpoint it; `resume_link` is where a resumed chain starts.
    next_link: str | None = None
    resume_link: str | None = None
    # What a strategy tells the engine but not the manifest, e.g. the groups a fan-out could not read
    # (`unreadable`: leg name -> parent ids), which a change feed keeps for its next run.
    notes: dict[str, Any] = field(default_factory=dict)

    def warn(self, code: str, dataset: str, message: str) -> None:
        self.warnings.append({"code": code, "dataset": dataset, "message": message})


def register(name: str) -> Callable[[Strategy], Strategy]:
    def add(fn: Strategy) -> Strategy:
        if name in STRATEGIES and STRATEGIES[name] is not fn:
            raise ValueError(f"strategy {name!r} is registered twice")
        STRATEGIES[name] = fn
        return fn
    return add


def strategy_for(ds: Dataset) -> Strategy:
    if ds.strategy not in STRATEGIES:
        for module in STRATEGY_MODULES:
            importlib.import_module(module)
    return STRATEGIES[ds.strategy]


def first_url(graph: Graph, ds: Dataset, extra: str = "") -> str:
    query = "&".join(q for q in (ds.query(), extra) if q)
    return f"{graph.base}{ds.path}" + (f"?{query}" if query else "")
