"""Opt-in datasets read from Graph's /beta endpoint (Dataset.api "beta"): the Microsoft 365 Copilot usage report,
which Microsoft documents under /beta only. Each run that collects one carries a `beta_endpoint` warning."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from connector.catalog.datasets import Dataset
from connector.collect.reports import conceal_check, report_settings
from connector.collect.strategy import Context, register

BETA_NOTE = ("Microsoft documents it under /beta only: \"APIs under the /beta version are subject to change. Use of "
             "these APIs in production applications is not supported.\" Its fields may change without notice; it is "
             "collected because M365_DATASETS names it (leave it out to stop)")


def beta_url(base: str, ds: Dataset, period: str) -> str:
    """The request URL under /beta for a v1.0 base such as https://graph.microsoft.com/v1.0."""
    root = base.rsplit("/", 1)[0]
    return f"{root}/{ds.api}{ds.path.format(period=period)}?$format=application/json"


@register("beta_report")
async def beta_report(ctx: Context, ds: Dataset) -> AsyncIterator[list[dict[str, Any]]]:
    """A usage report served as JSON pages under /beta (the Copilot usage report); its user names are checked
    for concealment like the CSV reports'."""
    graph, period = ctx.graph, ctx.settings.report_period
    ctx.extra["period"] = period
    ctx.extra["api"] = ds.api
    ctx.warn("beta_endpoint", ds.name, f"{ds.name} is read from Graph's /beta endpoint ({ds.path.format(period=period)}"
                                       f"). {BETA_NOTE}.")
    confirmed = await report_settings(ctx)
    first = True
    async for page in graph.pages(ds.builder, beta_url(graph.base, ds, period), ds.name):
        records = page.records
        if first:
            conceal_check(ctx, ds, records, confirmed)
            first = False
        yield records
    if first:
        conceal_check(ctx, ds, [], confirmed)
