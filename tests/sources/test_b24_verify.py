"""Bitrix24 authentication: which portal a body names, and whether its token is that portal's."""

from __future__ import annotations

from typing import Any

import pytest

from app.errors import Unauthorized
from app.hubconfig import Bitrix24Source
from app.sources.bitrix24.verify import authenticate, token_matches
from tests.hub_config import PORTALS

SOURCE = Bitrix24Source.model_validate(
    {
        "portals": [
            *PORTALS,
            # During a token rotation both the new and the old token are accepted.
            {"member_id": "rotating", "application_tokens": ["new-token", "old-token"]},
        ]
    }
)
BY_MEMBER = PORTALS[0]  # member_id only
WITH_DOMAIN = PORTALS[1]  # member_id and domain
DOMAIN_ONLY = PORTALS[3]  # domain only


def body(**auth: Any) -> dict[str, Any]:
    return {"event": "ONCRMDEALADD", "auth": auth}


def test_a_portal_is_found_by_member_id() -> None:
    portal = authenticate(
        SOURCE,
        body(member_id=BY_MEMBER["member_id"], application_token=BY_MEMBER["application_token"]),
    )
    assert portal.member_id == BY_MEMBER["member_id"]


def test_member_id_wins_over_a_domain_of_another_portal() -> None:
    payload = body(
        member_id=BY_MEMBER["member_id"],
        domain=WITH_DOMAIN["domain"],
        application_token=BY_MEMBER["application_token"],
    )
    assert authenticate(SOURCE, payload).member_id == BY_MEMBER["member_id"]


@pytest.mark.parametrize("member_id", [None, "", 12, "not-configured"])
def test_a_portal_is_found_by_its_domain_in_any_case(member_id: Any) -> None:
    payload = body(
        member_id=member_id,
        domain=DOMAIN_ONLY["domain"].upper(),
        application_token=DOMAIN_ONLY["application_token"],
    )
    assert authenticate(SOURCE, payload).domain == DOMAIN_ONLY["domain"]


def test_a_domain_does_not_vouch_for_another_member_id() -> None:
    payload = body(
        member_id="995c2cbaf3edb993c1d640820f80dead",  # configured nowhere
        domain=WITH_DOMAIN["domain"],
        application_token=WITH_DOMAIN["application_token"],
    )
    with pytest.raises(Unauthorized) as caught:
        authenticate(SOURCE, payload)
    assert caught.value.detail == "the member_id does not belong to the portal of that domain"


def test_the_domain_alone_finds_a_portal_that_also_has_a_member_id() -> None:
    payload = body(domain=WITH_DOMAIN["domain"], application_token=WITH_DOMAIN["application_token"])
    assert authenticate(SOURCE, payload).member_id == WITH_DOMAIN["member_id"]


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        ({"event": "ONCRMDEALADD"}, "the body carries no auth[application_token]"),
        ({"auth": "token"}, "the body carries no auth[application_token]"),
        (
            body(member_id="unknown", application_token="x"),
            "unknown portal or missing application token",
        ),
        (
            body(domain=["not", "text"], application_token="x"),
            "unknown portal or missing application token",
        ),
        (body(member_id=BY_MEMBER["member_id"]), "unknown portal or missing application token"),
        (
            body(member_id=BY_MEMBER["member_id"], application_token=["a", "list"]),
            "unknown portal or missing application token",
        ),
        (
            body(
                member_id=BY_MEMBER["member_id"], application_token=WITH_DOMAIN["application_token"]
            ),
            "the application token does not match the portal's",
        ),
        (
            body(member_id=BY_MEMBER["member_id"], application_token=""),
            "the application token does not match the portal's",
        ),
    ],
)
def test_refusals_say_what_is_wrong(payload: dict[str, Any], detail: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        authenticate(SOURCE, payload)
    assert caught.value.detail == detail


@pytest.mark.parametrize("token", ["new-token", "old-token"])
def test_every_token_of_a_rotation_is_accepted(token: str) -> None:
    assert authenticate(SOURCE, body(member_id="rotating", application_token=token)).member_id == (
        "rotating"
    )


def test_an_installed_token_is_accepted_besides_the_configured_one() -> None:
    payload = body(member_id=BY_MEMBER["member_id"], application_token="from-the-install")
    with pytest.raises(Unauthorized):
        authenticate(SOURCE, payload)
    assert authenticate(SOURCE, payload, ["other", "from-the-install"]).member_id == (
        BY_MEMBER["member_id"]
    )


def test_no_source_knows_no_portal() -> None:
    with pytest.raises(Unauthorized):
        authenticate(None, body(member_id=BY_MEMBER["member_id"], application_token="x"))


@pytest.mark.parametrize(
    ("token", "accepted", "matches"),
    [
        ("b", ["a", "b", "c"], True),
        ("a", ["a", "b"], True),
        ("c", ["a", "b"], False),
        ("a", [], False),
        ("ab", ["a"], False),
    ],
)
def test_token_matches_any_accepted_one(token: str, accepted: list[str], matches: bool) -> None:
    assert token_matches(token, accepted) is matches
