"""parse_php_form: the Bitrix24 fixtures, PHP parse_str edge cases, and properties."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.sources.bitrix24.phpform import MAX_DEPTH, MAX_FIELDS, FormError, parse_php_form
from app.sources.errors import MalformedError
from tests.fixture_files import FIXTURES, fixture_bytes

# --- the wire fixtures, parsed from their raw bytes -------------------------------------------


def test_fixture_app_event_contact_add() -> None:
    assert parse_php_form(fixture_bytes("bitrix24/app-event-contact-add.form")) == {
        "event": "ONCRMCONTACTADD",
        "event_handler_id": "58",
        "data": {"FIELDS": {"ID": "134806"}},
        "ts": "1727018926",
        "auth": {
            "access_token": (
                "be45f0660071849a0058f18a000000010000077261ef50fc26f1357adbd86a052c9e48"
            ),
            "expires": "1727022526",
            "expires_in": "3600",
            "scope": "crm,placement,user_brief",
            "domain": "bitrix24-php-sdk-playground.bitrix24.com",
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "status": "L",
            "client_endpoint": "https://bitrix24-php-sdk-playground.bitrix24.com/rest/",
            "member_id": "010b6886ebc205e43ae65000ee00addb",
            "user_id": "1",
            "application_token": "3c6c9248ec54af6bea1159b43ee0ab32",
        },
    }


def test_fixture_webhook_deal_add() -> None:
    assert parse_php_form(fixture_bytes("bitrix24/webhook-deal-add.form")) == {
        "event": "ONCRMDEALADD",
        "event_handler_id": "975",
        "data": {"FIELDS": {"ID": "7405"}},
        "ts": "1766047124",
        "auth": {
            "domain": "some-domain.bitrix24.ru",
            "client_endpoint": "https://some-domain.bitrix24.ru/rest/",
            "server_endpoint": "https://oauth.bitrix24.tech/rest/",
            "member_id": "d897063e1ce7c5eb9f04b9751eef5915",
            "application_token": "jvh9y1ulvt2m6k5or90v9mg8nn32ozas",
        },
    }


def test_fixture_webhook_dynamic_item_update() -> None:
    assert parse_php_form(fixture_bytes("bitrix24/webhook-dynamic-item-update.form")) == {
        "event": "ONCRMDYNAMICITEMUPDATE",
        "event_handler_id": "509",
        "data": {"FIELDS": {"ID": "21", "ENTITY_TYPE_ID": "1032"}},
        "ts": "1739049397",
        "auth": {
            "domain": "konsultatsiyatest.bitrix24.ru",
            "client_endpoint": "https://konsultatsiyatest.bitrix24.ru/rest/",
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "member_id": "995c2cbaf3edb993c1d640820f802149",
            "application_token": "0zhkhllfzn5z3dfuulqqerwr3wduyx42",
        },
    }


def test_fixture_task_add_keeps_undefined_as_none() -> None:
    assert parse_php_form(fixture_bytes("bitrix24/task-add-reconstructed.form")) == {
        "event": "ONTASKADD",
        "data": {
            "FIELDS_BEFORE": None,
            "FIELDS_AFTER": {"ID": "123"},
            "IS_ACCESSIBLE_BEFORE": "N",
            "IS_ACCESSIBLE_AFTER": None,
        },
        "ts": "1466439714",
        "auth": {
            "domain": "some-domain.bitrix24.com",
            "member_id": "a223c6b3710f85df22e9377d6c4f7553",
            "application_token": "51856fefc120afa4b628cc82d3935cce",
        },
    }


def test_every_bitrix24_fixture_is_covered() -> None:
    names = {path.name for path in (FIXTURES / "bitrix24").glob("*.form")}
    assert names == {
        "app-event-contact-add.form",
        "webhook-deal-add.form",
        "webhook-dynamic-item-update.form",
        "task-add-reconstructed.form",
    }


# --- PHP parse_str semantics ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"data[FIELDS][ID]=7405", {"data": {"FIELDS": {"ID": "7405"}}}),
        (b"a[]=1&a[]=2", {"a": ["1", "2"]}),
        (b"data[FIELDS_AFTER][0]=x", {"data": {"FIELDS_AFTER": {"0": "x"}}}),
        (b"a=1&a=2", {"a": "2"}),  # repeated plain key: last wins
        (b"a[b]=1&a[b]=2", {"a": {"b": "2"}}),
        (b"a=1&a[b]=2", {"a": {"b": "2"}}),  # scalar, then container: the later wins
        (b"a[b]=2&a=1", {"a": "1"}),  # container, then scalar: the later wins
        (b"a[]=1&a=2&a[]=3", {"a": ["3"]}),
        (b"a=undefined", {"a": None}),
        (b"a=Undefined&b=undefined+", {"a": "Undefined", "b": "undefined "}),
        (b"a=x+y%2Bz", {"a": "x y+z"}),  # '+' is a space, %2B a plus
        (b"a+b=1", {"a b": "1"}),  # and so in names; spaces and dots are kept, unlike PHP
        (b"a.b=1", {"a.b": "1"}),
        (b"a=%D0%9C%D0%BE%D0%B9%D0%BA%D0%B0", {"a": "Мойка"}),
        (b"%D0%B8%D0%BC%D1%8F[%D0%BA]=1", {"имя": {"к": "1"}}),
        (b"a=%e2%82%ac", {"a": "€"}),  # lower-case hex
        (b"a=100%&b=%zz&c=%4", {"a": "100%", "b": "%zz", "c": "%4"}),  # bad escapes stay
        (b"a=1=2", {"a": "1=2"}),  # only the first '=' splits
        (b"flag&b=", {"flag": "", "b": ""}),
        (b"", {}),
        (b"&&a=1&&", {"a": "1"}),
        (b"=1&=&[x]=1&[]=2&a=3", {"a": "3"}),  # empty names are dropped
        (b"a[b=1", {"a_b": "1"}),  # unclosed first '[': PHP turns it into '_'
        (b"a[b[c=1", {"a_b[c": "1"}),
        (b"a[b][c=1", {"a": {"b": "1"}}),  # unclosed later segment: PHP drops it
        (b"a[b]xyz=1", {"a": {"b": "1"}}),  # text after the last ']' is ignored
        (b"a]=1", {"a]": "1"}),
        (b"a[][x]=1&a[][x]=2", {"a": [{"x": "1"}, {"x": "2"}]}),  # each [] is a new element
        (b"a[x][]=1&a[x][]=2&a[y]=3", {"a": {"x": ["1", "2"], "y": "3"}}),
        (b"a[]=1&a[x]=2", {"a": {"0": "1", "x": "2"}}),  # an explicit key makes it a dict
        (b"a[5]=x&a[]=y", {"a": {"5": "x", "6": "y"}}),  # [] takes PHP's next free index
        (b"a[10]=x&a[]=y", {"a": {"10": "x", "11": "y"}}),  # after a key of two digits too
        (b"a[][]=1&a[][]=2", {"a": [["1"], ["2"]]}),  # lists in a list are lists, not dicts
        (b"a[x]=1&a[]=2", {"a": {"x": "1", "0": "2"}}),
        (b"a[]=1&a[0]=2", {"a": {"0": "2"}}),
        (b"a[ ]=1", {"a": {" ": "1"}}),
        (b"a=1\r\n", {"a": "1\r\n"}),  # like PHP, no trimming
    ],
)
def test_php_semantics(body: bytes, expected: dict[str, Any]) -> None:
    assert parse_php_form(body) == expected


def test_key_order_is_kept_when_a_scalar_becomes_a_container() -> None:
    assert list(parse_php_form(b"a=1&b=2&a[x]=3")) == ["a", "b"]


def test_cp1251_percent_encoded_value() -> None:
    body = b"data[NAME]=" + quote("Мойка", encoding="windows-1251").encode()
    assert parse_php_form(body) == {"data": {"NAME": "Мойка"}}


def test_cp1251_raw_bytes_and_utf8_value_side_by_side() -> None:
    body = "a=Мойка&b=".encode("windows-1251") + quote("Ёлка").encode()
    assert parse_php_form(body) == {"a": "Мойка", "b": "Ёлка"}


def test_bytes_neither_utf8_nor_cp1251_are_replaced() -> None:
    # 0x98 is the one byte Python's cp1251 does not map.
    assert parse_php_form(b"a=%98x") == {"a": "\ufffdx"}


def test_depth_limit() -> None:
    ok = b"a" + b"[k]" * MAX_DEPTH + b"=v"
    value: Any = parse_php_form(ok)["a"]
    for _ in range(MAX_DEPTH):
        value = value["k"]
    assert value == "v"
    with pytest.raises(FormError, match="deeper than 32"):
        parse_php_form(b"a" + b"[k]" * (MAX_DEPTH + 1) + b"=v")


def test_field_limit() -> None:
    ok = b"&".join(b"f%d=1" % i for i in range(MAX_FIELDS))
    assert len(parse_php_form(ok)) == MAX_FIELDS
    with pytest.raises(FormError, match="1001 fields"):
        parse_php_form(ok + b"&extra=1")


@pytest.mark.parametrize("body", [b"\x1f\x8b\x08\x00gzip", b"a=1\x00", b"a=\x7f"])
def test_binary_body_is_refused(body: bytes) -> None:
    with pytest.raises(FormError, match="not form-urlencoded text"):
        parse_php_form(body)


def test_form_error_is_a_malformed_value_error() -> None:
    assert issubclass(FormError, MalformedError)
    assert issubclass(FormError, ValueError)


# --- properties -------------------------------------------------------------------------------

_KEY = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="[]"), min_size=1, max_size=8
)
_VALUE = st.text(st.characters(exclude_categories=["Cs"]), max_size=12).filter(
    lambda text: text != "undefined"
)
_SCALAR = st.one_of(st.none(), _VALUE)  # None travels as "undefined"
_LEAF = st.one_of(_SCALAR, st.lists(_SCALAR, min_size=1, max_size=4))
_TREE = st.recursive(
    _LEAF, lambda children: st.dictionaries(_KEY, children, min_size=1, max_size=4), max_leaves=20
)
_DOCUMENT = st.dictionaries(_KEY, _TREE, max_size=6)
_QUOTE = st.sampled_from([quote, quote_plus])


def _encode(
    obj: dict[str, Any], quoter: Callable[..., str], prefix: str | None = None
) -> list[str]:
    """Write a nested dict the way PHP's http_build_query does."""
    pairs: list[str] = []
    for key, value in obj.items():
        name = key if prefix is None else f"{prefix}[{key}]"
        if isinstance(value, dict):
            pairs += _encode(value, quoter, name)
            continue
        items, name = (value, name + "[]") if isinstance(value, list) else ([value], name)
        for item in items:
            text = "undefined" if item is None else item
            pairs.append(f"{quoter(name, safe='')}={quoter(text, safe='')}")
    return pairs


@given(_DOCUMENT, _QUOTE)
def test_round_trip(document: dict[str, Any], quoter: Callable[..., str]) -> None:
    body = "&".join(_encode(document, quoter)).encode("ascii")
    assert parse_php_form(body) == document


@given(st.lists(st.tuples(_KEY, _VALUE), max_size=8))
def test_flat_forms_agree_with_urllib(pairs: list[tuple[str, str]]) -> None:
    body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in pairs).encode()
    assert parse_php_form(body) == dict(parse_qsl(body.decode(), keep_blank_values=True))


def _only_form_values(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _only_form_values(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_only_form_values(v) for v in value)
    return value is None or isinstance(value, str)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_form_error(body: bytes) -> None:
    try:
        result = parse_php_form(body)
    except FormError:
        return
    assert _only_form_values(result)


@given(st.lists(st.sampled_from(["a", "b", "[", "]", "[]", "=", "&", "%5B", "x"]), max_size=30))
def test_bracket_soup_never_crashes(parts: list[str]) -> None:
    assert _only_form_values(parse_php_form("".join(parts).encode()))
