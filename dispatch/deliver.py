"""drain(): claim due deliveries of one target, send them, record every attempt, set the next state.

A claim is one UPDATE … FOR UPDATE SKIP LOCKED, so no two workers ever hold the same delivery; the
claim carries a token and a lease, and a result is recorded only while the token is still ours.
Ordering: a delivery is claimable only when no earlier delivery with the same (target, ordering key)
is still on its way, so a retrying head holds the ones behind it and every other key flows on. The
statements are in `app.outbox.claims`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from app.hubconfig import Target as TargetSpec
from app.outbox import claims
from app.outbox.envelope import build_cloudevent
from app.outbox.states import Gate, gate, hold_waiting, judge_breaker
from app.tracing import traceparent
from dispatch.coalesce import coalescing_routes, supersede_stale
from dispatch.echo import remember_writes
from dispatch.enrich import claim_size, enrich
from dispatch.retry import next_step
from dispatch.runtime import Runtime
from dispatch.targets.base import AttemptResult, Outbound
from dispatch.telemetry import attempt_span, record_attempt, record_settled

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Claimed:
    delivery_id: uuid.UUID
    attempt_number: int
    outbound: Outbound
    token: uuid.UUID  # the claim's; recording checks it is still ours
    manual: bool  # an operator's replay: recorded as manual, outside the breaker's statistics
    retry_offset: int  # attempts made before the last replay; the schedule restarts after them
    event_trace: str | None  # the ingest span's traceparent: attempts are spans of that trace
    received_at: datetime  # when the event was accepted (for the end-to-end latency)
    route: str = ""  # the route that made the delivery (enrichment asks it)


@dataclass(frozen=True, slots=True)
class Sent:
    claimed: Claimed
    started_at: datetime
    result: AttemptResult


async def drain(rt: Runtime, target: str, budget: float, *, lanes: int = 2) -> int:
    """Deliver what is due for `target` until nothing is, or `budget` seconds passed; returns count."""
    spec = rt.settings.hub.targets.get(target)
    if spec is None:
        log.warning("deliveries wait for target %r, which is not configured", target)
        return 0
    deadline = asyncio.get_running_loop().time() + budget
    # Two lanes overlap one batch's database work with another batch's requests.
    counts = await asyncio.gather(*(_lane(rt, target, spec, deadline, i) for i in range(lanes)))
    return sum(counts)


async def _lane(rt: Runtime, target: str, spec: TargetSpec, deadline: float, lane: int) -> int:
    """Claim, send, record until nothing is due; on one pooled connection for the lane's life.

    The hot path talks to asyncpg directly (the pool's own connection, SQLAlchemy's codecs): per
    batch one transaction reads the gate and claims, one statement records, where SQLAlchemy
    sessions cost far more worker CPU per transaction. Pauses and the breaker work as before.
    """
    loop = asyncio.get_running_loop()
    done = 0
    coalescing = coalescing_routes(rt.settings.hub)
    async with rt.engine.connect() as pooled:
        conn = (await pooled.get_raw_connection()).driver_connection
        assert conn is not None
        while loop.time() < deadline:
            async with conn.transaction():
                state = await gate(conn, target)
                if state in (Gate.PAUSED, Gate.OPEN):
                    held = await hold_waiting(conn, target)
                    if held:
                        log.info("target %s is %s: %d deliveries held", target, state.value, held)
                    return done
                if state is Gate.HALF_OPEN and lane > 0:
                    return done  # one probe at a time
                limit = 1 if state is Gate.HALF_OPEN else claim_size(rt, target, _batch_size(spec))
                token = uuid.uuid4()
                lease = _lease_seconds(rt, target, spec, limit)
                rows = await claims.claim(conn, target, limit, token, lease)
                to_send = await supersede_stale(conn, rows, token, coalescing)
            if not rows:
                return done
            if not to_send:
                continue  # every head gave way to a newer delivery, which is claimable now
            rows = to_send
            batch = [_claimed(rt, target, row, token) for row in rows]
            batch, unsent = await enrich(rt, batch)  # data.record, for enrich routes
            now = datetime.now().astimezone()
            sent = [Sent(c, now, r) for c, r in unsent]
            sent += await asyncio.gather(*(_send(rt, target, spec, c) for c in batch))
            await _record(conn, rt, target, spec, sent, probe=state is Gate.HALF_OPEN)
            done += len(rows)
    return done


def _batch_size(spec: TargetSpec) -> int:
    if spec.rate_limit is None:
        return spec.concurrency
    # Claim no more than the bucket lets out in a few seconds, so leases are not spent waiting.
    return max(1, min(spec.concurrency, int(spec.rate_limit.per_second * 5)))


def _lease_seconds(rt: Runtime, target: str, spec: TargetSpec, limit: int) -> float:
    timeout = rt.settings.hub.retry_for(target).timeout.total_seconds()
    waiting = limit / spec.rate_limit.per_second if spec.rate_limit else 0.0
    return max(rt.settings.visibility_timeout.total_seconds(), timeout + waiting + 1)


def _claimed(rt: Runtime, target: str, row: Any, token: uuid.UUID) -> Claimed:
    method, params = _route_call(rt, row["route"], target)
    event = build_cloudevent({**row, "id": row["event_id"]})
    if row["payload_override"] is not None:
        event["data"] = row["payload_override"]  # edit-and-replay
    outbound = Outbound(
        delivery_id=row["id"],
        event=event,
        request_id=row["request_id"],
        traceparent="",  # the attempt span's, set when the attempt starts (see _send)
        method=method,
        params=params,
    )
    return Claimed(
        row["id"],
        row["attempt_count"] + 1,
        outbound,
        token,
        manual=row["manual_next"],
        retry_offset=row["retry_offset"],
        route=row["route"],
        event_trace=row["traceparent"],
        received_at=row["received_at"],
    )


def _route_call(rt: Runtime, route: str, target: str) -> tuple[str | None, dict[str, Any] | None]:
    """The Bitrix24 method and params template the route names for this target."""
    for configured in rt.settings.hub.routes:
        if configured.name == route:
            for hop in configured.to:
                if hop.target == target:
                    return hop.method, hop.params
    return None, None


async def _send(rt: Runtime, target: str, spec: TargetSpec, claimed: Claimed) -> Sent:
    bucket = rt.buckets.get(target)
    async with rt.slots[target]:
        # The bucket says how long until a token is there; nothing to wait on but the clock.
        while bucket is not None and (wait := await bucket.take()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)
        started = datetime.now().astimezone()
        timeout = rt.settings.hub.retry_for(target).timeout.total_seconds()
        attributes = {
            "mmhub.delivery_id": str(claimed.delivery_id),
            "mmhub.event_id": claimed.outbound.event["id"],
            "mmhub.attempt": claimed.attempt_number,
        }
        with attempt_span(target, claimed.event_trace, attributes) as span:
            outbound = replace(claimed.outbound, traceparent=traceparent(span) or "")
            result = await rt.targets[target].send(rt.http, outbound, timeout)
            record_attempt(span, target, result)
    return Sent(claimed, started, result)


async def _record(
    conn: Any, rt: Runtime, target: str, spec: TargetSpec, sent: list[Sent], *, probe: bool
) -> None:
    """Write the attempts and the deliveries' next states, and judge the breaker, in one transaction."""
    policy = rt.settings.hub.retry_for(target)
    columns: list[list[Any]] = [[] for _ in range(15)]
    for item in sent:
        result, claimed = item.result, item.claimed
        decision = next_step(policy, claimed.attempt_number - claimed.retry_offset, result)
        row = (
            claimed.delivery_id,
            claimed.attempt_number,
            item.started_at,
            result.duration_ms,
            result.http_status,
            result.error_class,
            result.error,
            result.response_excerpt,
            result.outcome,
            claimed.manual,
            claimed.token,
            decision.state,
            item.started_at + decision.delay if decision.delay else None,
            decision.reason,
            item.started_at if decision.state == "delivered" else None,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
        record_settled(target, decision.state, claimed.received_at, item.started_at)
        if decision.state == "dead":
            log.warning(
                "delivery %s to %s is dead: %s", claimed.delivery_id, target, decision.reason
            )
    failed = any(item.result.outcome == "retry" and not item.claimed.manual for item in sent)
    probe_ok = sent[0].result.outcome == "delivered" if probe else None
    async with conn.transaction():
        await claims.record(conn, target, columns)
        await remember_writes(conn, rt, target, sent)
        state = await judge_breaker(
            conn, target, spec.circuit_breaker, probe_ok=probe_ok, failed=failed
        )
    if state is Gate.OPEN:
        log.warning("circuit breaker for %s is open", target)
