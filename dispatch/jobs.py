"""RQ entry points: ids in, thin. The work is in plain functions testable without a queue."""

from __future__ import annotations

from dispatch.handover import drain_and_hand_over
from dispatch.runtime import runner
from dispatch.telemetry import handover, handover_links


def drain_target(target: str, relay_span: str | None = None, job_id: str | None = None) -> int:
    """Deliver what is due for one target (RQ job); returns how many attempts were made.

    `relay_span` is the traceparent of the relay's hand-over that enqueued the job; `job_id` is
    the job's own id, the token of the target's drain key."""
    run = runner()
    token = handover.set(handover_links(relay_span))  # the loop's tasks copy this context
    try:
        return run.run(drain_and_hand_over(run.runtime, target, job_id))
    finally:
        handover.reset(token)
