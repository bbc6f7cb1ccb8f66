"""One settings object: `MMHUB_` environment, `.env`, and the YAML hub configuration.

The YAML file (`MMHUB_CONFIG`, default `mmhub.yaml`) holds sources, targets and routes; secrets in it
are `${VAR}` references read from the environment (or `.env`), so the file itself can be committed.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.bitrix24.cipher import TokenCipher
from app.durations import Duration
from app.hubconfig import HubConfig

log = logging.getLogger(__name__)

# libyaml's safe loader when PyYAML was built with it (the wheels are): the same documents, parsed
# several times faster than by the pure-Python one.
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_REF = re.compile(r"__mmhub_ref_(\d+)__")
# Keys whose values are secrets: a literal value there means a secret was committed to the file.
_SECRET_KEYS = {
    "password",
    "token",
    "application_token",
    "application_tokens",
    "secret",
    "webhook_url",
}


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MMHUB_", env_file=".env", extra="ignore")

    database_url: str | None = None
    redis_url: str | None = None
    config: Path = Path("mmhub.yaml")
    max_body_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    # A body still arriving after this long is cut off with 408 (a trickling client holds a worker).
    body_timeout: Duration = timedelta(seconds=30)
    # Rows in one 1C batch (OData collection or JSON array of envelopes), all in one transaction.
    max_batch_rows: int = Field(default=500, ge=1)
    state_dir: Path = Path(".mmhub")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "INFO"
    # Group commit: how many concurrent ingest requests share one transaction at most.
    ingest_batch_max: int = Field(default=256, ge=1)
    # How long a commit that would hold one request waits for others to share it (0: never); it
    # waits only while such waits gather others (app.ingest.committer.CommitDelay).
    ingest_commit_delay: Duration = timedelta(milliseconds=5)
    # The API's database pool; ingest uses a few connections for its group commits.
    db_pool_size: int = Field(default=10, ge=1)
    # Dispatch: a claimed delivery whose worker vanished is due again after this long.
    visibility_timeout: Duration = timedelta(seconds=60)
    # The relay wakes on NOTIFY; this poll catches retries that fall due and jobs Redis lost.
    relay_poll_interval: Duration = timedelta(seconds=1)
    # One drain job delivers for at most this long, then hands over so other targets get a turn.
    drain_budget: Duration = timedelta(seconds=20)
    queue_name: str = "mmhub"
    # Relay and worker serve Prometheus metrics on this port when set (the API serves /metrics).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # Fernet keys (newest first, comma-separated) that encrypt Bitrix24 OAuth tokens at rest; needed with `app`.
    token_keys: SecretStr | None = None
    # How often the relay reads backlog, lag, pauses and breakers into its gauges.
    gauges_interval: Duration = timedelta(seconds=5)
    # What GET /health reports: the image sets them from its build arguments; a checkout reads git.
    git_revision: str | None = None
    build_time: str | None = None
    # The outage spool (app/ingest/spool.py): where events wait while PostgreSQL is down
    # (default STATE_DIR/spool) and how many bytes of them one API process keeps at most (0 = off).
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    hub: HubConfig = Field(default_factory=HubConfig)

    @property
    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError("MMHUB_DATABASE_URL: not set and no embedded server was started")
        return self.database_url

    def token_cipher(self) -> TokenCipher | None:
        """The cipher for stored Bitrix24 tokens; None when no portal runs as an application."""
        portals = self.hub.sources.bitrix24.portals if self.hub.sources.bitrix24 else []
        if not any(portal.app for portal in portals):
            return None
        if self.token_keys is None:
            raise ConfigError(
                "MMHUB_TOKEN_KEYS: required when a Bitrix24 portal has `app` (mmhub bitrix24 new-key)"
            )
        try:
            return TokenCipher(self.token_keys.get_secret_value())
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.state_dir / "spool"

    @property
    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise ConfigError("MMHUB_REDIS_URL: not set and no embedded server was started")
        return self.redis_url


def load_settings(**overrides: Any) -> Settings:
    """Read the environment, `.env` and the YAML file; raise ConfigError naming the bad key."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, prefix="MMHUB_")) from None
    if "hub" in overrides:
        return settings
    hub = load_hub_config(settings.config, explicit="MMHUB_CONFIG" in os.environ)
    settings = settings.model_copy(update={"hub": hub})
    settings.token_cipher()  # an application portal without usable keys stops the start here, in one line
    return settings


def load_hub_config(path: Path, *, explicit: bool = True) -> HubConfig:
    """Parse and validate the YAML file; a missing default file means an empty hub."""
    if not path.exists():
        if explicit:
            raise ConfigError(f"MMHUB_CONFIG: file not found: {path}")
        log.warning("no configuration file at %s: no sources, targets or routes", path)
        return HubConfig()
    # `${VAR}` is not valid YAML inside a flow mapping (`{password: ${PW}}`), so each reference is
    # swapped for an inert token before parsing and evaluated afterwards, in place: a value from
    # the environment can never change the structure of the file.
    references: list[str] = []

    def park(match: re.Match[str]) -> str:
        references.append(match.group(0))
        return f"__mmhub_ref_{len(references) - 1}__"

    if path.is_dir():
        # What Docker mounts when ./mmhub.yaml did not exist on the host.
        raise ConfigError(f"MMHUB_CONFIG: {path} is a directory, not a YAML file")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"MMHUB_CONFIG: cannot read {path}: {reason}") from None
    try:
        parked = _VAR.sub(park, source)
        raw = yaml.load(parked, Loader=_YamlLoader) or {}  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    env = {**{k: v for k, v in dotenv_values(".env").items() if v is not None}, **os.environ}
    expanded = _expand(raw, env, references, path="")
    try:
        return HubConfig.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None


def _expand(node: Any, env: dict[str, str], references: list[str], path: str) -> Any:
    """Evaluate `${VAR}` / `${VAR:-default}` everywhere; an unset variable is an error naming the key."""
    if isinstance(node, dict):
        return {
            k: _expand(v, env, references, f"{path}.{k}" if path else str(k))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_expand(v, env, references, f"{path}.{i}") for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node
    if _SECRET_KEYS.intersection(path.split(".")[-2:]) and not _REF.search(node):
        log.warning("%s: a literal secret in the YAML file; use ${VAR} from the environment", path)

    def substitute(match: re.Match[str]) -> str:
        reference = _VAR.fullmatch(references[int(match.group(1))])
        assert reference is not None
        name, default = reference.group(1), reference.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _REF.sub(substitute, node)


def _describe(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming its key the way the user wrote it."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        if prefix and len(error["loc"]) == 1:
            key = prefix + key.upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{key}: {message}" if key else message)
    return "; ".join(lines)
