"""`bitrix24`: a REST call through an inbound webhook, `POST {webhook_url}{method}.json`.

The route gives the method and a params template; every string inside it is a sandboxed Jinja2
template over the CloudEvent (`{{ data.number }}`, `{{ subject }}`). Bitrix24 reports errors in the
JSON body whatever the HTTP status (sometimes 200), so replies are judged from the body first.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from jinja2 import StrictUndefined, Template
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.bitrix24.errors import RETRYABLE_CODES
from app.bitrix24.installs import NotInstalled
from app.bitrix24.oauth import OAuthRefused, OAuthUnavailable
from app.bitrix24.rest import Credentials, secret_parts
from app.hubconfig import Bitrix24Target as Bitrix24Spec
from app.sources.bitrix24.identity import CRM_TYPES
from dispatch.retry import Outcome, classify_status
from dispatch.targets.base import (
    AttemptResult,
    DeliveryError,
    Outbound,
    PermanentError,
    Reply,
    RetryableError,
    Secrets,
    Verdict,
    trace_headers,
)
from dispatch.targets.transport import encode_json, judge_status, post

# Batch replies can be large and must be parsed whole to see `result_error`.
MAX_READ = 1024 * 1024
_METHOD = re.compile(r"[A-Za-z0-9_.]+")  # keeps a method from reaching outside /rest/<user>/<code>/
_CACHE_SIZE = 256

# Sandboxed: a route's template must not reach Python internals; strict: a typo is an error, not "".
_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def mask_webhook_url(url: str) -> str:
    """The webhook URL with its secret part (everything after `/rest/`) masked."""
    base, sep, _ = url.partition("/rest/")
    return f"{base}/rest/***/" if sep else f"{base.rstrip('/')}/***"


def _path_secrets(url: str) -> Secrets:
    """`<user>/<code>` and `<code>`: masked wherever they would appear in an attempt row."""
    return Secrets(secret_parts(url))


class Bitrix24Target:
    """A Bitrix24 portal reached through an inbound webhook URL, or as the installed application.

    As the application (`portal:` in the target), each call carries the installation's access token and the
    portal's offline `auth_connector`, so the hub's own writes raise no offline event (no echo).
    """

    def __init__(self, name: str, spec: Bitrix24Spec) -> None:
        self.name = name
        # Ends with "/" (validated); "" until use_application() for a `portal:` target.
        self._webhook_url = spec.webhook_url.get_secret_value() if spec.webhook_url else ""
        self._secrets = _path_secrets(self._webhook_url)
        self._templates: dict[tuple[str, str], Any] = {}  # (method, params) -> compiled params
        self._app: Credentials | None = None
        self._connector: str | None = None

    def written_subject(self, out: Outbound) -> str | None:
        """The record a delivered call wrote, as events name it (`deal/7405`), for echo suppression; None if unknown."""
        try:
            params = _render(self._compiled(_check_method(out.method), out.params or {}), out.event)
        except DeliveryError:
            return None
        return written_subject(out.method or "", params)

    def use_application(self, credentials: Credentials, auth_connector: str | None) -> None:
        """Call as the installed application (its tokens), with this source key on every call."""
        self._app, self._connector = credentials, auth_connector

    def __repr__(self) -> str:
        return f"Bitrix24Target({self.name!r}, {mask_webhook_url(self._webhook_url)!r})"

    async def send(
        self,
        session: aiohttp.ClientSession,
        out: Outbound,
        timeout: float,  # noqa: ASYNC109 - goes to aiohttp.ClientTimeout(total=...)
    ) -> AttemptResult:
        """Render the params over the CloudEvent and call the REST method once."""
        try:
            method = _check_method(out.method)
            params = _render(self._compiled(method, out.params or {}), out.event)
        except DeliveryError as exc:
            return exc.result()
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": str(out.delivery_id),
            **trace_headers(out),
        }
        batch = method == "batch"

        async def call(auth: dict[str, str], base: str) -> AttemptResult:
            return await post(
                session,
                f"{base}{method}.json",
                body=encode_json({**params, **auth}),
                headers=headers,
                timeout=timeout,
                judge=lambda reply: judge_reply(reply, batch=batch),
                secrets=Secrets((*self._secrets.values, *auth.values())),
                max_read=MAX_READ,
            )

        if self._app is None:
            return await call({}, self._webhook_url)
        return await self._as_application(call)

    async def _as_application(
        self, call: Callable[[dict[str, str], str], Awaitable[AttemptResult]]
    ) -> AttemptResult:
        """The call with the installation's token; once more with a renewed one after `expired_token`."""
        assert self._app is not None
        try:
            token = await self._app.token()
        except NotInstalled as exc:  # an operator must install the application; replay then
            return PermanentError("b24:not_installed", str(exc)).result()
        except (OAuthRefused, OAuthUnavailable) as exc:
            return RetryableError("b24:oauth", str(exc)).result()
        connector = {"auth_connector": self._connector} if self._connector else {}
        result = await call({"auth": token or "", **connector}, self._app.base_url)
        if result.error_class == "b24:expired_token" and await self._app.refresh(token):
            renewed = await self._app.token()
            result = await call({"auth": renewed or "", **connector}, self._app.base_url)
        return result

    def _compiled(self, method: str, params: dict[str, Any]) -> Any:
        # Routes are few and fixed, so compiling once per (method, params) makes rendering cheap.
        key = (method, repr(params))
        compiled = self._templates.get(key)
        if compiled is None:
            if len(self._templates) >= _CACHE_SIZE:  # a bound, in case params ever vary freely
                self._templates.clear()
            compiled = self._templates[key] = _compile(params, "params")
        return compiled


_ENTITY_WRITE = re.compile(r"crm\.(deal|lead|contact|company|quote)\.(update|delete)")


def written_subject(method: str, params: Any) -> str | None:
    """The subject of the record an update call writes: crm.<entity>.update, crm.item.update, tasks.task.update."""
    if not isinstance(params, dict):
        return None
    lowered = method.lower()
    if match := _ENTITY_WRITE.fullmatch(lowered):
        number = params.get("id") or params.get("ID")
        return f"{match.group(1)}/{number}" if number else None
    if lowered in ("crm.item.update", "crm.item.delete"):
        kind, number = params.get("entityTypeId"), params.get("id")
        entity = CRM_TYPES.get(str(kind), f"dynamic-{kind}")
        return f"{entity}/{number}" if kind and number else None
    if lowered in ("tasks.task.update", "tasks.task.delete"):
        number = params.get("taskId")
        return f"task/{number}" if number else None
    return None


def judge_reply(reply: Reply, *, batch: bool = False) -> Verdict:
    """Judge a Bitrix24 reply: errors in the JSON body first, the HTTP status as a fallback."""
    try:
        payload = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        return judge_status(reply)
    if not isinstance(payload, dict):
        return judge_status(reply)
    code = str(payload.get("error") or "")
    description = str(payload.get("error_description") or "")
    if code:
        return _judge_code(code, description)
    if description:  # an error without a code: the status says whether it may pass
        error = f"Bitrix24 error: {description}"
        outcome = classify_status(reply.status)
        if outcome == "delivered":
            return "dead", "b24:unknown", error
        return outcome, f"http_{reply.status}", error
    result = payload.get("result")
    if batch and isinstance(result, dict) and result.get("result_error"):
        return _judge_batch_error(result["result_error"])
    if 200 <= reply.status < 300 and "result" in payload:
        return "delivered", None, None
    return judge_status(reply)


def _judge_code(code: str, description: str) -> Verdict:
    outcome: Outcome = "retry" if code.upper() in RETRYABLE_CODES else "dead"
    return outcome, f"b24:{code}", f"{code}: {description}" if description else code


def _judge_batch_error(errors: Any) -> Verdict:
    # `result_error` is {command: {error, error_description}}, or a list when commands were unnamed.
    if isinstance(errors, dict):
        command, first = next(iter(errors.items()))
    elif isinstance(errors, list):
        command, first = 0, errors[0]
    else:
        command, first = "?", errors
    if isinstance(first, dict):
        code = str(first.get("error") or "")
        description = str(first.get("error_description") or "")
    else:
        code, description = "", str(first)
    if not code:
        return "dead", "b24:unknown", f"batch command {command}: {description or 'failed'}"
    outcome, error_class, error = _judge_code(code, description)
    return outcome, error_class, f"batch command {command}: {error}"


def _check_method(method: str | None) -> str:
    if not method:
        raise PermanentError("config", "a bitrix24 delivery needs a REST method")
    if not _METHOD.fullmatch(method):
        raise PermanentError("config", f"not a Bitrix24 REST method name: {method!r}")
    return method


def _compile(node: Any, path: str) -> Any:
    """The params with each string leaf replaced by its compiled template (keys are kept as is)."""
    if isinstance(node, dict):
        return {key: _compile(value, f"{path}.{key}") for key, value in node.items()}
    if isinstance(node, list):
        return [_compile(value, f"{path}[{i}]") for i, value in enumerate(node)]
    if isinstance(node, str):
        try:
            return _Leaf(path, _ENV.from_string(node))
        except Exception as exc:  # TemplateSyntaxError and whatever the parser raises
            raise PermanentError("render", f"{path}: {type(exc).__name__}: {exc}") from None
    return node


def _render(node: Any, event: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {key: _render(value, event) for key, value in node.items()}
    if isinstance(node, list):
        return [_render(value, event) for value in node]
    if isinstance(node, _Leaf):
        return node.render(event)
    return node


class _Leaf:
    """A compiled string leaf, remembering where it sits for error messages."""

    __slots__ = ("path", "template")

    def __init__(self, path: str, template: Template) -> None:
        self.path = path
        self.template = template

    def render(self, event: dict[str, Any]) -> str:
        try:
            return self.template.render(event)
        except Exception as exc:  # undefined names, sandbox refusals, errors inside expressions
            raise PermanentError("render", f"{self.path}: {type(exc).__name__}: {exc}") from None
