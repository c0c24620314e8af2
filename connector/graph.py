"""Microsoft Graph access through msgraph-sdk's request pipeline, taking pages raw.

Requests are built with the SDK's request builders and sent by its request adapter, so the
SDK's middleware (authentication, retry honouring Retry-After, redirects) applies. Responses
come back through NativeResponseHandler as raw bytes parsed with orjson: building SDK model
objects per record costs about 10 ms per user, which a 100,000-user tenant cannot afford.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import reduce
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from kiota_abstractions.method import Method
from kiota_abstractions.native_response_handler import NativeResponseHandler
from kiota_abstractions.request_information import RequestInformation
from kiota_abstractions.request_option import RequestOption
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from kiota_http.kiota_client_factory import KiotaClientFactory
from kiota_http.middleware.middleware import REQUEST_OPTIONS_KEY, BaseMiddleware
from kiota_http.middleware.options import ResponseHandlerOption, RetryHandlerOption
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph_core import GraphClientFactory
from msgraph_core.middleware import GraphTelemetryHandler

from .auth import GraphCredential
from .config import Settings

log = logging.getLogger("m365_connector")

# Graph error codes that mean "this app may not read this" (fix: grant a permission).
PERMISSION_ERROR_CODES = frozenset({
    "Authorization_RequestDenied", "Authentication_MSGraphPermissionMissing", "S2SUnauthorized",
    "Forbidden", "accessDenied", "UnknownError_Forbidden",
})


@dataclass
class GraphError(Exception):
    """A Graph request failed for good (after the SDK's bounded retries)."""

    status: int
    code: str
    message: str
    request_id: str = ""
    path: str = ""

    def __str__(self) -> str:
        rid = f", request-id {self.request_id}" if self.request_id else ""
        return f"HTTP {self.status} {self.code}: {self.message} ({self.path}{rid})"

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message,
                "requestId": self.request_id, "path": self.path}


class ForeignLinkError(GraphError):
    """Graph handed back a next link to another origin; following it would leak the token."""


class BudgetExceeded(GraphError):
    """A request would break a documented rate limit (usage reports: 14 per 10 minutes); not sent."""


class RequestBudget:
    """At most `limit` attempts per `window` seconds, retries included, for every run in this process.

    Graph's usage-report limit (14 requests per 10 minutes per app, tenant and report API) is
    counted per attempt by the service, so the gate sits in the innermost middleware where
    every attempt, retried or not, passes. Refusing is better than sending: a 429 from the
    reports service costs more of the window than waiting for the next run.
    """

    def __init__(self, name: str, limit: int, window: float):
        self.name, self.limit, self.window = name, limit, window
        self._calls: deque[float] = deque()

    def take(self) -> None:
        now = time.monotonic()
        while self._calls and self._calls[0] <= now - self.window:
            self._calls.popleft()
        if len(self._calls) >= self.limit:
            wait = int(self._calls[0] + self.window - now) + 1
            raise BudgetExceeded(
                429, "ReportRateLimitReached",
                f"{self.name}: this process already made {self.limit} requests to this report in the last "
                f"{int(self.window // 60)} minutes (Graph's limit per app and tenant); not sent, to keep within it. "
                f"Run again in {wait} s.")
        self._calls.append(now)


_BUDGETS: dict[tuple[str, ...], RequestBudget] = {}


def request_budget(key: tuple[str, ...], limit: int, window: float) -> RequestBudget:
    """The process-wide budget for one (endpoint, tenant, app, API) key."""
    budget = _BUDGETS.get(key)
    if budget is None:
        budget = _BUDGETS[key] = RequestBudget(key[-1], limit, window)
    return budget


class AdaptiveLimiter:
    """Concurrency that adapts to throttling: halves on a 429 and pauses new requests for the
    Retry-After, then grows back by one slot per `limit` successful answers (slow recovery)."""

    def __init__(self, maximum: int):
        self.maximum = maximum
        self.limit = maximum
        self.in_flight = 0
        self.lowest = maximum
        self._successes = 0
        self._resume_at = 0.0
        self._cond = asyncio.Condition()

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._cond:
            while True:
                wait = self._resume_at - loop.time()
                if wait > 0:
                    self._cond.release()
                    try:
                        await asyncio.sleep(wait)
                    finally:
                        await self._cond.acquire()
                    continue
                if self.in_flight < self.limit:
                    break
                await self._cond.wait()
            self.in_flight += 1

    async def __aexit__(self, *exc: object) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def throttled(self, retry_after: float) -> None:
        loop = asyncio.get_running_loop()
        self.limit = max(1, self.limit // 2)
        self.lowest = min(self.lowest, self.limit)
        self._successes = 0
        self._resume_at = max(self._resume_at, loop.time() + retry_after)

    def succeeded(self) -> None:
        if self.limit >= self.maximum:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limit += 1


@dataclass
class RequestStats:
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


@dataclass
class Page:
    records: list[dict[str, Any]]
    next_link: str | None
    raw_bytes: int
    count: int | None = None


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def error_from(status: int, headers: Any, content: bytes, path: str) -> GraphError:
    code, message = f"HTTP{status}", ""
    try:
        body = orjson.loads(content) if content else {}
        err = body.get("error") or {}
        code = err.get("code") or code
        message = err.get("message") or ""
    except (orjson.JSONDecodeError, AttributeError):
        message = content[:200].decode("utf-8", "replace")
    request_id = headers.get("request-id", "") if headers is not None else ""
    return GraphError(status, code, message or "(no message)", request_id, path)


class Graph:
    """One Graph session per run: SDK client, pipeline and counters."""

    def __init__(self, settings: Settings, credential: GraphCredential):
        self.settings = settings
        self.base = f"{settings.graph_endpoint}/v1.0"
        self._origin = _origin(settings.graph_endpoint)
        host = urlsplit(settings.graph_endpoint).hostname or ""
        auth = AzureIdentityAuthenticationProvider(credential, scopes=[settings.graph_scope], allowed_hosts=[host])
        # No base delay on top of the backoff: Retry-After is honoured as sent; without it the
        # SDK backs off exponentially from 0.5 s.
        options = {RetryHandlerOption.get_key(): RetryHandlerOption(delay=0, max_retries=settings.max_retries)}
        middleware = KiotaClientFactory.get_default_middleware(options)
        middleware.append(GraphTelemetryHandler())
        middleware.append(_AttemptCounter(self))
        limits = httpx.Limits(max_connections=settings.max_concurrency * 2,
                              max_keepalive_connections=settings.max_concurrency * 2)
        http = httpx.AsyncClient(timeout=httpx.Timeout(120, connect=20), http2=True, limits=limits,
                                 base_url=self.base)
        http = GraphClientFactory.create_with_custom_middleware(middleware, client=http)
        adapter = GraphRequestAdapter(auth, http)
        adapter.base_url = self.base
        self.client = GraphServiceClient(request_adapter=adapter)
        self._http = http
        self.limiter = AdaptiveLimiter(settings.max_concurrency)
        self.first_request_at: float | None = None  # perf_counter() of the first Graph request (cold start)
        self.stats: dict[str, RequestStats] = {}
        self.shared: dict[str, asyncio.Future[Any]] = {}  # run-wide lookups several datasets need once

    async def aclose(self) -> None:
        await self._http.aclose()

    def _stats(self, label: str) -> RequestStats:
        return self.stats.setdefault(label, RequestStats())

    def check_link(self, url: str, label: str) -> None:
        if _origin(url) != self._origin:
            raise ForeignLinkError(
                0, "ForeignNextLink",
                f"Graph returned a next link to {urlsplit(url).scheme}://{urlsplit(url).netloc}, which is not the "
                f"configured Graph endpoint {self.settings.graph_endpoint}; it was not followed and no token was "
                "sent. If Graph is reached through a proxy or private endpoint, set M365_GRAPH_ENDPOINT to it.",
                path=urlsplit(url).path)

    async def get(self, builder: str, url: str, label: str, headers: dict[str, str] | None = None):
        """GET one URL through the SDK pipeline; returns the raw httpx response."""
        self.check_link(url, label)
        request_builder = reduce(getattr, builder.split("."), self.client).with_url(url)
        info = request_builder.to_get_request_information()
        for name, value in (headers or {}).items():
            info.headers.try_add(name, value)
        info.add_request_options([ResponseHandlerOption(NativeResponseHandler()), _Label(label)])
        if self.first_request_at is None:
            self.first_request_at = time.perf_counter()
        async with self.limiter:
            response = await self.client.request_adapter.send_async(info, None, {})
        stats = self._stats(label)
        stats.requests += 1
        return response

    def _prepare(self, info: RequestInformation, label: str, options: Iterable[RequestOption]) -> None:
        info.add_request_options([ResponseHandlerOption(NativeResponseHandler()), _Label(label), *options])
        self.client.request_adapter.set_base_url_for_request_information(info)

    @asynccontextmanager
    async def stream(self, info: RequestInformation, label: str,
                     options: Iterable[RequestOption] = ()) -> AsyncIterator[httpx.Response]:
        """Send a request built by an SDK request builder through the same pipeline (auth, retry,
        redirect, counters) but leave the body unread, so a large download is read in chunks."""
        self._prepare(info, label, options)
        adapter = self.client.request_adapter
        async with self.limiter:
            request = await adapter.convert_to_native_async(info)
            response = await self._http.send(request, stream=True)
        self._stats(label).requests += 1
        try:
            yield response
        finally:
            await response.aclose()

    async def post_json(self, path: str, body: bytes, label: str) -> httpx.Response:
        """POST a JSON body (JSON batching: `$batch`) through the SDK pipeline; raw response back."""
        info = RequestInformation(Method.POST)
        info.url = f"{self.base}{path}"
        info.headers.try_add("Accept", "application/json")
        info.set_stream_content(body, "application/json")  # not octet-stream: the retry handler may resend it
        self._prepare(info, label, ())
        async with self.limiter:
            response = await self.client.request_adapter.send_async(info, None, {})
        self._stats(label).requests += 1
        return response

    async def first_page(self, builder: str, url: str, label: str, headers: dict[str, str] | None = None) -> Page:
        return await self._page(builder, url, label, headers)

    async def _page(self, builder: str, url: str, label: str, headers: dict[str, str] | None) -> Page:
        response = await self.get(builder, url, label, headers)
        content = response.content
        if response.status_code != 200:
            raise error_from(response.status_code, response.headers, content, urlsplit(url).path)
        body = orjson.loads(content)
        next_link = body.get("@odata.nextLink")
        if next_link:
            self.check_link(next_link, label)
        value = body.get("value")
        return Page(value if isinstance(value, list) else [body], next_link, len(content), body.get("@odata.count"))

    async def pages(self, builder: str, first_url: str | None, label: str, headers: dict[str, str] | None = None,
                    prefetch: bool = False, first: Page | None = None) -> AsyncIterator[Page]:
        """Follow @odata.nextLink from first_url (or from an already fetched first page); with prefetch
        the next page is requested while the caller works on the current one."""
        pending: asyncio.Future[Page] | None = None
        url: str | None = first_url
        try:
            if first is not None:
                url = first.next_link
                if prefetch and url:
                    pending = asyncio.ensure_future(self._page(builder, url, label, headers))
                yield first
            while url:
                page = await (pending or self._page(builder, url, label, headers))
                pending = None
                url = page.next_link
                if prefetch and url:
                    pending = asyncio.ensure_future(self._page(builder, url, label, headers))
                yield page
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)

    async def count(self, path: str, label: str, query: str = "") -> int:
        """`$count` of a directory collection (an advanced query: ConsistencyLevel eventual)."""
        url = f"{self.base}{path}/$count" + (f"?{query}" if query else "")
        response = await self.get(path.strip("/").split("/")[0], url, label, {"ConsistencyLevel": "eventual"})
        if response.status_code != 200:
            raise error_from(response.status_code, response.headers, response.content, path)
        return int(response.content.decode().strip().lstrip("\ufeff"))


class _Label:
    """Request option carrying the dataset name, so per-attempt middleware can count by dataset."""

    KEY = "m365_connector.label"

    def __init__(self, label: str):
        self.label = label

    def get_key(self) -> str:
        return self.KEY


class _Budget:
    """Request option: every attempt of this request to Graph takes a slot of the budget first."""

    KEY = "m365_connector.budget"

    def __init__(self, budget: RequestBudget):
        self.budget = budget

    def get_key(self) -> str:
        return self.KEY


def budget_option(budget: RequestBudget) -> RequestOption:
    return _Budget(budget)  # type: ignore[return-value]


class _AttemptCounter(BaseMiddleware):
    """Innermost middleware: sees every attempt, including ones the retry handler repeats."""

    def __init__(self, graph: Graph):
        super().__init__()
        self._graph = graph

    async def send(self, request: httpx.Request, transport: httpx.AsyncBaseTransport) -> httpx.Response:
        # The last middleware removes the kiota options before sending, and a retry resends the same
        # request object, so keep the label under a key of our own.
        label = request.extensions.get(_Label.KEY)
        if label is None:
            options = request.extensions.get(REQUEST_OPTIONS_KEY) or {}
            label = request.extensions[_Label.KEY] = getattr(options.get(_Label.KEY), "label", "other")
            budget = getattr(options.get(_Budget.KEY), "budget", None)
            if budget is not None:
                request.extensions[_Budget.KEY] = budget
        budget = request.extensions.get(_Budget.KEY)
        if budget is not None and _origin(str(request.url)) == self._graph._origin:
            budget.take()  # only Graph's own answers count; the download host is another origin
        response = await super().send(request, transport)
        stats = self._graph._stats(label)
        stats.by_status[response.status_code] = stats.by_status.get(response.status_code, 0) + 1
        if "Retry-Attempt" in request.headers:
            stats.retries += 1
        if response.status_code == 429:
            stats.throttled += 1
            self._graph.limiter.throttled(_retry_after_seconds(response.headers.get("retry-after")))
        elif response.status_code < 400:
            self._graph.limiter.succeeded()
        return response


def _retry_after_seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 1.0
    except ValueError:
        return 1.0
