"""build_target: one sender class per kind, all with the same interface."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from app.hubconfig import Target as TargetSpec
from dispatch.targets import KINDS, build_target
from dispatch.targets.bitrix24 import Bitrix24Target
from dispatch.targets.http import HttpTarget
from dispatch.targets.onec import OneCTarget
from dispatch.targets.walking_warehouse import WalkingWarehouseTarget

_SPEC: TypeAdapter[Any] = TypeAdapter(TargetSpec)


@pytest.mark.parametrize(
    ("config", "cls"),
    [
        ({"kind": "onec", "url": "https://erp.example/hs/x"}, OneCTarget),
        ({"kind": "walking_warehouse", "url": "https://ww.example/"}, WalkingWarehouseTarget),
        ({"kind": "http", "url": "https://hooks.example/", "secret": "s3cret"}, HttpTarget),
        ({"kind": "bitrix24", "webhook_url": "https://p.bitrix24.ru/rest/1/c/"}, Bitrix24Target),
    ],
)
def test_kinds(config: dict[str, Any], cls: type) -> None:
    target = build_target("t1", _SPEC.validate_python(config))
    assert isinstance(target, cls)
    assert target.name == "t1"


def test_every_configurable_kind_is_registered() -> None:
    assert set(KINDS) == {"onec", "walking_warehouse", "http", "bitrix24"}
