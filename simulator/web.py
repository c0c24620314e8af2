"""Minimal HTTP plumbing: threaded HTTP/1.1 keep-alive servers with optional TLS.

TLS is negotiated in the connection's worker thread (not in the accept loop), so a slow
handshake never stalls other clients, and open keep-alive connections are cut on stop.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson


@dataclass(frozen=True)
class RequestRecord:
    """One request as a service saw it (headers with lower-case names)."""

    service: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int
    time: float


@dataclass
class Request:
    """A parsed incoming request."""

    method: str
    path: str
    raw_query: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Query parameters in order, decoded, duplicates kept."""
        return parse_qsl(self.raw_query, keep_blank_values=True)


@dataclass
class Response:
    """What a service answers; Content-Length, Date and Server are added by the plumbing."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None  # "reset": close without answering; "cut": half the body, then close

    @classmethod
    def json(cls, status: int, payload: Any, content_type: str, headers: dict[str, str] | None = None) -> Response:
        return cls(status, orjson.dumps(payload), {"Content-Type": content_type, **(headers or {})})


PLAIN_JSON = "application/json; charset=utf-8"

BREAKS = ("reset", "cut", "truncated", "garbage")


def broken(response: Response, kind: str) -> Response:
    """A response spoilt on the way, as networks and overloaded front ends do: `reset` closes the
    connection without an answer, `cut` sends the headers and half the body then closes, `truncated`
    is a complete HTTP answer whose JSON stops halfway, `garbage` a 200 whose body is not JSON."""
    if kind == "truncated":
        return Response(response.status, response.body[: max(1, len(response.body) // 2)], dict(response.headers))
    if kind == "garbage":
        return Response(200, b"<html><body>Service Unavailable</body></html>", {"Content-Type": "text/html"})
    return Response(response.status, response.body, dict(response.headers), fault=kind)


App = Callable[[Request], Response]
Recorder = Callable[[RequestRecord], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    timeout = 120  # idle keep-alive connections end after this
    disable_nagle_algorithm = True

    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(
            method=self.command,
            path=parts.path,
            raw_query=parts.query,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=headers,
            body=body,
        )
        try:
            response = self.server.app(request)
        except Exception as exc:  # a simulator bug must still produce an answer
            response = Response.json(
                500,
                {"error": {"code": "SimulatorError", "message": f"{type(exc).__name__}: {exc}"}},
                "application/json",
            )
        # Recorded before the answer leaves, so a client that has its answer finds the request recorded.
        self.server.record(
            RequestRecord(
                service=self.server.name,
                method=request.method,
                path=request.path,
                query=request.query,
                headers=headers,
                status=response.status,
                time=time.time(),
            )
        )
        if response.fault == "reset":
            self.close_connection = True
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        # Headers and body in one write: two small writes meet delayed ACKs (40 ms per request).
        self._headers_buffer.append(b"\r\n")
        body = response.body[: len(response.body) // 2] if response.fault == "cut" else response.body
        if self.command != "HEAD":
            self._headers_buffer.append(body)
        self.wfile.write(b"".join(self._headers_buffer))
        self._headers_buffer = []
        if response.fault == "cut":
            self.wfile.flush()
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        """Quiet: tests and the benchmark read sim.requests instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, name: str, app: App, recorder: Recorder, ssl_context: ssl.SSLContext | None) -> None:
        self.name = name
        self.app = app
        self.record = recorder
        self.ssl_context = ssl_context
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        conn = request
        if self.ssl_context is not None:
            request.settimeout(30)
            try:
                conn = self.ssl_context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
        with self._connections_lock:
            self._connections.add(conn)
        try:
            super().finish_request(conn, client_address)
        except (OSError, ssl.SSLError):
            pass
        finally:
            with self._connections_lock:
                self._connections.discard(conn)
            if conn is not request:
                try:
                    conn.close()
                except OSError:
                    pass

    def close_connections(self) -> None:
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Service:
    """One listening service (own port, own thread)."""

    def __init__(self, name: str, app: App, recorder: Recorder, ssl_context: ssl.SSLContext | None) -> None:
        self.name = name
        self._server = _Server(name, app, recorder, ssl_context)
        self.port: int = self._server.server_address[1]
        scheme = "https" if ssl_context is not None else "http"
        self.origin = f"{scheme}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"sim-{name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(timeout=5)
