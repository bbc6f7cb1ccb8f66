"""The hub installed as an application on the fake portal: configuration and helpers for the offline tests."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bitrix24.offline import OfflinePuller
from app.bitrix24.portals import Portals
from app.db import make_sessionmaker
from app.ingest.committer import GroupCommitter
from app.settings import Settings
from cli.fake_portal import FakePortal
from dispatch.runtime import Runtime
from tests.http_app import HubClient
from tests.hub_config import HUB_CONFIG

KEY = Fernet.generate_key().decode()
CONNECTOR = "mmhub"
HANDLER = "https://hub.example/webhooks/bitrix24"
FORM = {"content-type": "application/x-www-form-urlencoded"}


def app_hub(portal: FakePortal, target_url: str, **route: Any) -> dict[str, Any]:
    """Deals from the application portal to `erp`; 1C orders written back to the deal through `crm`."""
    assert portal.app_info is not None
    config = copy.deepcopy(HUB_CONFIG)
    member = portal.app_info.member_id
    config["sources"]["bitrix24"]["portals"] = [
        {
            "member_id": member,
            "domain": portal.domain,
            "app": {
                "client_id": portal.app_info.client_id,
                "client_secret": portal.app_info.client_secret,
                "oauth_url": f"{portal.url}/oauth/token/",
                "allow_private": True,
                "handler_url": HANDLER,
            },
            "offline": {"auth_connector": CONNECTOR, "poll_every": "1s"},
        }
    ]
    config["targets"] = {
        "erp": {"kind": "onec", "url": target_url, "allow_private": True},
        "crm": {"kind": "bitrix24", "portal": member, "allow_private": True},
    }
    config["routes"] = [
        {
            "name": "deals",
            "from": {"source": "bitrix24", "events": ["ONCRMDEALADD", "ONCRMDEALUPDATE"]},
            "to": ["erp"],
            **route,
        },
        {
            "name": "orders-to-deal",
            "from": {"source": "onec"},
            "to": [
                {
                    "target": "crm",
                    "method": "crm.deal.update",
                    "params": {
                        "id": "{{ data.deal_id }}",
                        "fields": {"COMMENTS": "1C {{ data.number }}"},
                    },
                }
            ],
        },
    ]
    config["retry"] = {"schedule": ["1h"], "timeout": "5s"}
    return config


async def install(hub: HubClient, portal: FakePortal) -> None:
    reply = await hub.post(
        "/webhooks/bitrix24", content=urlencode(portal.install_form()).encode(), headers=FORM
    )
    assert reply.status_code == 200, reply.text


@asynccontextmanager
async def puller(
    settings: Settings, engine: AsyncEngine, rt: Runtime
) -> AsyncIterator[OfflinePuller]:
    """The relay's puller for the one portal, on the test's engine."""
    [portal] = settings.hub.sources.bitrix24.portals  # type: ignore[union-attr]
    cipher = settings.token_cipher()
    assert cipher is not None
    clients = Portals(settings.hub, rt.redis, rt.http, installs=(make_sessionmaker(engine), cipher))
    client = clients.get(portal.member_id, portal.domain)
    assert client is not None
    committer = GroupCommitter(engine)
    await committer.start()
    try:
        yield OfflinePuller(portal, client, engine, committer, settings.hub)
    finally:
        await committer.stop()
