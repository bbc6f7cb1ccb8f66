"""`walking_warehouse`: the CloudEvent POSTed with a Bearer token; 409 means "already there"."""

from __future__ import annotations

from app.hubconfig import WalkingWarehouseTarget as WalkingWarehouseSpec
from dispatch.targets.base import Reply, Verdict
from dispatch.targets.cloudevent import CloudEventTarget
from dispatch.targets.transport import judge_status


class WalkingWarehouseTarget(CloudEventTarget):
    """Walking Warehouse: 2xx delivered; 409 Conflict delivered too (it has the event already)."""

    def __init__(self, name: str, spec: WalkingWarehouseSpec) -> None:
        super().__init__(name, spec.url, spec.auth)

    def judge(self, reply: Reply) -> Verdict:
        """409 is Walking Warehouse's answer to a repeated Idempotency-Key: the event is there."""
        if reply.status == 409:
            return "delivered", None, None
        return judge_status(reply)
