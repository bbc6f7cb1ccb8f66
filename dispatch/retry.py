"""Retry policy as data plus pure functions: what an HTTP status means, and what happens next.

The policy itself (`app.hubconfig.RetryPolicy`) is configuration; these functions only read it, so a
schedule can be read as a table and tested without a clock, a queue or a database.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, NamedTuple

from app.hubconfig import RetryPolicy

if TYPE_CHECKING:
    # Only for annotations: the targets import this module at run time.
    from dispatch.targets.base import AttemptResult

# What one attempt came to, as its target judged it; next_step decides what follows. `suppressed`:
# not sent, the change was the hub's own write coming back (echo_user_id).
Outcome = Literal["delivered", "retry", "dead", "suppressed"]
State = Literal["delivered", "retrying", "dead", "suppressed"]

# Statuses that say "not now" rather than "never": timeouts, too early, rate limits, gateway trouble.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

_RNG = random.Random()


class Decision(NamedTuple):
    """The delivery's next state, the wait before the next attempt (if any), and why."""

    state: State
    delay: timedelta | None
    reason: str | None


def classify_status(status: int) -> Outcome:
    """Map an HTTP status to an attempt outcome: 2xx delivered, transient codes retry, else dead.

    Redirects are not followed by the targets, so a 3xx is a misconfiguration: dead.
    """
    if 200 <= status < 300:
        return "delivered"
    if status in RETRYABLE_STATUSES:
        return "retry"
    return "dead"


def describe(result: AttemptResult) -> str:
    """One line saying why an attempt failed: `<error class>: <error>`."""
    if result.error_class and result.error:
        return f"{result.error_class}: {result.error}"
    return result.error or result.error_class or "unknown error"


def next_step(
    policy: RetryPolicy,
    attempt_number: int,
    result: AttemptResult,
    rng: random.Random | None = None,
) -> Decision:
    """Decide what follows attempt `attempt_number` (1-based) that ended with `result`.

    A retryable failure waits `schedule[n-1]` with +-`jitter` (uniform), or longer if the target
    asked for it with Retry-After (honoured up to `retry_after_max`, never shortening the schedule).
    After `len(schedule)` retries, or on a permanent failure, the delivery is dead.
    """
    if attempt_number < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt_number}")
    if result.outcome == "delivered":
        return Decision("delivered", None, None)
    if result.outcome == "suppressed":
        return Decision("suppressed", None, result.error)
    reason = describe(result)
    if result.outcome == "dead":
        return Decision("dead", None, reason)
    if attempt_number > len(policy.schedule):
        return Decision(
            "dead", None, f"retries exhausted after {attempt_number} attempts: {reason}"
        )
    scheduled = policy.schedule[attempt_number - 1].total_seconds()
    # Jitter spreads a burst of failures (a target that was down) so retries do not arrive together.
    seconds = scheduled * (rng or _RNG).uniform(1 - policy.jitter, 1 + policy.jitter)
    if result.retry_after is not None:
        # Clamp what the target asks for: a hostile or buggy Retry-After must not park us for days.
        asked = min(max(result.retry_after, 0.0), policy.retry_after_max.total_seconds())
        seconds = max(seconds, asked)
    return Decision("retrying", timedelta(seconds=seconds), reason)
