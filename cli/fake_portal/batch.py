"""`batch` (batch.md): up to 50 `method?query` commands in one request, `halt`, `$result[...]`.

Each command's result, error, total, next and time land under its key; commands beyond 50 end
with ERROR_BATCH_LENGTH_EXCEEDED, a nested batch with ERROR_BATCH_METHOD_NOT_ALLOWED.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from app.sources.bitrix24.phpform import parse_php_form
from app.sources.errors import MalformedError
from cli.fake_portal.methods import Fault, Result

MAX_COMMANDS = 50
Call = Callable[[str, Mapping[str, Any]], Result]  # (method, params) -> what the portal answers
_PARTS = ("result", "result_error", "result_total", "result_next", "result_time")


def method_name(raw: str) -> str:
    """`crm.deal.get.json` and `CRM.DEAL.GET` both name `crm.deal.get`."""
    return raw.removesuffix(".json").lower()


def run_batch(params: Mapping[str, Any], call: Call) -> Result:
    """Run the `cmd` commands in order with `call`; the reply's `result` object."""
    commands = params.get("cmd")
    if isinstance(commands, list):
        commands = {str(i): text for i, text in enumerate(commands)}
    if not isinstance(commands, Mapping):
        raise Fault(400, "INVALID_REQUEST", "cmd must be an array of commands")
    halt = str(params.get("halt") or "0").lower() in ("1", "true", "y")
    parts: dict[str, dict[str, Any]] = {name: {} for name in _PARTS}
    for n, (key, text) in enumerate(commands.items()):
        started = time.time()
        try:
            if n >= MAX_COMMANDS:
                raise Fault(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
            result, extra = _command(str(text), parts["result"], call)
        except Fault as fault:
            parts["result_error"][key] = fault.body()
            if halt:
                break
            continue
        parts["result"][key] = result
        parts["result_time"][key] = time_object(started)
        if "total" in extra:
            parts["result_total"][key] = extra["total"]
        if "next" in extra:
            parts["result_next"][key] = extra["next"]
    # PHP's json_encode writes an empty array as [] and a 0..n-1 keyed one as a list.
    return {name: _php_array(value) for name, value in parts.items()}, {}


def _command(text: str, done: Mapping[str, Any], call: Call) -> Result:
    method, _, query = text.partition("?")
    method = method_name(method)
    if method == "batch":
        raise Fault(405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage")
    try:
        params = parse_php_form(query.encode())
    except MalformedError as exc:
        raise Fault(400, "INVALID_REQUEST", str(exc)) from None
    return call(method, _resolve(params, done))


_REFERENCE = re.compile(r"\$result\[([^\]]+)\]((?:\[[^\]]*\])*)")


def _resolve(node: Any, done: Mapping[str, Any]) -> Any:
    """Replace `$result[cmd][field]...` with what an earlier command returned."""
    if isinstance(node, dict):
        return {key: _resolve(value, done) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(value, done) for value in node]
    if not isinstance(node, str) or "$result[" not in node:
        return node
    whole = _REFERENCE.fullmatch(node)
    if whole:
        return _lookup(done, whole)
    return _REFERENCE.sub(lambda m: str(_lookup(done, m)), node)


def _lookup(done: Mapping[str, Any], match: re.Match[str]) -> Any:
    value: Any = done.get(match.group(1))
    for key in re.findall(r"\[([^\]]*)\]", match.group(2)):
        if isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        elif isinstance(value, dict):
            value = value.get(key)
        else:
            return None
    return value


def _php_array(value: dict[str, Any]) -> Any:
    if list(value) == [str(i) for i in range(len(value))]:
        return list(value.values())
    return value


def time_object(started: float) -> dict[str, Any]:
    """The `time` object every reply carries (data-types.md#time)."""
    finished = time.time()

    def stamp(at: float) -> str:
        return datetime.fromtimestamp(at, UTC).replace(microsecond=0).isoformat()

    return {
        "start": started,
        "finish": finished,
        "duration": finished - started,
        "processing": finished - started,
        "date_start": stamp(started),
        "date_finish": stamp(finished),
        "operating_reset_at": int(started) + 600,
        "operating": 0,
    }
