"""bitrix24 targets: rendered params, the REST path, and errors read from the JSON body."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from app.hubconfig import Bitrix24Target as Bitrix24Spec
from dispatch.targets import build_target
from dispatch.targets.base import AttemptResult, Outbound, Target
from dispatch.targets.bitrix24 import mask_webhook_url
from tests.fake_target import FakeTarget

MakeOutbound = Callable[..., Outbound]
CODE = "k3y7x9secretcode"
COMMENT_PARAMS = {
    "fields": {
        "ENTITY_TYPE": "deal",
        "ENTITY_ID": "{{ data.deal_id }}",
        "COMMENT": "1C order {{ data.number }} ({{ subject }}, event {{ id }})",
    }
}


def crm(fake: FakeTarget) -> Target:
    spec = Bitrix24Spec.model_validate(
        {"kind": "bitrix24", "webhook_url": f"{fake.url}/rest/1/{CODE}"}  # no trailing slash
    )
    return build_target("crm", spec)


async def call(
    fake: FakeTarget,
    session: aiohttp.ClientSession,
    make_outbound: MakeOutbound,
    method: str = "crm.timeline.comment.add",
    params: dict[str, Any] | None = None,
) -> AttemptResult:
    out = make_outbound(method=method, params=COMMENT_PARAMS if params is None else params)
    return await crm(fake).send(session, out, 5)


async def test_params_rendered_and_method_path(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    fake_target.reply(200, {"result": 991, "time": {"start": 1.0}})
    out = make_outbound(method="crm.timeline.comment.add", params=COMMENT_PARAMS)
    result = await crm(fake_target).send(session, out, 5)

    assert (result.outcome, result.http_status, result.error_class) == ("delivered", 200, None)
    [request] = fake_target.requests
    assert request.path == f"/rest/1/{CODE}/crm.timeline.comment.add.json"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == str(out.delivery_id)
    assert request.json() == {
        "fields": {
            "ENTITY_TYPE": "deal",
            "ENTITY_ID": "7405",
            "COMMENT": f"1C order ЗК-000123 ({out.event['subject']}, event {out.event['id']})",
        }
    }


async def test_nested_lists_and_non_strings_kept(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    fake_target.reply(200, {"result": True})
    params = {"ids": ["{{ data.deal_id }}", 5, None], "flag": True, "n": {"x": 1.5}}
    result = await call(fake_target, session, make_outbound, "crm.item.update", params)
    assert result.outcome == "delivered"
    assert fake_target.requests[0].json() == {
        "ids": ["7405", 5, None],
        "flag": True,
        "n": {"x": 1.5},
    }


@pytest.mark.parametrize("status", [200, 503])
async def test_query_limit_is_retried_whatever_the_status(
    status: int,
    fake_target: FakeTarget,
    session: aiohttp.ClientSession,
    make_outbound: MakeOutbound,
) -> None:
    body = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    fake_target.reply(status, body)
    result = await call(fake_target, session, make_outbound)
    assert (result.outcome, result.http_status) == ("retry", status)
    assert result.error_class == "b24:QUERY_LIMIT_EXCEEDED"
    assert result.error == "QUERY_LIMIT_EXCEEDED: Too many requests"


@pytest.mark.parametrize("code", ["OPERATION_TIME_LIMIT", "INTERNAL_SERVER_ERROR"])
async def test_other_retryable_codes(
    code: str, fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    fake_target.reply(500, {"error": code, "error_description": "later"})
    result = await call(fake_target, session, make_outbound)
    assert (result.outcome, result.error_class) == ("retry", f"b24:{code}")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "ACCESS_DENIED"),
        (200, "ACCESS_DENIED"),
        (401, "NO_AUTH_FOUND"),
        (401, "expired_token"),
        (400, "ERROR_CORE"),
        (503, "SOMETHING_NEW"),
    ],
)
async def test_other_codes_are_dead(
    status: int,
    code: str,
    fake_target: FakeTarget,
    session: aiohttp.ClientSession,
    make_outbound: MakeOutbound,
) -> None:
    fake_target.reply(status, {"error": code, "error_description": "nope"})
    result = await call(fake_target, session, make_outbound)
    assert (result.outcome, result.http_status, result.error_class) == (
        "dead",
        status,
        f"b24:{code}",
    )


async def test_400_with_empty_code_is_dead(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    fake_target.reply(400, {"error": "", "error_description": "Parameter 'fields' is invalid"})
    result = await call(fake_target, session, make_outbound)
    assert (result.outcome, result.error_class) == ("dead", "http_400")
    assert result.error == "Bitrix24 error: Parameter 'fields' is invalid"


async def test_200_with_empty_code_but_description_is_dead(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    fake_target.reply(200, {"error": "", "error_description": "Not found"})
    result = await call(fake_target, session, make_outbound)
    assert (result.outcome, result.error_class) == ("dead", "b24:unknown")


@pytest.mark.parametrize(
    ("result_error", "outcome", "error_class"),
    [
        (
            {"c1": {"error": "ACCESS_DENIED", "error_description": "no"}},
            "dead",
            "b24:ACCESS_DENIED",
        ),
        (
            {"c2": {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "slow"}},
            "retry",
            "b24:QUERY_LIMIT_EXCEEDED",
        ),
        ([{"error": "NOT_FOUND", "error_description": "gone"}], "dead", "b24:NOT_FOUND"),
    ],
)
async def test_batch_result_error(
    result_error: Any,
    outcome: str,
    error_class: str,
    fake_target: FakeTarget,
    session: aiohttp.ClientSession,
    make_outbound: MakeOutbound,
) -> None:
    body = {"result": {"result": {"c0": 1}, "result_error": result_error, "result_total": []}}
    fake_target.reply(200, body)
    params = {"halt": 0, "cmd": {"c0": "crm.deal.get?id={{ data.deal_id }}"}}
    result = await call(fake_target, session, make_outbound, "batch", params)
    assert (result.outcome, result.error_class) == (outcome, error_class)
    assert result.error is not None and result.error.startswith("batch command")
    assert fake_target.requests[0].path.endswith("/batch.json")
    assert fake_target.requests[0].json()["cmd"] == {"c0": "crm.deal.get?id=7405"}


async def test_batch_without_errors_is_delivered(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    fake_target.reply(200, {"result": {"result": {"c0": 1}, "result_error": []}})
    result = await call(fake_target, session, make_outbound, "batch", {"cmd": {"c0": "x"}})
    assert result.outcome == "delivered"


@pytest.mark.parametrize(("status", "outcome"), [(502, "retry"), (404, "dead"), (200, "delivered")])
async def test_non_json_falls_back_to_the_status(
    status: int,
    outcome: str,
    fake_target: FakeTarget,
    session: aiohttp.ClientSession,
    make_outbound: MakeOutbound,
) -> None:
    fake_target.reply(status, "<html>nginx</html>", headers={"Content-Type": "text/html"})
    result = await call(fake_target, session, make_outbound)
    assert result.outcome == outcome
    assert result.response_excerpt == "<html>nginx</html>"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ data.__init__.__globals__ }}",
        "{{ data.clear() }}",  # immutable sandbox: no mutating the event
    ],
)
async def test_sandbox_escape_is_a_render_error(
    template: str,
    fake_target: FakeTarget,
    session: aiohttp.ClientSession,
    make_outbound: MakeOutbound,
) -> None:
    result = await call(fake_target, session, make_outbound, params={"x": template})
    assert (result.outcome, result.error_class, result.http_status) == ("dead", "render", None)
    assert result.error is not None and result.error.startswith("params.x: ")
    assert fake_target.requests == []


@pytest.mark.parametrize("template", ["{{ data.missing }}", "{{ nope }}", "{% if %}", "{{ 1/0 }}"])
async def test_bad_templates_are_render_errors(
    template: str,
    fake_target: FakeTarget,
    session: aiohttp.ClientSession,
    make_outbound: MakeOutbound,
) -> None:
    result = await call(fake_target, session, make_outbound, params={"f": {"y": template}})
    assert (result.outcome, result.error_class) == ("dead", "render")
    assert result.error is not None and result.error.startswith("params.f.y: ")
    assert fake_target.requests == []


@pytest.mark.parametrize("method", [None, "", "../../1/other/crm.deal.add", "crm deal"])
async def test_bad_method_is_dead_without_a_request(
    method: str | None,
    fake_target: FakeTarget,
    session: aiohttp.ClientSession,
    make_outbound: MakeOutbound,
) -> None:
    result = await crm(fake_target).send(session, make_outbound(method=method), 5)
    assert (result.outcome, result.error_class) == ("dead", "config")
    assert fake_target.requests == []


async def test_webhook_code_never_in_the_attempt(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: MakeOutbound
) -> None:
    echo = f"no route for /rest/1/{CODE}/crm.timeline.comment.add.json"
    fake_target.reply(404, {"error": "ERROR_METHOD_NOT_FOUND", "error_description": echo})
    target = crm(fake_target)
    result = await call(fake_target, session, make_outbound)
    assert (
        result.error
        == "ERROR_METHOD_NOT_FOUND: no route for /rest/***/crm.timeline.comment.add.json"
    )
    assert CODE not in (result.response_excerpt or "")
    assert CODE not in repr(target)


def test_mask_webhook_url() -> None:
    assert (
        mask_webhook_url(f"https://p.bitrix24.ru/rest/1/{CODE}/")
        == "https://p.bitrix24.ru/rest/***/"
    )
