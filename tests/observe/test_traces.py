"""One trace from the webhook's `traceparent` to the delivery attempt and the target's header.

The hub's three roles run as real processes exporting to a real OTLP/HTTP receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.dispatch.harness import FORM, deal, events_traceparents, eventually
from tests.fake_target import FakeTarget
from tests.observe.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.roles import Processes

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


async def test_one_trace_from_the_webhook_to_the_target(
    hub_processes: Callable[..., Processes], fake_target: FakeTarget, engine: AsyncEngine
) -> None:
    async with OtlpReceiver() as receiver:
        roles = hub_processes(
            fake_target.url,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",  # ms: export soon, the test waits for the spans
            MMHUB_LOG_LEVEL="INFO",
        )
        ports = await roles.start_hub()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['api']}") as client:
            reply = await client.post(
                "/webhooks/bitrix24",
                content=deal(7405),
                headers={**FORM, "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
            )
        assert reply.status_code == 200, reply.text
        event_id = reply.json()["event_id"]

        async def received() -> bool:
            return len(fake_target.requests) == 1

        await eventually(received, seconds=30)
        _, trace_id, parent_id, flags = fake_target.requests[0].headers["traceparent"].split("-")
        assert (trace_id, flags) == (CALLER_TRACE, "01")
        # X-Correlation-Id: the request id of the webhook that brought the event.
        assert fake_target.requests[0].headers["x-correlation-id"] == reply.headers["x-request-id"]

        def spans(name: str) -> list[ReceivedSpan]:
            return [s for s in receiver.spans if s.name == name and s.trace_id == CALLER_TRACE]

        async def exported() -> bool:  # each role's spans leave through its own child process
            attempts, linked = spans("POST"), {s.span_id for s in receiver.spans}
            return bool(
                attempts
                and spans("POST /webhooks/bitrix24")
                and spans("ingest group commit")
                and linked.intersection(attempts[0].links)
            )

        await eventually(exported, seconds=30)

        [request] = spans("POST /webhooks/bitrix24")
        [attempt] = spans("POST")
        [commit] = spans("ingest group commit")

    # The request continues the caller's span; the commit and the attempt are its children.
    assert (request.service, request.kind, request.parent_span_id) == (
        "mmhub-api",
        "SERVER",
        CALLER_SPAN,
    )
    assert (commit.parent_span_id, commit.links) == (request.span_id, (request.span_id,))
    assert (attempt.service, attempt.kind, attempt.parent_span_id) == (
        "mmhub-worker",
        "CLIENT",
        request.span_id,
    )
    assert attempt.attributes["mmhub.event_id"] == event_id
    assert attempt.attributes["http.response.status_code"] == 200
    # The target got the attempt span's own context.
    assert parent_id == attempt.span_id
    # The event row keeps the request span's context, which is how the worker found the trace.
    stored = (await events_traceparents(engine))[event_id]
    assert stored == f"00-{CALLER_TRACE}-{request.span_id}-01"
    # The relay's hand-over that enqueued the drain job is a trace of its own, linked from it.
    [relay] = [s for s in receiver.spans if s.span_id in attempt.links]
    assert (relay.service, relay.kind, relay.name) == ("mmhub-relay", "PRODUCER", "relay hand-over")
    # The API's log line about the event carries the request span's ids.
    log = roles.log_of("api").read_text().splitlines()
    lines = [json.loads(line) for line in log if line.startswith("{")]
    [accepted] = [line for line in lines if line.get("event_id") == event_id]
    assert (accepted["trace_id"], accepted["span_id"]) == (CALLER_TRACE, request.span_id)
