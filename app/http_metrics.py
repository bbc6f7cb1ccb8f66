"""The API's HTTP server metrics, under the names the operators' dashboards already use.

`http_requests_total{method,route,status}` and `http_request_duration_seconds` (histogram). The
`route` label is the route template (`/webhooks/1c/{type}`), so a path never becomes a series of its
own. (The request's span is FastAPI's own telemetry; see `app.main`.)
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.telemetry import HTTP_DURATION, HTTP_REQUESTS

_UNMATCHED = "unmatched"  # 404s of scanners must not each make a series


class HttpMetrics:
    """Pure ASGI middleware: counts and times every HTTP request by method, route and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before it answers

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            template = getattr(scope.get("route"), "path", None) or _UNMATCHED
            labels = (scope["method"], template, str(status))
            HTTP_REQUESTS.labels(*labels).inc()
            HTTP_DURATION.labels(*labels).observe(time.perf_counter() - started)
