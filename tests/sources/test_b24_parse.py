"""parse_b24, strip_secrets and app.secrets against the Bitrix24 fixtures and edge cases."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any
from unittest.mock import ANY

import pytest

from app.secrets import is_secret_key, redact, secret_values
from app.sources.bitrix24.identity import subject_of
from app.sources.bitrix24.parse import Bitrix24Event, parse_b24, strip_secrets
from app.sources.bitrix24.phpform import parse_php_form
from app.sources.errors import ShapeError
from tests.fixture_files import fixture_bytes


def _fixture(name: str) -> dict[str, Any]:
    return parse_php_form(fixture_bytes(f"bitrix24/{name}"))


# --- fixtures ---------------------------------------------------------------------------------


def test_webhook_deal_add() -> None:
    assert parse_b24(_fixture("webhook-deal-add.form")) == Bitrix24Event(
        event="ONCRMDEALADD",
        subject="deal/7405",
        member_id="d897063e1ce7c5eb9f04b9751eef5915",
        domain="some-domain.bitrix24.ru",
        application_token="jvh9y1ulvt2m6k5or90v9mg8nn32ozas",
        ts="1766047124",
        data={"FIELDS": {"ID": "7405"}},
        data_hash=ANY,
    )


def test_app_event_contact_add() -> None:
    assert parse_b24(_fixture("app-event-contact-add.form")) == Bitrix24Event(
        event="ONCRMCONTACTADD",
        subject="contact/134806",
        member_id="010b6886ebc205e43ae65000ee00addb",
        domain="bitrix24-php-sdk-playground.bitrix24.com",
        application_token="3c6c9248ec54af6bea1159b43ee0ab32",
        ts="1727018926",
        data={"FIELDS": {"ID": "134806"}},
        data_hash=ANY,
    )


def test_webhook_dynamic_item_update() -> None:
    assert parse_b24(_fixture("webhook-dynamic-item-update.form")) == Bitrix24Event(
        event="ONCRMDYNAMICITEMUPDATE",
        subject="dynamic-1032/21",
        member_id="995c2cbaf3edb993c1d640820f802149",
        domain="konsultatsiyatest.bitrix24.ru",
        application_token="0zhkhllfzn5z3dfuulqqerwr3wduyx42",
        ts="1739049397",
        data={"FIELDS": {"ID": "21", "ENTITY_TYPE_ID": "1032"}},
        data_hash=ANY,
    )


def test_task_add_reads_fields_after_past_undefined_before() -> None:
    assert parse_b24(_fixture("task-add-reconstructed.form")) == Bitrix24Event(
        event="ONTASKADD",
        subject="task/123",
        member_id="a223c6b3710f85df22e9377d6c4f7553",
        domain="some-domain.bitrix24.com",
        application_token="51856fefc120afa4b628cc82d3935cce",
        ts="1466439714",
        data={
            "FIELDS_BEFORE": None,
            "FIELDS_AFTER": {"ID": "123"},
            "IS_ACCESSIBLE_BEFORE": "N",
            "IS_ACCESSIBLE_AFTER": None,
        },
        data_hash=ANY,
    )


def test_strip_secrets_on_application_event() -> None:
    payload = _fixture("app-event-contact-add.form")
    original = copy.deepcopy(payload)
    stripped = strip_secrets(payload)
    assert stripped["auth"] == {
        "expires": "1727022526",
        "expires_in": "3600",
        "scope": "crm,placement,user_brief",
        "domain": "bitrix24-php-sdk-playground.bitrix24.com",
        "server_endpoint": "https://oauth.bitrix.info/rest/",
        "status": "L",
        "client_endpoint": "https://bitrix24-php-sdk-playground.bitrix24.com/rest/",
        "member_id": "010b6886ebc205e43ae65000ee00addb",
        "user_id": "1",
    }
    assert stripped["data"] == {"FIELDS": {"ID": "134806"}}
    assert payload == original  # a copy: the input keeps its tokens
    stripped["data"]["FIELDS"]["ID"] = "changed"
    assert payload["data"]["FIELDS"]["ID"] == "134806"  # and a deep one


def test_strip_secrets_on_outgoing_webhook() -> None:
    stripped = strip_secrets(_fixture("webhook-deal-add.form"))
    assert "application_token" not in stripped["auth"]
    assert stripped["auth"]["member_id"] == "d897063e1ce7c5eb9f04b9751eef5915"


def test_secret_values_of_application_event() -> None:
    assert sorted(secret_values(_fixture("app-event-contact-add.form"))) == [
        "3c6c9248ec54af6bea1159b43ee0ab32",
        "be45f0660071849a0058f18a000000010000077261ef50fc26f1357adbd86a052c9e48",
    ]


# --- subjects ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "data", "subject"),
    [
        ("ONCRMDEALUPDATE", {"FIELDS": {"ID": "7405"}}, "deal/7405"),
        ("ONCRMDEALDELETE", {"FIELDS": {"ID": "7405"}}, "deal/7405"),
        ("ONCRMDEALMOVETOCATEGORY", {"FIELDS": {"ID": "9"}}, "deal/9"),
        ("ONCRMLEADUPDATE", {"FIELDS": {"ID": "5"}}, "lead/5"),
        ("ONCRMCOMPANYADD", {"FIELDS": {"ID": "5"}}, "company/5"),
        ("ONCRMINVOICESETSTATUS", {"FIELDS": {"ID": "5"}}, "invoice/5"),
        ("ONCRMQUOTEDELETE", {"FIELDS": {"ID": "5"}}, "quote/5"),
        ("ONCRMACTIVITYADD", {"FIELDS": {"ID": "5"}}, "activity/5"),
        ("ONCRMPRODUCTUPDATE", {"FIELDS": {"ID": "5"}}, "product/5"),
        ("ONTASKUPDATE", {"FIELDS_BEFORE": {"ID": "8"}, "FIELDS_AFTER": {"ID": "8"}}, "task/8"),
        ("ONTASKDELETE", {"FIELDS_BEFORE": {"ID": "8"}, "FIELDS_AFTER": None}, "task/8"),
        (
            "ONTASKCOMMENTADD",
            {"FIELDS_AFTER": {"ID": "77", "TASK_ID": "8"}},
            "task/8",
        ),  # the parent
        ("ONCRMDYNAMICITEMADD", {"FIELDS": {"ID": "1", "ENTITY_TYPE_ID": "128"}}, "dynamic-128/1"),
        ("ONCRMDYNAMICITEMDELETE", {"FIELDS": {"ID": "1"}}, "dynamic/1"),
        ("ONCRMTIMELINECOMMENTADD", {"FIELDS": {"ID": "3"}}, "timeline-comment/3"),
        ("ONUSERADD", {"FIELDS": {"ID": "12"}}, "user/12"),
        ("ONCALENDARENTRYADD", {"id": "44"}, "calendar/44"),
        ("ONCALENDARSECTIONDELETE", {"id": "2"}, "calendar-section/2"),
        ("ONCRMREQUISITEADD", {"FIELDS": {"ID": "6"}}, "requisite/6"),  # generic
        (
            "ONCRMADDRESSUNREGISTER",
            {"FIELDS": {"ENTITY_TYPE_ID": "8", "ENTITY_ID": "6"}},
            "requisite/6",
        ),
        (
            "ONAPPINSTALL",
            {"VERSION": "1", "LANGUAGE_ID": "ru"},
            "app/~",
        ),  # no id: a hash of the data
        ("ONCRMDEALADD", {}, "deal/~"),
        ("ONIMBOTJOINCHAT", {}, "chat/~"),
        ("oncrmdealadd", {"FIELDS": {"ID": "1"}}, "deal/1"),  # upper-cased first
        ("ONCRMDEALADD", {"FIELDS": {"ID": 7405}}, "deal/7405"),  # JSON numbers
        ("ONCRMDEALADD", {"FIELDS": {"ID": " "}}, "deal/~"),
    ],
)
def test_subject(event: str, data: dict[str, Any], subject: str) -> None:
    actual = parse_b24({"event": event, "data": data}).subject
    if subject.endswith("~"):  # no id: the entity and 16 hex digits of the data's hash
        assert actual.startswith(subject) and len(actual) == len(subject) + 16
    else:
        assert actual == subject


def test_json_payload_with_numbers_and_missing_auth() -> None:
    parsed = parse_b24({"event": " OnCrmDealAdd ", "ts": 1766047124, "data": None})
    assert parsed == Bitrix24Event(
        event="ONCRMDEALADD",
        subject=subject_of("ONCRMDEALADD", None),
        member_id=None,
        domain=None,
        application_token=None,
        ts="1766047124",
        data={},
        data_hash=ANY,
    )


def test_data_is_redacted() -> None:
    parsed = parse_b24({"event": "ONX", "data": {"FIELDS": {"ID": "1", "PASSWORD": "hunter2"}}})
    assert parsed.data == {"FIELDS": {"ID": "1"}}


@pytest.mark.parametrize(
    "payload", [{}, {"event": ""}, {"event": "   "}, {"event": None}, {"event": ["X"]}]
)
def test_missing_event_is_a_shape_error(payload: dict[str, Any]) -> None:
    with pytest.raises(ShapeError, match="'event'"):
        parse_b24(payload)


def test_non_object_payload_is_a_shape_error() -> None:
    with pytest.raises(ShapeError):
        parse_b24(["event"])  # type: ignore[arg-type]


# --- app.secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "Passwd",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "REFRESH_TOKEN",
        "application_token",
        "Authorization",
        "X-Auth-Token",
        "api-key",
        "auth[access_token]",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["member_id", "expires", "SECRETARY", "tokens", "token_type_hint", "ID", "", "[]"]
)
def test_non_secret_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_redact_nested_lists_and_dicts() -> None:
    obj = {
        "a": [{"token": "t", "keep": 1}, ({"Secret": "s"}, "x")],
        "b": {"c": {"Authorization": "Bearer x", "d": None}},
        1: "int key",
    }
    assert redact(obj) == {
        "a": [{"keep": 1}, [{}, "x"]],
        "b": {"c": {"d": None}},
        1: "int key",
    }
    assert obj["b"] == {"c": {"Authorization": "Bearer x", "d": None}}


def test_redact_keeps_key_order_and_scalars() -> None:
    assert list(redact({"z": 1, "password": 2, "a": 3})) == ["z", "a"]
    assert redact("text") == "text"
    assert redact(None) is None


def test_redact_survives_deep_nesting() -> None:
    deep: Any = "leaf"
    for _ in range(5000):
        deep = {"k": [deep]}
    copied = redact(deep)
    for _ in range(5000):
        copied = copied["k"][0]
    assert copied == "leaf"


def test_secret_values_collects_nested_and_numbers() -> None:
    obj = {"auth": {"password": 1234, "x": "public"}, "list": [{"token": {"a": "t1", "b": ["t2"]}}]}
    assert sorted(secret_values(obj)) == ["1234", "t1", "t2"]
    assert secret_values({"token": ""}) == []
    assert secret_values({"token": True}) == []


def test_the_dedup_key_is_stable_and_names_the_portal() -> None:
    # Stored keys are compared with new ones after an upgrade: the format must not drift.
    event = Bitrix24Event(
        event="ONCRMDEALADD",
        subject="deal/1",
        member_id=None,
        domain="one.bitrix24.ru",
        application_token=None,
        ts=None,
        data={},
        data_hash="abc",
    )
    assert event.dedup_key() == "b24v2:one.bitrix24.ru:ONCRMDEALADD::abc"
    other_portal = dataclasses.replace(event, domain="two.bitrix24.ru")
    assert other_portal.dedup_key() != event.dedup_key()
    anonymous = dataclasses.replace(event, domain=None, ts="1766047124")
    assert anonymous.dedup_key() == "b24v2::ONCRMDEALADD:1766047124:abc"
    by_member = dataclasses.replace(event, member_id="m1")
    assert by_member.dedup_key() == "b24v2:m1:ONCRMDEALADD::abc"
