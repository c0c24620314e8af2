"""How a dataset's records are fetched: one strategy per request shape, chosen by the declaration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .datasets import Dataset
from .graph import Graph


def first_url(graph: Graph, ds: Dataset, extra: str = "") -> str:
    query = "&".join(q for q in (ds.query(), extra) if q)
    return f"{graph.base}{ds.path}" + (f"?{query}" if query else "")


async def records_of(graph: Graph, ds: Dataset) -> AsyncIterator[list[dict[str, Any]]]:
    """Yield the dataset's records page by page, in Graph's shapes."""
    async for page in graph.pages(ds.builder, first_url(graph, ds), ds.name):
        yield page.records
