"""Logging in and out of the console, and how the app mounts the console."""

from __future__ import annotations

import inspect
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from app.console import actions, pages
from app.console.session import (
    COOKIE,
    SESSION_TTL,
    CsrfFailed,
    LoginRequired,
    close_session,
    csrf_checked,
    log_in,
    open_session,
    throttle,
)
from app.console.views import HERE, redirect, render
from app.errors import HubError

router = APIRouter(prefix="/console", include_in_schema=False)


def _next(value: str | None) -> str:
    """Where to go after the login: a console page only (never another site)."""
    if not value or not value.startswith("/console") or value.startswith("//"):
        return "/console"
    return value


def _same_origin(request: Request) -> bool:
    """A login form posted from this site (SameSite cookies do not cover the login itself)."""
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


def _https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
    return request.url.scheme == "https" or forwarded == "https"


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    """The login form: paste an admin token (it is sent in the body, never in the URL)."""
    return render(request, "login.html", None, next=_next(next))


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    token: Annotated[str, Form(max_length=512)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/console",
) -> Response:
    """Exchange an admin token for a session cookie; failed attempts are slowed down."""
    if not _same_origin(request):
        return render(request, "login.html", None, status=403, error="cross-site login refused")
    if not await throttle(request):
        error = "too many failed logins from this address; try again in 15 minutes"
        return render(request, "login.html", None, status=429, error=error, next=_next(next))
    entry = await log_in(request, token.strip())
    if entry is None:
        error = "that token is not a valid admin token"
        return render(request, "login.html", None, status=401, error=error, next=_next(next))
    session_id = await open_session(request, entry)
    response = redirect(_next(next))
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=SESSION_TTL,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session (server side too) and clear the cookie."""
    try:
        await csrf_checked(request)
    except (LoginRequired, CsrfFailed):
        pass  # logging out without a valid session just clears the cookie
    else:
        await close_session(request)
    response = redirect("/console/login", flash="Logged out.")
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")
    return response


async def _to_login(request: Request, _: Exception) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        here = "/console"
    return redirect("/console/login", next=here if here != "/console" else None)


async def _csrf_failed(request: Request, _: Exception) -> Response:
    error = "the form was stale or not sent from the console; reload the page and try again"
    return render(request, "error.html", None, status=403, error=error)


def install(app: FastAPI) -> None:
    """Mount the console (pages, actions, static files) and its exception handlers.

    A service's error on a console page is an HTML page with its status; elsewhere the app's own
    problem+json handler (installed before) still answers.
    """
    app.include_router(router)
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.add_exception_handler(LoginRequired, _to_login)
    app.add_exception_handler(CsrfFailed, _csrf_failed)
    problem_json = app.exception_handlers[HubError]

    async def hub_error(request: Request, exc: Exception) -> Response:
        if not request.url.path.startswith("/console/") or not isinstance(exc, HubError):
            reply = problem_json(request, exc)
            return await reply if inspect.isawaitable(reply) else reply
        return render(request, "error.html", None, status=exc.status, error=exc.detail)

    app.add_exception_handler(HubError, hub_error)
