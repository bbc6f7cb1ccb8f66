"""1C authentication: HTTP Basic or Bearer as configured, one answer for every wrong credential."""

from __future__ import annotations

import base64

import pytest

from app.errors import NotFound, Unauthorized
from app.hubconfig import OneCSource
from app.sources.onec.verify import authenticate

BASIC = OneCSource.model_validate(
    {"auth": {"type": "basic", "username": "exchange", "password": "pa:ss word"}}
)
BEARER = OneCSource.model_validate({"auth": {"type": "bearer", "token": "t0ken-1c"}})


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def challenge(error: Unauthorized) -> str:
    """The WWW-Authenticate header of the 401 (header names are case-insensitive)."""
    [(name, value)] = error.headers.items()
    assert name.lower() == "www-authenticate"
    return value


@pytest.mark.parametrize(
    "header",
    [
        basic("exchange:pa:ss word"),
        "basic " + basic("exchange:pa:ss word")[6:],
        basic("exchange:pa:ss word") + "  ",
    ],
)
def test_basic_credentials_are_accepted(header: str) -> None:
    authenticate(BASIC, header)  # no exception


@pytest.mark.parametrize("header", ["Bearer t0ken-1c", "bearer t0ken-1c", "BEARER  t0ken-1c "])
def test_a_bearer_token_is_accepted(header: str) -> None:
    authenticate(BEARER, header)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        basic("exchange:wrong"),
        basic("exchange:pa:ss word ").replace("Basic", "Bearer"),
        "Bearer pa:ss word",
        "Basic not base64!",
        "Basic " + base64.b64encode(b"exchange:pa:ss word").decode()[:-2],  # bad padding
        "Basic",
        # Characters outside base64 are refused, not skipped over.
        basic("exchange:pa:ss word")[:10] + "*" + basic("exchange:pa:ss word")[10:],
        basic("Exchange:pa:ss word"),
    ],
)
def test_wrong_basic_credentials_get_one_answer(header: str | None) -> None:
    with pytest.raises(Unauthorized) as caught:
        authenticate(BASIC, header)
    assert caught.value.detail == "missing or wrong credentials"
    assert challenge(caught.value) == 'Basic realm="mmhub"'


@pytest.mark.parametrize(
    "header",
    [None, "Bearer t0ken-1", "Bearer T0KEN-1C", basic("t0ken-1c"), "t0ken-1c", "Token t0ken-1c"],
)
def test_wrong_bearer_credentials_get_one_answer(header: str | None) -> None:
    with pytest.raises(Unauthorized) as caught:
        authenticate(BEARER, header)
    assert caught.value.detail == "missing or wrong credentials"
    assert challenge(caught.value) == 'Bearer realm="mmhub"'


def test_without_a_1c_source_the_endpoint_does_not_exist() -> None:
    with pytest.raises(NotFound) as caught:
        authenticate(None, basic("exchange:pa:ss word"))
    assert caught.value.detail == "the 1C source is not configured"
