"""Portal `rest` configuration, enrich routes, and the one bucket a portal's users share."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from app.bitrix24.portals import Portals, bucket_name, target_bucket
from app.hubconfig import HubConfig
from app.settings import load_hub_config
from dispatch.ssrf import check_targets

CODE = "w3bh00kc0de"


def hub(**route: Any) -> dict[str, Any]:
    return {
        "sources": {
            "bitrix24": {
                "portals": [
                    {
                        "member_id": "m1",
                        "domain": "Portal.Bitrix24.ru",
                        "application_token": "t",
                        "rest": {
                            "webhook_url": f"https://portal.bitrix24.ru/rest/1/{CODE}",
                            "rate_limit": {"per_second": 0.01, "burst": 3},
                        },
                    },
                    {"member_id": "m2", "application_token": "t"},
                ]
            }
        },
        "targets": {
            "crm": {
                "kind": "bitrix24",
                "webhook_url": f"https://portal.bitrix24.ru/rest/7/other{CODE}/",
            },
            "erp": {"kind": "onec", "url": "https://erp.example/x"},
        },
        "routes": [{"name": "r", "from": {"source": "bitrix24"}, "to": ["erp"], **route}],
    }


def test_rest_is_parsed_and_its_webhook_code_never_printed() -> None:
    config = HubConfig.model_validate(hub(enrich=True))
    portal = config.sources.bitrix24.portals[0]  # type: ignore[union-attr]
    assert portal.rest is not None
    assert portal.rest.webhook_url.get_secret_value().endswith(f"/{CODE}/")
    assert (portal.rest.rate_limit.per_second, portal.rest.allow_private) == (0.01, False)
    assert config.routes[0].enrich is True
    assert CODE not in repr(config) and CODE not in str(config.model_dump())
    assert (
        bucket_name(f"https://Portal.bitrix24.ru:8443/rest/1/{CODE}/")
        == "b24:portal.bitrix24.ru:8443"
    )


def test_only_bitrix24_routes_can_be_enriched() -> None:
    config = hub(enrich=True)
    config["sources"]["onec"] = {"auth": {"type": "bearer", "token": "x"}}
    config["routes"][0]["from"] = {"source": "onec"}
    with pytest.raises(ValidationError, match="only routes from bitrix24 can be enriched"):
        HubConfig.model_validate(config)


async def test_a_bitrix24_target_on_the_portal_takes_from_the_portal_bucket(redis: Redis) -> None:
    config = HubConfig.model_validate(hub())
    crm = target_bucket(redis, config, "crm", config.targets["crm"])
    assert crm is not None
    for _ in range(3):  # the portal's burst (its limit, not the target's default 2/s, burst 50)
        assert await crm.take() == 0
    async with aiohttp.ClientSession() as http:
        portals = Portals(config, redis, http)
        client = portals.for_payload({"auth": {"member_id": "m1"}})
        assert client is not None
        assert portals.get(None, "portal.bitrix24.ru") is client
        assert portals.for_payload({"auth": {"member_id": "m2"}}) is None  # no rest
        edited = {"source": "urn:mastermobile:bitrix24:portal.bitrix24.ru", "data": {"x": 1}}
        assert portals.for_event(edited) is client
        bucket = client.bucket
        assert bucket is not None
        assert await bucket.take() > 0  # the target used the portal's burst up


def test_a_private_rest_url_is_refused_unless_allowed() -> None:
    config = hub()
    rest = config["sources"]["bitrix24"]["portals"][0]["rest"]
    rest["webhook_url"] = f"http://127.0.0.1:9/rest/1/{CODE}/"
    with pytest.raises(ValueError, match=r"portal m1 rest.*loopback") as refused:
        check_targets(HubConfig.model_validate(config))
    assert CODE not in str(refused.value)
    rest["allow_private"] = True
    check_targets(HubConfig.model_validate(config))


PORTAL_YAML = """
sources:
  bitrix24:
    portals:
      - member_id: m1
        application_token: ${APP_TOKEN}
        rest: {webhook_url: "https://portal.bitrix24.ru/rest/1/%s/", rate_limit: {per_second: 2, burst: 50}}
"""


def test_the_webhook_code_comes_from_the_environment_and_a_literal_one_is_flagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("APP_TOKEN", "t")
    monkeypatch.setenv("B24_WEBHOOK_CODE", CODE)
    path = tmp_path / "hub.yaml"
    path.write_text(PORTAL_YAML % "${B24_WEBHOOK_CODE}")
    with caplog.at_level(logging.WARNING):
        rest = load_hub_config(path).sources.bitrix24.portals[0].rest  # type: ignore[union-attr]
    assert rest is not None and rest.webhook_url.get_secret_value().endswith(f"/{CODE}/")
    assert "literal secret" not in caplog.text

    path.write_text(PORTAL_YAML % CODE)
    with caplog.at_level(logging.WARNING):
        load_hub_config(path)
    assert "portals.0.rest.webhook_url: a literal secret" in caplog.text
    assert CODE not in caplog.text
