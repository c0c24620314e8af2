"""Microsoft Graph access through msgraph-sdk's request pipeline, taking pages raw.

Requests are built with the SDK's request builders and sent by its request adapter, so the
SDK's middleware (authentication, retry honouring Retry-After, redirects) applies. Responses
come back through NativeResponseHandler as raw bytes parsed with orjson: building SDK model
objects per record costs about 10 ms per user, which a 100,000-user tenant cannot afford.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable
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

from connector.catalog.quotas import APP_WIDE, app_buckets, classify
from connector.config import Settings
from connector.graph.auth import GraphCredential
from connector.graph.ledger import AppBudget, Grant, MemoryRows, budget_for
from connector.graph.pacer import Pacer, pacer_for
from connector.graph.retry import MAX_WAIT, RETRY_STATUSES, AdaptiveLimiter, Deadline, backoff, retry_after_seconds
from connector.rawjson import raw_page

__all__ = ["AdaptiveLimiter", "Graph", "GraphError", "Page", "RequestStats"]

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
    """A request would wait longer than MAX_WAIT for room in a documented quota (usage reports: 14 per 10
    minutes); not sent: a 429 from the reports service costs more of the window than waiting for the next run."""


@dataclass
class RequestStats:
    requests: int = 0  # requests made (a retried request counts once)
    retries: int = 0  # attempts sent again, whatever the cause
    throttled: int = 0  # answers 429
    waited: float = 0.0  # seconds spent waiting before retries (Retry-After or backoff)
    broken: int = 0  # transport errors and broken pages that were retried
    paced: float = 0.0  # seconds requests waited for room in Graph's quotas before they were sent
    by_status: dict[int, int] = field(default_factory=dict)


@dataclass
class Page:
    records: list[dict[str, Any]]
    next_link: str | None
    raw_bytes: int
    count: int | None = None
    delta_link: str | None = None  # @odata.deltaLink: the last page of a delta round


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

    def __init__(self, settings: Settings, credential: GraphCredential, budget: AppBudget | None = None):
        self.settings = settings
        self.base = f"{settings.graph_endpoint}/v1.0"
        self._origin = _origin(settings.graph_endpoint)
        host = urlsplit(settings.graph_endpoint).hostname or ""
        auth = AzureIdentityAuthenticationProvider(credential, scopes=[settings.graph_scope], allowed_hosts=[host])
        # The SDK's retry handler stays in the pipeline but sends each attempt once: the connector's
        # requests are retried by Graph._send (connector/graph/retry.py), which also retries transport errors
        # and broken pages, knows the run's deadline and does not hold a connection slot while it waits.
        options = {RetryHandlerOption.get_key(): RetryHandlerOption(delay=0, max_retries=0, should_retry=False)}
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
        self._slots = asyncio.Semaphore(settings.max_concurrency)  # requests in flight, all scopes together
        self.scopes: dict[str, AdaptiveLimiter] = {}  # per dataset: throttling slows only its own scope
        self.deadline = Deadline(settings.run_time_limit * 60)
        self.first_request_at: float | None = None  # perf_counter() of the first Graph request (cold start)
        self.stats: dict[str, RequestStats] = {}
        self.shared: dict[str, asyncio.Future[Any]] = {}  # run-wide lookups several datasets need once
        # Graph's quotas, shared by every dataset of the run and every run of the process for this app and tenant.
        self.pacer: Pacer = pacer_for((settings.graph_endpoint, settings.tenant_id.lower(), settings.client_id),
                                      settings.quota_limits())
        # Graph's app-wide quotas (all tenants of the app together): leases from a ledger every process of the
        # deployment shares (connector/graph/ledger.py); without one given, this process's own.
        self.budget: AppBudget = budget or budget_for((settings.graph_endpoint, settings.client_id),
                                                      settings.quota_limits(), MemoryRows)
        self.consumer = settings.tenant_id.lower()

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

    def scope(self, label: str) -> AdaptiveLimiter:
        limiter = self.scopes.get(label)
        if limiter is None:
            limiter = self.scopes[label] = AdaptiveLimiter(self.settings.max_concurrency)
        return limiter

    def _info(self, builder: str, url: str, label: str, headers: dict[str, str] | None) -> RequestInformation:
        request_builder = reduce(getattr, builder.split("."), self.client).with_url(url)
        info = request_builder.to_get_request_information()
        for name, value in (headers or {}).items():
            info.headers.try_add(name, value)
        info.add_request_options([ResponseHandlerOption(NativeResponseHandler()), _Label(label)])
        return info

    async def _send(self, label: str, attempt: Callable[[], Any], *, check: Callable[[Any], Any] | None = None,
                    max_retries: int | None = None, path: str = "") -> Any:
        """Send one request through the SDK pipeline with the retry policy of connector/graph/retry.py.

        `attempt()` sends once and returns the httpx response; `check(response)` turns a 200 into the
        result and raises ValueError for a broken body (retried like a transport error). Non-200
        answers that are not worth retrying are returned as they are, for the caller's error."""
        stats = self._stats(label)
        scope = self.scope(label)
        budget = self.settings.max_retries if max_retries is None else max_retries
        stats.requests += 1
        retries = 0
        if self.first_request_at is None:
            self.first_request_at = time.perf_counter()
        while True:
            progress = scope.completed
            async with scope, self._slots:
                try:
                    response = await attempt()
                except (httpx.TransportError, httpx.DecodingError) as exc:
                    if _certificate_problem(exc):
                        raise
                    response, failure = None, exc
            if response is not None:
                status = response.status_code
                if status == 429:
                    stats.throttled += 1
                if status not in RETRY_STATUSES:
                    if status != 200 or check is None:
                        if status < 400:
                            scope.succeeded()
                        return response
                    try:
                        result = check(response)
                    except ValueError as exc:
                        failure = exc
                    else:
                        scope.succeeded()
                        return result
                else:
                    failure = None
            # Something to retry: a retryable status, a transport error or a broken body.
            hinted = retry_after_seconds(response.headers.get("retry-after")) if response is not None else None
            wait = hinted if hinted is not None else backoff(retries)
            throttled = response is not None and response.status_code == 429
            # Patience, not failure, while the scope still gets answers: some request of it succeeded
            # during this attempt or since the scope's previous 429. Such a 429 uses no retry budget.
            patient = throttled and (scope.completed > progress or scope.completed > scope.completed_at_throttle)
            if throttled:
                scope.completed_at_throttle = scope.completed
            reason = give_up_reason(retries, budget, wait, hinted is not None, self.deadline, counted=not patient)
            if reason:
                if response is not None and failure is None:
                    await _read(response)
                    error = error_from(response.status_code, response.headers, response.content, path)
                    error.message = f"{error.message} ({reason})"
                    raise error
                raise GraphError(0, "BrokenResponse" if isinstance(failure, ValueError) else "ConnectionFailed",
                                 f"{type(failure).__name__}: {str(failure)[:200] or 'no details'} ({reason})",
                                 path=path) from failure
            if response is not None:
                await response.aclose()
                if response.status_code == 429:
                    scope.throttled(wait)  # only now: this request will be sent again after the pause
            if failure is not None:
                stats.broken += 1
                log.info("%s: %s on %s; retrying in %.1f s", label, type(failure).__name__, path, wait)
            stats.retries += 1
            stats.waited += wait
            if not patient:
                retries += 1
            await asyncio.sleep(wait)

    async def get(self, builder: str, url: str, label: str, headers: dict[str, str] | None = None,
                  check: Callable[[httpx.Response], Any] | None = None, max_retries: int | None = None):
        """GET one URL through the SDK pipeline (retried per connector/graph/retry.py, at most `max_retries`
        times when given); the raw httpx response, or check(response) for a 200 when a check is given."""
        self.check_link(url, label)
        adapter = self.client.request_adapter

        async def attempt() -> httpx.Response:
            return await adapter.send_async(self._info(builder, url, label, headers), None, {})

        return await self._send(label, attempt, check=check, max_retries=max_retries, path=urlsplit(url).path)

    def _prepare(self, info: RequestInformation, label: str, options: Iterable[RequestOption]) -> None:
        info.add_request_options([ResponseHandlerOption(NativeResponseHandler()), _Label(label), *options])
        self.client.request_adapter.set_base_url_for_request_information(info)

    @asynccontextmanager
    async def stream(self, build: Callable[[], RequestInformation], label: str,
                     options: Iterable[RequestOption] = (), max_retries: int | None = None,
                     ) -> AsyncIterator[httpx.Response]:
        """Send a request built by an SDK request builder through the same pipeline (auth, redirect,
        counters, retries until the headers arrive) but leave the body unread, so a large download is
        read in chunks. `build()` makes a fresh RequestInformation for each attempt."""
        adapter = self.client.request_adapter
        options = list(options)

        async def attempt() -> httpx.Response:
            info = build()
            self._prepare(info, label, options)
            request = await adapter.convert_to_native_async(info)
            return await self._http.send(request, stream=True)

        response = await self._send(label, attempt, max_retries=max_retries)
        try:
            yield response
        finally:
            await response.aclose()

    async def post_json(self, path: str, body: bytes, label: str) -> httpx.Response:
        """POST a JSON body (JSON batching: `$batch`, whose requests are all GETs, so sending it again is
        safe) through the SDK pipeline; the raw response back, its body checked to be JSON when 200."""
        adapter = self.client.request_adapter

        async def attempt() -> httpx.Response:
            info = RequestInformation(Method.POST)
            info.url = f"{self.base}{path}"
            info.headers.try_add("Accept", "application/json")
            info.set_stream_content(body, "application/json")
            self._prepare(info, label, ())
            return await adapter.send_async(info, None, {})

        def check(response: httpx.Response) -> httpx.Response:
            _json(response.content)
            return response

        return await self._send(label, attempt, check=check, path=path)

    async def first_page(self, builder: str, url: str, label: str, headers: dict[str, str] | None = None) -> Page:
        return await self._page(builder, url, label, headers)

    async def _page(self, builder: str, url: str, label: str, headers: dict[str, str] | None,
                    raw: tuple[str, ...] | None = None) -> Page:
        """One page; with `raw` (the properties to read) its records stay Graph's JSON (connector/rawjson.py)."""
        def check(response: httpx.Response) -> Page:
            content = response.content
            if raw is not None:
                records, next_link, count = raw_page(content, raw)
                if records is not None:
                    return Page(records, next_link, len(content), count)
            body = _json(content)
            if not isinstance(body, dict):
                raise ValueError("the page is not a JSON object")
            value = body.get("value")
            if "value" in body and not isinstance(value, list):
                raise ValueError("the page's value is not a list")
            next_link = body.get("@odata.nextLink")
            if next_link is not None and not isinstance(next_link, str):
                raise ValueError("the page's @odata.nextLink is not a string")
            delta_link = body.get("@odata.deltaLink")
            if delta_link is not None and not isinstance(delta_link, str):
                raise ValueError("the page's @odata.deltaLink is not a string")
            return Page(value if isinstance(value, list) else [body], next_link, len(content),
                        body.get("@odata.count"), delta_link)

        result = await self.get(builder, url, label, headers, check=check)
        if isinstance(result, Page):
            for link in (result.next_link, result.delta_link):
                if link:
                    self.check_link(link, label)
            return result
        raise error_from(result.status_code, result.headers, result.content, urlsplit(url).path)

    async def pages(self, builder: str, first_url: str | None, label: str, headers: dict[str, str] | None = None,
                    prefetch: bool = False, first: Page | None = None,
                    raw: tuple[str, ...] | None = None) -> AsyncIterator[Page]:
        """Follow @odata.nextLink from first_url (or from an already fetched first page); with prefetch
        the next page is requested while the caller works on the current one. `raw`: see _page."""
        pending: asyncio.Future[Page] | None = None
        url: str | None = first_url
        try:
            if first is not None:
                url = first.next_link
                if prefetch and url:
                    pending = asyncio.ensure_future(self._page(builder, url, label, headers, raw))
                yield first
            while url:
                page = await (pending or self._page(builder, url, label, headers, raw))
                pending = None
                url = page.next_link
                if prefetch and url:
                    pending = asyncio.ensure_future(self._page(builder, url, label, headers, raw))
                yield page
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)

    async def count(self, path: str, label: str, query: str = "") -> int:
        """`$count` of a directory collection (an advanced query: ConsistencyLevel eventual)."""
        url = f"{self.base}{path}/$count" + (f"?{query}" if query else "")

        def check(response: httpx.Response) -> int:
            text = response.content.decode("utf-8", "replace").strip().lstrip("\ufeff")
            if not text.isdigit():
                raise ValueError(f"$count answered {text[:40]!r}, not a number")
            return int(text)

        result = await self.get(path.strip("/").split("/")[0], url, label, {"ConsistencyLevel": "eventual"},
                                check=check)
        if isinstance(result, int):
            return result
        raise error_from(result.status_code, result.headers, result.content, path)


def _json(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the body is not JSON ({len(content)} bytes: {exc})") from None


async def _read(response: httpx.Response) -> None:
    try:
        await response.aread()
    except httpx.HTTPError:
        pass


def _certificate_problem(exc: BaseException) -> bool:
    """A TLS certificate that does not verify is a configuration problem; sending again cannot help."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def give_up_reason(retries: int, budget: int, wait: float, hinted: bool, deadline: Deadline,
                    counted: bool = True) -> str:
    """Why a failed attempt is not sent again, or "" to retry it (`counted`: it uses the retry budget)."""
    if counted and retries >= budget:
        return f"gave up after {retries} retries (M365_MAX_RETRIES={budget})"
    if hinted and wait > MAX_WAIT:
        return (f"Graph asked to wait {wait:.0f} s before trying again (Retry-After), longer than the connector "
                f"waits for one request ({MAX_WAIT:.0f} s); the other datasets were not held up. Run again later")
    if wait > deadline.remaining():
        return (f"waiting {wait:.0f} s more would pass the run's time limit (M365_RUN_TIME_LIMIT="
                f"{deadline.seconds / 60:.0f} minutes)")
    return ""


class _Label:
    """Request option carrying the dataset name, so per-attempt middleware can count by dataset."""

    KEY = "m365_connector.label"

    def __init__(self, label: str):
        self.label = label

    def get_key(self) -> str:
        return self.KEY


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
        graph = self._graph
        buckets: list[tuple[str, str, float]] = []
        ours = _origin(str(request.url)) == graph._origin  # only Graph's own answers count; not a download host
        if ours:
            buckets = request_buckets(request)
            reservation = graph.pacer.reserve(buckets, max_wait=MAX_WAIT)
            if reservation is None:
                limits = "; ".join(f"{q.name}: {q.limit:g} {q.unit} per {q.window:g} s {q.counted.split(':')[0]}"
                                   for q in (graph.pacer.limits[n] for n in sorted({b[0] for b in buckets})))
                raise BudgetExceeded(
                    429, "QuotaWouldBeExceeded",
                    f"{label}: Graph's documented quota has no room for this request within {MAX_WAIT:.0f} s "
                    f"({limits}); earlier requests of this app and tenant used it. Not sent, to keep within it: "
                    "run again later.")
            grant = await _paced(graph, label, reservation, app_buckets(buckets, _requests(request)))
        try:
            response = await super().send(request, transport)
        finally:
            if ours:
                _answered(graph, reservation, grant)
                graph.pacer.settle(reservation)
        stats = graph._stats(label)
        stats.by_status[response.status_code] = stats.by_status.get(response.status_code, 0) + 1
        if buckets:
            paused = feedback(graph.pacer, buckets, response)
            if paused is not None and app_scope(response.headers):
                twins = [APP_WIDE[name] for name, _, _ in paused if name in APP_WIDE]
                await graph.budget.pause(twins, paused_for(response), graph.consumer)
        return response


async def _paced(graph: Graph, label: str, reservation: Any, shared: list[tuple[str, str, float]]) -> Grant:
    """Wait for the request's room in its tenant's buckets (the pacer) and in the app-wide ones (the ledger's
    leases), both at once: a lease is only usable for a moment, so it is taken after the tenant's wait and the
    pacer's reservation is confirmed while the lease is live."""
    while True:
        delay = reservation.delay()
        if delay > 0:
            graph._stats(label).paced += delay
            await asyncio.sleep(delay)
        started = time.monotonic()
        grant = await graph.budget.take(shared, graph.consumer)
        graph._stats(label).paced += time.monotonic() - started
        if graph.pacer.confirm(reservation) and grant.live():
            return grant
        graph.budget.give_back(grant)


def _answered(graph: Graph, reservation: Any, grant: Grant) -> None:
    """The answer is in (or the attempt failed): a used-up lease ends now in the ledger, not at the sending. The
    ledger is the only count of the app-wide quotas across a deployment's processes, and Graph counts a request
    on its arrival, which a busy service may record after the sending: counted from the sending, the next
    tenant's request could reach Graph inside the window (bench/tenants.py: 9 of 793 requests answered 429)."""
    graph.budget.spent(grant, graph.consumer)
    offset = time.monotonic() - time.time()
    reservation.app_next = {name: at + offset for name, at in grant.next_window().items()}


def _requests(request: httpx.Request) -> int:
    """Requests Graph counts for one attempt: a `$batch`'s items each (json-batching.md: evaluated individually)."""
    if request.method == "POST" and urlsplit(str(request.url)).path.endswith("/$batch"):
        try:
            return max(1, len(orjson.loads(request.content).get("requests") or []))
        except (orjson.JSONDecodeError, AttributeError, httpx.RequestNotRead):
            return 1
    return 1


def request_buckets(request: httpx.Request) -> list[tuple[str, str, float]]:
    """The quota buckets of one attempt; a `$batch` draws on its items' buckets, each item on its own."""
    url = str(request.url)
    if request.method == "POST" and urlsplit(url).path.endswith("/$batch"):
        try:
            items = orjson.loads(request.content).get("requests") or []
        except (orjson.JSONDecodeError, AttributeError, httpx.RequestNotRead):
            items = []
        buckets: list[tuple[str, str, float]] = []
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("url"), str):
                buckets += classify(str(item.get("method") or "GET"), "/" + item["url"].lstrip("/"))
        return buckets
    return classify(request.method, url)


def throttled_buckets(buckets: list[tuple[str, str, float]], headers: Any) -> list[tuple[str, str, float]]:
    """Which of a request's buckets a 429 speaks of: resource units when Graph says so
    (x-ms-throttle-information: ResourceUnitLimitExceeded), else the request-count quotas it draws on (sign-in
    activity, identity reports, Intune, usage reports), else resource units."""
    if "resourceunit" in (headers.get("x-ms-throttle-information") or "").lower():
        return [b for b in buckets if b[0] == "identity"]
    counted = [b for b in buckets if b[0] != "identity"]
    return counted or buckets


def app_scope(headers: Any) -> bool:
    """Whether a 429 speaks of the application across all tenants: `x-ms-throttle-scope` is
    `{scope}/{access}/{ids}` with scope `Application` (throttling.md; graph-facts §6), not `Tenant_Application`."""
    return (headers.get("x-ms-throttle-scope") or "").split("/", 1)[0].lower() == "application"


def paused_for(response: httpx.Response) -> float:
    wait = retry_after_seconds(response.headers.get("retry-after"))
    return wait if wait is not None else backoff(0)


def feedback(pacer: Pacer, buckets: list[tuple[str, str, float]],
             response: httpx.Response) -> list[tuple[str, str, float]] | None:
    """What Graph said about its quotas: a 429 pauses the request's buckets for every dataset (returned, so an
    application-wide 429 can pause their app-wide twins for every process too); the resource units it charged
    beyond the estimate, and a limit percentage over 80%, slow the identity bucket."""
    headers = response.headers
    paused = None
    if response.status_code == 429:
        wait = paused_for(response)
        if wait <= MAX_WAIT:  # a longer wait fails this request's dataset alone (retry.py): it holds up no other
            paused = throttled_buckets(buckets, headers)
            pacer.pause(paused, wait)
    units = headers.get("x-ms-resource-unit")
    estimated = sum(u for name, _, u in buckets if name == "identity")
    if units and estimated:
        try:
            pacer.charge("identity", "", float(units) - estimated)
        except ValueError:
            pass
    share = headers.get("x-ms-throttle-limit-percentage")
    if share:
        try:
            pacer.near_limit("identity", float(share))
        except ValueError:
            pass
    return paused
