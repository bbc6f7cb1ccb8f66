"""decode_1c_json, parse_1c and parse_odata against the 1C fixtures and edge cases."""

from __future__ import annotations

from typing import Any

import pytest

from app.sources.errors import MalformedError, ShapeError
from app.sources.onec.decode import BodyError, decode_1c_json
from app.sources.onec.parse import XDTO_KINDS, OneCEvent, parse_1c, parse_odata
from tests.fixture_files import FIXTURES, fixture_bytes


def _fixture(name: str, charset: str | None = None) -> Any:
    return decode_1c_json(fixture_bytes(f"onec/{name}"), charset)


# --- fixtures ---------------------------------------------------------------------------------


def test_envelope_with_bom() -> None:
    assert fixture_bytes("onec/order-updated-with-bom.json").startswith(b"\xef\xbb\xbf")
    parsed = parse_1c(_fixture("order-updated-with-bom.json"))
    assert parsed == OneCEvent(
        type="Документ.ЗаказКлиента",
        event="updated",
        ref="b1c89da7-cb6a-11e6-aede-5404a6b4b8ed",
        data_version="AAAABAAAAAA=",
        data={
            "number": "УТ-00000123",
            "date": "2025-03-01T12:00:00",
            "posted": True,
            "deletion_mark": False,
            "counterparty_ref": "b1c89d93-cb6a-11e6-aede-5404a6b4b8ed",
            "items": [
                {
                    "nomenclature_ref": "f02ce7b3-e3b3-11eb-b4ad-000c29b45b09",
                    "qty": 2,
                    "price": 1500.0,
                }
            ],
        },
        occurred_at="2025-03-01T12:00:00",
    )
    assert parsed.event_type == "Документ.ЗаказКлиента.updated"
    assert parsed.subject == "Документ.ЗаказКлиента/b1c89da7-cb6a-11e6-aede-5404a6b4b8ed"


@pytest.mark.parametrize("charset", [None, "windows-1251", "cp1251", "utf-8", "bogus"])
def test_envelope_in_windows_1251(charset: str | None) -> None:
    parsed = parse_1c(_fixture("catalog-item-cp1251.json", charset))
    assert parsed == OneCEvent(
        type="Справочник.Номенклатура",
        event="updated",
        ref="f02ce7b3-e3b3-11eb-b4ad-000c29b45b09",
        data_version="AAAAAgAAAAA=",
        data={"code": "00-00000001", "description": "Мойка", "article": ""},
        occurred_at=None,
    )


def test_xdto_shipment() -> None:
    parsed = parse_1c(_fixture("xdto-shipment.json"))
    assert parsed == OneCEvent(
        type="Документ.РеализацияТоваровУслуг",
        event="updated",
        ref="5d1c7a1e-0c3b-11ef-9a4c-00155d01d112",
        data_version="AAAAAwAAAAA=",
        data={
            "Ref": "5d1c7a1e-0c3b-11ef-9a4c-00155d01d112",
            "DataVersion": "AAAAAwAAAAA=",
            "DeletionMark": False,
            "Date": "2025-02-11T09:30:00",
            "Number": "УТ-00000777",
            "Posted": True,
            "Товары": [
                {
                    "Номенклатура": "f02ce7b3-e3b3-11eb-b4ad-000c29b45b09",
                    "Количество": 1,
                    "Цена": 990,
                }
            ],
        },
        occurred_at="2025-02-11T09:30:00",
    )


def test_odata_document() -> None:
    parsed = parse_odata("Документ.ЗаказКлиента", _fixture("odata-style-document.json"))
    assert parsed == OneCEvent(
        type="Документ.ЗаказКлиента",
        event="updated",
        ref="80066011-d7c7-11ef-bac8-00155d01d112",
        data_version="AAAAAAAaKtk=",
        data={
            "Ref_Key": "80066011-d7c7-11ef-bac8-00155d01d112",
            "DataVersion": "AAAAAAAaKtk=",
            "Number": "УТ-00001004",
            "Date": "2025-01-21T10:15:36",
        },
        occurred_at="2025-01-21T10:15:36",
    )


def test_odata_catalog_item() -> None:
    parsed = parse_odata("Справочник.Номенклатура", _fixture("odata-style-catalog-item.json"))
    assert parsed.type == "Справочник.Номенклатура"
    assert parsed.event == "updated"
    assert parsed.ref == "f02ce7b3-e3b3-11eb-b4ad-000c29b45b09"
    assert parsed.data_version == "AAAAAQAAAAA="
    assert parsed.occurred_at is None
    assert parsed.data["Description"] == "Мойка"
    assert parsed.data["Артикул"] == ""
    assert parsed.data["Parent_Key"] == "00000000-0000-0000-0000-000000000000"


def test_every_onec_fixture_is_covered() -> None:
    assert {path.name for path in (FIXTURES / "onec").iterdir()} == {
        "order-updated-with-bom.json",
        "catalog-item-cp1251.json",
        "xdto-shipment.json",
        "odata-style-document.json",
        "odata-style-catalog-item.json",
        "odata-collection-contracts.json",  # a batch: tests/ingest/test_onec_batch.py
    }


# --- decoding ---------------------------------------------------------------------------------


def test_bom_wins_over_a_declared_charset() -> None:
    body = b"\xef\xbb\xbf" + '{"a": "Ж"}'.encode()
    assert decode_1c_json(body, "windows-1251") == {"a": "Ж"}


def test_declared_charset_is_used() -> None:
    assert decode_1c_json('{"a": "Ж"}'.encode("koi8-r"), "KOI8-R") == {"a": "Ж"}
    assert decode_1c_json('{"a": "Ж"}'.encode("utf-16"), '"utf-16"') == {"a": "Ж"}


@pytest.mark.parametrize("charset", ["unicode_escape", "utf-7", "rot13", "base64", "", "  "])
def test_dangerous_or_useless_charsets_are_ignored(charset: str) -> None:
    assert decode_1c_json(b'{"a": "\\\\u0416+AKM-"}', charset) == {"a": "\\u0416+AKM-"}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "empty"),
        (b"\xef\xbb\xbf  \n", "empty"),
        (b"{", "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
        (b"<html>500 Internal Server Error</html>", "not valid JSON"),
        (b"\x98\xff", "neither UTF-8 nor windows-1251"),
        (b"[" * 60, "not valid JSON"),
    ],
)
def test_body_errors(body: bytes, match: str) -> None:
    with pytest.raises(BodyError, match=match):
        decode_1c_json(body, None)


def test_error_message_quotes_at_most_80_characters() -> None:
    body = b'{"secret": "' + b"x" * 500 + b'"'
    with pytest.raises(BodyError) as caught:
        decode_1c_json(body, None)
    assert '{"secret": "' + "x" * 60 in str(caught.value)
    assert "x" * 81 not in str(caught.value)
    assert len(str(caught.value)) < 200
    assert caught.value.__cause__ is None


def test_body_error_is_malformed() -> None:
    assert issubclass(BodyError, MalformedError)
    assert issubclass(BodyError, ValueError)


def test_integers_beyond_64_bits_stay_exact() -> None:
    # orjson alone reads them as floats: 123456789012345678901234567890 -> 1.2345678901234568e+29.
    body = b'{"barcode": 123456789012345678901234567890, "debt": -9300000000000000001, "n": 7}'
    assert decode_1c_json(body, None) == {
        "barcode": 123456789012345678901234567890,
        "debt": -9300000000000000001,
        "n": 7,
    }


# --- shapes -----------------------------------------------------------------------------------

_REF = "b1c89da7-cb6a-11e6-aede-5404a6b4b8ed"


def test_envelope_defaults_and_normalisation() -> None:
    parsed = parse_1c({"type": " Документ.ЗаказКлиента ", "ref": _REF.upper()})
    assert parsed == OneCEvent(
        type="Документ.ЗаказКлиента",
        event="updated",
        ref=_REF,
        data_version=None,
        data={},
        occurred_at=None,
    )
    assert parse_1c({"type": "T", "ref": _REF, "event": None, "data": None}).event == "updated"
    assert parse_1c({"type": "T", "ref": _REF, "event": "deleted"}).event_type == "T.deleted"
    assert parse_1c({"type": "T", "ref": _REF, "data_version": ""}).data_version is None


def test_envelope_date_from_top_level_first() -> None:
    body = {"type": "T", "ref": _REF, "Date": "2025-01-01T00:00:00", "data": {"date": "x"}}
    assert parse_1c(body).occurred_at == "2025-01-01T00:00:00"


def test_empty_1c_date_means_no_date() -> None:
    body = {"type": "T", "ref": _REF, "data": {"date": "0001-01-01T00:00:00"}}
    assert parse_1c(body).occurred_at is None


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([], "must be a JSON object, not an array"),
        ("text", "not a string"),
        (None, "not null"),
        ({"ref": _REF}, "missing 'type'"),
        ({"type": 5, "ref": _REF}, "'type' must be a non-empty string, not a number"),
        ({"type": "  ", "ref": _REF}, "'type' must be a non-empty string, not a blank string"),
        ({"type": "T"}, "missing 'ref'"),
        ({"type": "T", "ref": 12}, "'ref' must be a GUID string, not a number"),
        ({"type": "T", "ref": "12"}, "'ref' must be a 36-character GUID"),
        ({"type": "T", "ref": _REF + "0"}, "36-character GUID"),
        ({"type": "T", "ref": "{" + _REF[1:-1] + "}"}, "36-character GUID"),
        ({"type": "T", "ref": _REF.replace("b", "g")}, "36-character GUID"),
        ({"type": "T", "ref": _REF, "event": ""}, "'event'"),
        ({"type": "T", "ref": _REF, "event": True}, "'event' must be .* not a boolean"),
        ({"type": "T", "ref": _REF, "data": [1]}, "'data' must be a JSON object"),
        ({"type": "T", "ref": _REF, "data_version": 3}, "'data_version' must be a string"),
    ],
)
def test_envelope_shape_errors(body: Any, match: str) -> None:
    with pytest.raises(ShapeError, match=match):
        parse_1c(body)


@pytest.mark.parametrize(("kind", "russian"), sorted(XDTO_KINDS.items()))
def test_xdto_kinds(kind: str, russian: str) -> None:
    parsed = parse_1c({"#type": f"jcfg:{kind}.Имя", "#value": {"Ref": _REF}})
    assert parsed.type == f"{russian}.Имя"


def test_xdto_unknown_kind_and_missing_prefix() -> None:
    assert parse_1c({"#type": "jcfg:ConstantValue.Имя", "#value": {"Ref": _REF}}).type == (
        "ConstantValue.Имя"
    )
    assert parse_1c({"#type": "CatalogObject.Имя", "#value": {"Ref": _REF}}).type == (
        "Справочник.Имя"
    )


def test_xdto_deletion_mark() -> None:
    body = {"#type": "jcfg:CatalogObject.X", "#value": {"Ref": _REF, "DeletionMark": True}}
    parsed = parse_1c(body)
    assert (parsed.event, parsed.event_type, parsed.subject) == (
        "deleted",
        "Справочник.X.deleted",
        f"Справочник.X/{_REF}",
    )


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"#type": "jcfg:DocumentObject", "#value": {"Ref": _REF}}, "'#type' must look like"),
        ({"#type": "jcfg:.X", "#value": {"Ref": _REF}}, "'#type' must look like"),
        ({"#type": 1, "#value": {"Ref": _REF}}, "'#type' must be a non-empty string"),
        ({"#type": "jcfg:DocumentObject.X"}, "'#value' must be a JSON object, not null"),
        ({"#type": "jcfg:DocumentObject.X", "#value": []}, "'#value' must be a JSON object"),
        ({"#type": "jcfg:DocumentObject.X", "#value": {}}, "missing '#value.Ref'"),
        ({"#type": "jcfg:DocumentObject.X", "#value": {"Ref": "x"}}, "'#value.Ref' must be"),
        (
            {"#type": "jcfg:DocumentObject.X", "#value": {"Ref": _REF, "DataVersion": 1}},
            "'#value.DataVersion' must be a string",
        ),
    ],
)
def test_xdto_shape_errors(body: Any, match: str) -> None:
    with pytest.raises(ShapeError, match=match):
        parse_1c(body)


def test_odata_ref_fallback_and_deletion() -> None:
    parsed = parse_odata("Справочник.X", {"Ref": _REF.upper(), "DeletionMark": True})
    assert (parsed.ref, parsed.event, parsed.data_version) == (_REF, "deleted", None)
    assert parse_odata("T", {"Ref_Key": None, "Ref": _REF}).ref == _REF
    assert parse_odata("T", {"Ref_Key": _REF, "Ref": "other"}).ref == _REF


@pytest.mark.parametrize(
    ("type_name", "body", "match"),
    [
        ("T", {}, r"missing 'Ref_Key' \(or 'Ref'\)"),
        ("T", {"Ref_Key": None, "Ref": None}, "missing 'Ref_Key'"),
        ("T", {"Ref_Key": "nope"}, "'Ref_Key' must be a 36-character GUID"),
        ("T", [], "must be a JSON object"),
        ("", {"Ref_Key": _REF}, "type in the URL must not be empty"),
        ("T", {"Ref_Key": _REF, "DataVersion": ["x"]}, "'DataVersion' must be a string"),
    ],
)
def test_odata_shape_errors(type_name: str, body: Any, match: str) -> None:
    with pytest.raises(ShapeError, match=match):
        parse_odata(type_name, body)


def test_shape_error_is_not_malformed() -> None:
    assert issubclass(ShapeError, ValueError)
    assert not issubclass(ShapeError, MalformedError)


@pytest.mark.parametrize("length", [79, 80, 81, 200])
def test_an_error_quotes_the_body_up_to_80_characters_and_marks_a_cut(length: int) -> None:
    text = "<" + "x" * (length - 1)  # not JSON
    with pytest.raises(BodyError) as caught:
        decode_1c_json(text.encode(), None)
    quoted = text if length <= 80 else text[:80] + "..."
    assert str(caught.value).endswith(f": {quoted!r}")


@pytest.mark.parametrize(
    ("type_name", "body", "message"),
    [
        ("", {"Ref_Key": _REF}, "the 1C object type in the URL must not be empty"),
        ("T", {}, "1C body is missing 'Ref_Key' (or 'Ref')"),
        ("T", [], "1C body must be a JSON object, not an array"),
        ("T", "x", "1C body must be a JSON object, not a string"),
    ],
)
def test_odata_shape_messages(type_name: str, body: Any, message: str) -> None:
    # The 422 reply's detail: what a 1C developer reads to fix the service.
    with pytest.raises(ShapeError) as caught:
        parse_odata(type_name, body)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"#type": "jcfg:DocumentObject.X", "#value": []},
            "'#value' must be a JSON object, not an array",
        ),
        ({"type": {}, "ref": _REF}, "'type' must be a non-empty string, not an object"),
        (
            {"#type": "jcfg:DocumentObject.X", "#value": {"Ref": _REF, "Date": "вчера"}},
            "'#value.Date' must be an ISO 8601 date in years 1-9999, got 'вчера'",
        ),
    ],
)
def test_shape_messages_name_the_field_and_what_came(body: Any, message: str) -> None:
    with pytest.raises(ShapeError) as caught:
        parse_1c(body)
    assert str(caught.value) == message


def test_xdto_kind_ends_at_the_first_dot() -> None:
    # A tabular section row's type has two dots: the kind is before the first, the rest is the name.
    body = {"#type": "jcfg:DocumentObject.Заказ.Товары", "#value": {"Ref": _REF}}
    assert parse_1c(body).type == "Документ.Заказ.Товары"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"type": "T", "ref": _REF, "data": [1]}, "'data' must be a JSON object, not an array"),
        (
            {"type": "T", "ref": _REF, "data_version": 3},
            "'data_version' must be a string, not a number",
        ),
        (
            {"type": "T", "ref": _REF, "date": "31.12.2024"},
            "'date' must be an ISO 8601 date in years 1-9999, got '31.12.2024'",
        ),
    ],
)
def test_envelope_messages_name_the_field_and_what_came(body: Any, message: str) -> None:
    with pytest.raises(ShapeError) as caught:
        parse_1c(body)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("dates", "occurred_at"),
    [
        ({"Date": 20241231}, None),  # not text: no date
        ({"Date": ""}, None),
        ({"Date": "0001-01-01T00:00:00", "date": "2024-05-01T10:00:00"}, "2024-05-01T10:00:00"),
        ({"Date": None, "date": "2024-05-01T10:00:00"}, "2024-05-01T10:00:00"),
    ],
)
def test_the_first_usable_date_is_taken(dates: dict[str, Any], occurred_at: str | None) -> None:
    assert parse_1c({"type": "T", "ref": _REF, **dates}).occurred_at == occurred_at


def test_a_date_in_the_free_form_data_that_is_not_one_is_only_not_used() -> None:
    body = {"type": "T", "ref": _REF, "data": {"Date": "31.12.2024", "number": "1"}}
    parsed = parse_1c(body)
    assert (parsed.occurred_at, parsed.data) == (None, {"Date": "31.12.2024", "number": "1"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"  ", "body is empty"),
        (b"{", "body is not valid JSON (unexpected end of data at line 1 column 2): '{'"),
    ],
)
def test_body_error_messages(body: bytes, message: str) -> None:
    with pytest.raises(BodyError) as caught:
        decode_1c_json(body, None)
    assert str(caught.value) == message


def test_a_quoted_declared_charset_is_used() -> None:
    body = '{"name": "Привет"}'.encode("koi8-r")  # neither UTF-8 nor the same in windows-1251
    assert decode_1c_json(body, '"koi8-r"') == {"name": "Привет"}
    assert decode_1c_json(body, "'koi8-r'") == {"name": "Привет"}


def test_nan_is_refused() -> None:
    with pytest.raises(MalformedError, match="not valid JSON"):
        decode_1c_json(b'{"a": NaN, "n": 12345678901234567890}', None)


def test_in_the_free_form_data_a_usable_date_after_an_unusable_one_is_taken() -> None:
    body = {"type": "T", "ref": _REF, "data": {"Date": "31.12.2024", "date": "2024-05-01T10:00:00"}}
    assert parse_1c(body).occurred_at == "2024-05-01T10:00:00"
