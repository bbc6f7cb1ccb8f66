"""Edges of parsing and identity that mutation testing showed no test pinned.

Each value here is observable: it goes into a stored dedup key (`data_hash`), a delivery's subject
(and so its ordering lane), the stored payload, or the text of a 4xx reply.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.errors import Unauthorized
from app.sources.bitrix24.identity import canonical, rule_for, subject_of
from app.sources.bitrix24.parse import MAX_TS, parse_b24
from app.sources.bitrix24.phpform import FormError, parse_php_form
from app.sources.bitrix24.verify import authenticate
from app.sources.jsonlimits import MAX_DEPTH, MAX_KEYS, JsonLimitError, check_json_limits
from tests.sources.test_b24_verify import SOURCE

# --- identity: the canonical text behind data_hash, and so behind stored dedup keys -------------


def test_the_canonical_text_of_json_values_is_what_a_form_would_carry() -> None:
    # PHP's http_build_query writes true as "1", false as "0", 2.0 as "2", leaves out nulls, and a
    # list as keys 0..n-1: the JSON of one event must hash as its form does, release after release.
    data = {
        "yes": True,
        "no": False,
        "whole": 2.0,
        "part": 2.5,
        "php_list": {"0": "a", "1": "b"},
        "list": ["a", "b"],
        "gone": None,
        "js": "undefined",
    }
    assert canonical(data) == (
        b'{"list":["a","b"],"no":"0","part":"2.5","php_list":["a","b"],"whole":"2","yes":"1"}'
    )


@pytest.mark.parametrize(
    ("type_id", "entity"),
    [
        ("8", "requisite"),
        ("2", "deal"),
        ("1030", "dynamic-1030"),
        ("1X", "dynamic-1X"),
        ("", "crm"),
    ],
)
def test_an_address_is_filed_under_its_owners_crm_type(type_id: str, entity: str) -> None:
    data = {"FIELDS": {"ENTITY_TYPE_ID": type_id, "ENTITY_ID": "5", "TYPE_ID": "1"}}
    assert subject_of("ONCRMADDRESSREGISTER", data) == f"{entity}/5"


def test_an_unknown_event_gets_a_rule_of_its_own_named_after_it() -> None:
    rule = rule_for("ONVENDOR.WIDGET.UPDATE")
    assert (rule.family, rule.entity) == ("unknown", "vendorwidget")
    assert rule.matches("ONVENDOR.WIDGET.UPDATE")
    assert not rule.matches("ONVENDORXWIDGETXUPDATE")  # the dots are literal


def test_a_long_unknown_event_name_still_gets_its_subject() -> None:
    name = "ON" + "X" * 120 + "UPDATE"  # longer than the names the rule cache keeps
    assert subject_of(name, {"ID": "9"}) == f"{'x' * 120}/9"


@pytest.mark.parametrize("data", [{"DATA": []}, {"DATA": [["not", "a", "chat"]]}])
def test_a_path_into_a_list_that_is_not_there_finds_no_id(data: dict[str, Any]) -> None:
    # DATA.0.chat.id: an empty list, or a list where an object was expected, holds no id.
    assert subject_of("ONIMCONNECTORDIALOGSTART", data).startswith("chat/~")


# --- parse_b24: the replies' texts, the ts bound, and data that is not an object ---------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (["not", "an", "object"], "Bitrix24 payload must be an object"),
        ({"data": {}}, "Bitrix24 payload has no 'event' (a non-empty string is required)"),
        ({"event": "  "}, "Bitrix24 payload has no 'event' (a non-empty string is required)"),
    ],
)
def test_shape_errors_say_what_is_wrong(payload: Any, message: str) -> None:
    with pytest.raises(Exception, match=f"^{re.escape(message)}$"):
        parse_b24(payload)


def test_the_last_second_of_year_9999_is_a_valid_ts() -> None:
    event = parse_b24({"event": "ONCRMDEALUPDATE", "data": {"FIELDS": {"ID": "1"}}, "ts": MAX_TS})
    assert event.ts == str(MAX_TS)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [(7, {"value": 7}), ("text", {"value": "text"}), ([1], {"value": [1]}), ("", {}), ([], {})],
)
def test_data_that_is_not_an_object_is_stored_under_value(raw: Any, stored: Any) -> None:
    assert parse_b24({"event": "ONAPPTEST", "data": raw}).data == stored


def test_an_unknown_member_with_an_unknown_domain_is_refused_clearly() -> None:
    payload = {
        "event": "ONCRMDEALUPDATE",
        "auth": {
            "member_id": "nobody",
            "domain": "elsewhere.bitrix24.ru",
            "application_token": "x",
        },
    }
    with pytest.raises(Unauthorized) as caught:
        authenticate(SOURCE, payload)
    assert caught.value.detail == "unknown portal or missing application token"


# --- the form parser's messages -------------------------------------------------------------------


def test_a_body_with_control_bytes_is_named_as_such() -> None:
    with pytest.raises(FormError) as caught:
        parse_php_form(b"event=ONCRMDEALUPDATE&data\x00=1")
    assert str(caught.value) == "body is not form-urlencoded text (it contains control bytes)"


def test_a_field_nested_too_deep_is_quoted_in_sixty_characters() -> None:
    name = "a" + "[x]" * 100
    with pytest.raises(FormError) as caught:
        parse_php_form(f"{name}=1".encode())
    assert str(caught.value).endswith(f": {name[:60]!r}")


# --- JSON limits past the counting shortcut -------------------------------------------------------


def test_depth_goes_down_by_one_per_closing_bracket() -> None:
    # Two levels left open, then MAX_DEPTH - 1 more: one level too deep in all.
    too_deep = "[[[]" + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "]]"
    with pytest.raises(JsonLimitError, match="nested deeper"):
        check_json_limits(too_deep)
    check_json_limits("[[]" + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "]")  # exactly at it


def test_only_colons_count_as_keys() -> None:
    # Many strings and brackets (past the shortcut) but no object member at all.
    body = "[" + ",".join(["[]"] * (MAX_DEPTH + 1) + ['"s"'] * (MAX_KEYS + 1)) + "]"
    check_json_limits(body)
