"""`bitrix24`: a REST call through an inbound webhook, `POST {webhook_url}{method}.json`.

The route gives the method and a params template; every string inside it is a sandboxed Jinja2
template over the CloudEvent (`{{ data.number }}`, `{{ subject }}`). Bitrix24 reports errors in the
JSON body whatever the HTTP status (sometimes 200), so replies are judged from the body first.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import orjson
from jinja2 import StrictUndefined, Template
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.hubconfig import Bitrix24Target as Bitrix24Spec
from dispatch.retry import classify_status
from dispatch.targets.base import (
    AttemptResult,
    DeliveryError,
    Outbound,
    Outcome,
    PermanentError,
    Reply,
    Secrets,
    Verdict,
    correlation_headers,
)
from dispatch.targets.transport import encode_json, judge_status, post

# Bitrix24's "slow down / try later" codes; any other code is a refusal that a retry cannot fix.
RETRYABLE_CODES = frozenset(
    {"QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT", "INTERNAL_SERVER_ERROR"}
)
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
    _, sep, path = url.partition("/rest/")
    if not sep:  # an unusual URL: treat its whole path as the secret
        path = url.split("://", 1)[-1].partition("/")[2]
    path = path.strip("/")
    return Secrets((path, path.rsplit("/", 1)[-1]) if path else ())


class Bitrix24Target:
    """A Bitrix24 portal reached through an inbound webhook URL."""

    def __init__(self, name: str, spec: Bitrix24Spec) -> None:
        self.name = name
        self._webhook_url = spec.webhook_url.get_secret_value()  # ends with "/" (validated)
        self._secrets = _path_secrets(self._webhook_url)
        self._templates: dict[tuple[str, str], Any] = {}  # (method, params) -> compiled params

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
            "traceparent": out.traceparent,
            **correlation_headers(out),
        }
        batch = method == "batch"
        return await post(
            session,
            f"{self._webhook_url}{method}.json",
            body=encode_json(params),
            headers=headers,
            timeout=timeout,
            judge=lambda reply: judge_reply(reply, batch=batch),
            secrets=self._secrets,
            max_read=MAX_READ,
        )

    def _compiled(self, method: str, params: dict[str, Any]) -> Any:
        # Routes are few and fixed, so compiling once per (method, params) makes rendering cheap.
        key = (method, repr(params))
        compiled = self._templates.get(key)
        if compiled is None:
            if len(self._templates) >= _CACHE_SIZE:  # a bound, in case params ever vary freely
                self._templates.clear()
            compiled = self._templates[key] = _compile(params, "params")
        return compiled


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
