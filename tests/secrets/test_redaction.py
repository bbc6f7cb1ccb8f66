"""Secrets by key name (English and Russian, any case) and by value shape, in payloads, raw bodies and headers."""

from __future__ import annotations

import logging

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.ingest.scrub import mask_secrets, safe_headers
from app.logs import setup_logging
from app.secrets import (
    MASK,
    credentials_in,
    is_secret_key,
    mask_credentials,
    redact,
    scrub,
    secret_values,
)

BASIC = "Basic ZXhjaGFuZ2U6czNjcmV0"  # exchange:s3cret
BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3In0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "key",
    [
        "apikey",
        "APIKEY",
        "ApiKey",
        "x-api-key",
        "api_key",
        "accessToken",
        "clientSecret",
        "db_password",
        "Пароль",
        "ПАРОЛЬ",
        "пароль",
        "ПарольПользователя",
        "Токен",
        "ТокенДоступа",
        "токен_доступа",
        "Секрет",
        "СекретныйКлюч",
        "КлючДоступа",
        "КлючAPI",
        "data[FIELDS][UF_CRM_PASSWORD]",
        "credentials",
    ],
)
def test_secret_names_in_any_case_and_in_russian(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    ["Секретарь", "Ключ", "КлючСтроки", "Номер", "TITLE", "tokens", "token_type_hint", "keyboard"],
)
def test_ordinary_names_are_kept(key: str) -> None:
    assert not is_secret_key(key)


def test_russian_secret_keys_are_removed_at_any_depth() -> None:
    data = {"Номер": "00-000123", "Контрагент": {"Пароль": "qwerty123", "ТокенДоступа": "abc"}}
    assert redact(data) == {"Номер": "00-000123", "Контрагент": {}}


@pytest.mark.parametrize(
    "credential",
    [BASIC, BEARER, "bearer 0123456789abcdef", "BASIC dXNlcjpwYXNz", "BEARER 0123456789abcdef"],
)
def test_credential_values_are_masked_wherever_they_stand(credential: str) -> None:
    data = {"comment": f"call with Authorization: {credential} please", "h": credential}
    redacted = redact(data)
    scheme = credential.split()[0]
    assert redacted == {
        "comment": f"call with Authorization: {scheme} {MASK} please",
        "h": f"{scheme} {MASK}",
    }
    assert credential.split()[1] in secret_values(data)


@pytest.mark.parametrize("text", ["Basic information", "Bearer of news", "basic plan 2", "Bearer"])
def test_plain_words_after_basic_or_bearer_stay(text: str) -> None:
    assert mask_credentials(text) == text
    assert credentials_in(text) == []


@pytest.mark.parametrize(
    "header",
    [
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "Set-Cookie",
        "X-Api-Key",
        "X-Auth-Token",
        "webhook-signature",
        "X-Hub-Secret",
        "X-Password",
    ],
)
def test_credential_headers_are_never_stored(header: str) -> None:
    stored = safe_headers(
        {header: "value-1234567", "Content-Type": "text/plain", "X-Request-Id": "r1"}
    )
    assert stored == {"content-type": "text/plain", "x-request-id": "r1"}


def test_a_credential_in_an_ordinary_header_is_masked() -> None:
    assert safe_headers({"X-Forwarded-Note": BEARER}) == {"x-forwarded-note": f"Bearer {MASK}"}


@pytest.mark.parametrize(
    "encoded",
    [
        b"t0k%2Fen%2Bvalue%3D",  # upper-case percent-encoding
        b"t0k%2fen%2bvalue%3d",  # lower-case percent-encoding
        b"t0k/en%2Bvalue=",  # a mix
        b"t0k/en+value=",  # as sent
    ],
)
def test_percent_encoded_secrets_are_masked_in_the_raw_body(encoded: bytes) -> None:
    raw = b"a=1&auth%5Bapplication_token%5D=" + encoded + b"&b=2"
    assert (
        mask_secrets(raw, ["t0k/en+value="])
        == b"a=1&auth%5Bapplication_token%5D=" + MASK.encode() + b"&b=2"
    )


def test_spaces_encoded_as_plus_or_percent_are_masked() -> None:
    for form in (b"my+pass+word", b"my%20pass%20word", b"my pass word"):
        assert mask_secrets(b"p=" + form, ["my pass word"]) == b"p=" + MASK.encode()


def test_cyrillic_secret_is_masked_when_percent_encoded() -> None:
    secret = "пароль-1С"
    encoded = "".join(f"%{b:02x}" for b in secret.encode()).encode()
    assert mask_secrets(b"x=" + encoded, [secret]) == b"x=" + MASK.encode()


def test_log_lines_never_carry_a_credential(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO")
    logging.getLogger("mmhub.test").warning("target said: header was %s", BEARER)
    err = capsys.readouterr().err
    assert "eyJhbGciOiJIUzI1NiJ9" not in err
    assert f"Bearer {MASK}" in err


@pytest.mark.parametrize(
    ("token", "masked"),
    [
        ("abcdefgHijklmN", True),  # two capitals: a token, not a word
        ("abcdefgHijklmn", False),  # one capital: a word (as in "Basic Information")
        ("abcdefghijklmn+", True),  # token68 punctuation
        ("abcdefgh1", True),  # a digit
    ],
)
def test_a_value_after_a_scheme_is_a_credential_by_its_shape(token: str, masked: bool) -> None:
    text = f"Bearer {token}"
    assert mask_credentials(text) == (f"Bearer {MASK}" if masked else text)
    assert credentials_in(text) == ([token] if masked else [])


def test_secrets_of_four_characters_or_more_are_masked_in_the_raw_body() -> None:
    raw = b"a=abc&pin=4321&password=longer-secret"
    masked = mask_secrets(raw, ["abc", "4321", "longer-secret"])  # 3 characters: would mangle bytes
    assert b"4321" not in masked
    assert b"longer-secret" not in masked
    assert masked.startswith(b"a=abc&")


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.sampled_from(["Bearer dXNlcjpwYXNzd29yZA==", "Basic Information", "tok", "x"])
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(
        st.sampled_from(["token", "auth[access_token]", "ПарольПользователя", "id", "data", "v"])
        | st.text(max_size=6),
        inner,
        max_size=4,
    ),
    max_leaves=20,
)


@given(_JSON)
@example({"token": {"id": "abc", "n": 5}})  # ordinary keys inside a secret: all of it is secret
def test_scrub_is_redact_and_secret_values_in_one_walk(value: object) -> None:
    assert scrub(value) == (redact(value), secret_values(value))


def test_everything_under_a_secret_key_is_a_secret_whatever_its_own_keys() -> None:
    payload = {"token": {"id": "abc", "n": 5, "list": ["q", {"deep": "zzzz"}]}, "v": "ok"}
    stored, secrets = scrub(payload)
    assert stored == {"v": "ok"}
    assert sorted(secrets) == ["5", "abc", "q", "zzzz"]
