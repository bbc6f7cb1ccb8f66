"""dispatch.retry: status classification and the schedule walk, as pure functions."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from app.hubconfig import RetryPolicy
from dispatch.retry import Decision, Outcome, classify_status, next_step
from dispatch.targets.base import AttemptResult

POLICY = RetryPolicy.model_validate(
    {"schedule": ["1m", "5m", "15m"], "jitter": 0.2, "retry_after_max": "1h"}
)
EXACT = POLICY.model_copy(update={"jitter": 0.0})


def result(
    outcome: Outcome = "retry",
    error_class: str | None = "http_503",
    error: str | None = "HTTP 503 Service Unavailable",
    retry_after: float | None = None,
) -> AttemptResult:
    return AttemptResult(outcome, 503, error_class, error, None, retry_after, 12)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert classify_status(status) == "delivered"


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_transient_statuses_retry(status: int) -> None:
    assert classify_status(status) == "retry"


@pytest.mark.parametrize("status", [100, 301, 302, 400, 401, 403, 404, 409, 413, 422, 501, 505])
def test_other_statuses_are_dead(status: int) -> None:
    assert classify_status(status) == "dead"


def test_delivered() -> None:
    ok = AttemptResult("delivered", 200, None, None, '{"ok":true}', None, 5)
    assert next_step(POLICY, 1, ok) == Decision("delivered", None, None)


def test_schedule_walk_without_jitter() -> None:
    delays = [next_step(EXACT, n, result()).delay for n in (1, 2, 3)]
    assert delays == [timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15)]
    decision = next_step(EXACT, 2, result())
    assert decision.state == "retrying"
    assert decision.reason == "http_503: HTTP 503 Service Unavailable"


def test_exhausted_after_the_last_delay() -> None:
    state, delay, reason = next_step(EXACT, 4, result(error_class="timeout", error="no reply"))
    assert (state, delay) == ("dead", None)
    assert reason == "retries exhausted after 4 attempts: timeout: no reply"


def test_permanent_failure_is_dead_at_once() -> None:
    dead = result("dead", "http_422", "HTTP 422 Unprocessable Entity")
    assert next_step(POLICY, 1, dead) == Decision(
        "dead", None, "http_422: HTTP 422 Unprocessable Entity"
    )


def test_jitter_stays_within_bounds_and_varies() -> None:
    seen = set()
    for seed in range(500):
        delay = next_step(POLICY, 2, result(), random.Random(seed)).delay
        assert delay is not None
        assert timedelta(minutes=4) <= delay <= timedelta(minutes=6)
        seen.add(delay)
    assert len(seen) > 400  # really jittered, not a constant
    low = min(seen).total_seconds()
    high = max(seen).total_seconds()
    assert low < 250 and high > 350  # spread over most of the +-20% band


def test_same_seed_same_delay() -> None:
    first = next_step(POLICY, 1, result(), random.Random(7))
    assert first == next_step(POLICY, 1, result(), random.Random(7))


def test_retry_after_longer_than_the_schedule_wins() -> None:
    decision = next_step(EXACT, 1, result(retry_after=600))
    assert decision.delay == timedelta(minutes=10)


def test_retry_after_shorter_than_the_schedule_is_ignored() -> None:
    assert next_step(EXACT, 3, result(retry_after=5)).delay == timedelta(minutes=15)


def test_retry_after_is_clamped() -> None:
    assert next_step(EXACT, 1, result(retry_after=86_400 * 30)).delay == timedelta(hours=1)


def test_clamp_never_shortens_the_schedule() -> None:
    long = EXACT.model_copy(update={"schedule": [timedelta(hours=12)]})
    assert next_step(long, 1, result(retry_after=86_400)).delay == timedelta(hours=12)


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        next_step(POLICY, 0, result())


def test_default_policy_gives_seven_attempts() -> None:
    policy = RetryPolicy()
    assert next_step(policy, 6, result(), random.Random(1)).state == "retrying"
    assert next_step(policy, 7, result(), random.Random(1)).state == "dead"


@pytest.mark.parametrize(
    ("error_class", "error", "reason"),
    [
        ("http_503", "HTTP 503 Service Unavailable", "http_503: HTTP 503 Service Unavailable"),
        (None, "connection refused", "connection refused"),
        ("timeout", None, "timeout"),
        (None, None, "unknown error"),
    ],
)
def test_the_stored_reason_names_what_is_known(
    error_class: str | None, error: str | None, reason: str
) -> None:
    # The reason is what an operator reads on a dead delivery: class and text when both are known.
    dead = next_step(EXACT, 1, result("dead", error_class, error))
    assert dead == Decision("dead", None, reason)
    retrying = next_step(EXACT, 1, result("retry", error_class, error))
    assert retrying == Decision("retrying", timedelta(minutes=1), reason)


@pytest.mark.parametrize(
    ("status", "outcome"), [(199, "dead"), (200, "delivered"), (299, "delivered"), (300, "dead")]
)
def test_delivered_is_exactly_the_2xx_range(status: int, outcome: Outcome) -> None:
    assert classify_status(status) == outcome


def test_a_suppressed_attempt_ends_suppressed_with_its_reason() -> None:
    # The hub's own write coming back from Bitrix24: not sent, not retried, not dead.
    echo = result("suppressed", None, "echo of the hub's own write (user 1)")
    assert next_step(EXACT, 1, echo) == Decision(
        "suppressed", None, "echo of the hub's own write (user 1)"
    )
    assert next_step(EXACT, 99, echo).state == "suppressed"  # even after the schedule


def test_a_short_retry_after_counts_from_zero() -> None:
    # With a sub-second schedule, a Retry-After of half a second is honoured as given.
    fast = RetryPolicy.model_validate({"schedule": ["100ms"], "jitter": 0.0})
    assert next_step(fast, 1, result(retry_after=0.5)).delay == timedelta(seconds=0.5)
    assert next_step(fast, 1, result(retry_after=-5)).delay == timedelta(milliseconds=100)
