"""RQ entry points: ids in, thin. The work is in plain functions testable without a queue."""

from __future__ import annotations

from dispatch.handover import drain_and_hand_over
from dispatch.runtime import runner


def drain_target(target: str) -> int:
    """Deliver what is due for one target (RQ job); returns how many attempts were made."""
    run = runner()
    return run.run(drain_and_hand_over(run.runtime, target))
