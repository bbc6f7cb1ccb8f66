"""Target kinds: `build_target` turns a configured target into something that can `send`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.hubconfig import Target as TargetSpec
from app.outbox.envelope import build_cloudevent
from dispatch.targets.base import AttemptResult, Outbound, Target
from dispatch.targets.bitrix24 import Bitrix24Target
from dispatch.targets.http import HttpTarget
from dispatch.targets.onec import OneCTarget
from dispatch.targets.walking_warehouse import WalkingWarehouseTarget

__all__ = ["KINDS", "AttemptResult", "Outbound", "Target", "build_cloudevent", "build_target"]

# `kind` in the YAML -> the class that sends for it; each takes (name, its own spec model).
KINDS: dict[str, Callable[[str, Any], Target]] = {
    "onec": OneCTarget,
    "walking_warehouse": WalkingWarehouseTarget,
    "http": HttpTarget,
    "bitrix24": Bitrix24Target,
}


def build_target(name: str, spec: TargetSpec) -> Target:
    """The sender for a configured target; raises ValueError (naming it) if it cannot be used."""
    factory = KINDS.get(spec.kind)
    if factory is None:
        raise ValueError(f"target {name!r}: unknown kind {spec.kind!r}")
    return factory(name, spec)
