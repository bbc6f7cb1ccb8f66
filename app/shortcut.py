"""A FastAPI app whose busiest route skips the layers that do nothing for it.

A request for a shortcut route (exact path and method, no root_path) goes through the same error
handling and the same user middleware as any other (the request's span and metrics, its request id),
then straight to the route's endpoint. It skips FastAPI's exception-telemetry, body-limit and
exit-stack layers, which pass such a request through untouched (the hub turns FastAPI's telemetry
off, sets no body limit of its own there and takes no uploads), and the router, which would match it
against every route. That saved ~40 µs of ~620 µs per Bitrix24 event (median of six alternating
in-process pairs, benchmarks/README.md). Every other request, including another method on the same
path, takes the whole stack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, ExceptionHandler, Receive, Scope, Send


class ShortcutApp(FastAPI):
    """FastAPI, plus `add_shortcut()` for routes that must cost as little as possible."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shortcuts: dict[tuple[str, str], Route] = {}

    def add_shortcut(self, path: str, endpoint: Callable[[Request], Any], method: str) -> None:
        """Serve `method path` by `endpoint` (a Starlette endpoint: it takes the request and
        returns a response) past the routing layers. Add it before the app serves."""
        self.shortcuts[(method, path)] = Route(path, endpoint, methods=[method])

    def build_middleware_stack(self) -> ASGIApp:
        whole = super().build_middleware_stack()
        if not self.shortcuts:
            return whole
        error_handler = None
        handlers: dict[Any, ExceptionHandler] = {}
        for key, handler in self.exception_handlers.items():  # as Starlette splits them
            if key in (500, Exception):
                error_handler = handler
            else:
                handlers[key] = handler
        stacks: dict[tuple[str, str], ASGIApp] = {}
        for key, route in self.shortcuts.items():
            app: ASGIApp = ExceptionMiddleware(route.app, handlers=handlers, debug=self.debug)
            for cls, args, kwargs in reversed(self.user_middleware):
                app = cls(app, *args, **kwargs)
            stacks[key] = ServerErrorMiddleware(app, handler=error_handler, debug=self.debug)
        return _Shortcuts(whole, self.shortcuts, stacks, self.router)


class _Shortcuts:
    def __init__(
        self,
        app: ASGIApp,
        routes: dict[tuple[str, str], Route],
        stacks: dict[tuple[str, str], ASGIApp],
        router: Any,
    ) -> None:
        self.app, self.routes, self.stacks, self.router = app, routes, stacks, router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Behind a proxy's path prefix (root_path) the router's matching is needed: whole stack.
        if scope["type"] == "http" and not scope.get("root_path"):
            key = (scope["method"], scope["path"])
            stack = self.stacks.get(key)
            if stack is not None:
                # What the router would have put in the scope (the span and metrics name the
                # route from "route").
                route = self.routes[key]
                scope["router"], scope["route"] = self.router, route
                scope["endpoint"], scope["path_params"] = route.endpoint, {}
                await stack(scope, receive, send)
                return
        await self.app(scope, receive, send)
