"""Rendering for the console: the Jinja2 environment, its filters, security headers, redirects."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app import jsonio
from app.admin.pii import mask_pii
from app.console.session import ConsoleUser

HERE = Path(__file__).parent
# No inline script or style anywhere: scripts and styles come only from /console/static.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """`3 min ago`, `2 h ago`, `in 40 s`: a time relative to now, for tables."""
    if when is None:
        return "—"
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    future, seconds = seconds < 0, abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size or unit == "s":
            text = f"{seconds // size} {unit}"
            break
    return f"in {text}" if future else f"{text} ago"


def duration(seconds: float | None) -> str:
    """`45 s`, `12 min`, `3 h`: an age for the overview."""
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{int(seconds)} s"
    return f"{int(seconds // 60)} min" if seconds < 7200 else f"{int(seconds // 3600)} h"


def pretty(value: Any) -> str:
    """JSON, indented, non-ASCII kept readable."""
    return jsonio.dumps(value, sort_keys=True, indent=True).decode()


def plain(value: Any) -> str:
    """A filter value as typed: lists comma-separated (`dead,retrying`)."""
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def iso(when: datetime | None) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds") if when else ""


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(ago=ago, pretty=pretty, iso=iso, age=duration, plain=plain)


def shown(user: ConsoleUser, value: Any) -> Any:
    """A payload (or reply text) as this user may see it: masked for viewers."""
    return mask_pii(value) if user.masked else value


def render(
    request: Request, name: str, user: ConsoleUser | None, status: int = 200, **context: Any
) -> HTMLResponse:
    """A page (or an htmx fragment) with the console's security headers."""
    context |= {"user": user, "flash": request.query_params.get("flash")}
    context["error"] = context.get("error") or request.query_params.get("error")
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def redirect(path: str, **params: str | None) -> Response:
    """303 See Other to a console page, with a message in the query string (never a secret)."""
    query = urlencode({key: value for key, value in params.items() if value})
    response = RedirectResponse(f"{path}?{query}" if query else path, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response
