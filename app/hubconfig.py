"""The YAML part of the configuration: sources, targets, routes and the retry policy.

Secrets are `SecretStr` so they never print; `${VAR}` references are expanded by the settings loader
before these models see the values.
"""

from __future__ import annotations

import fnmatch
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from app.durations import Duration

SourceName = Literal["bitrix24", "onec"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BasicAuth(_Model):
    type: Literal["basic"]
    username: str
    password: SecretStr


class BearerAuth(_Model):
    type: Literal["bearer"]
    token: SecretStr


Auth = Annotated[BasicAuth | BearerAuth, Field(discriminator="type")]


class Portal(_Model):
    """One Bitrix24 portal; a request is matched by `auth[member_id]`, else `auth[domain]`."""

    member_id: str | None = None
    domain: str | None = None
    application_token: SecretStr

    @model_validator(mode="after")
    def _needs_identity(self) -> Portal:
        if not self.member_id and not self.domain:
            raise ValueError("a portal needs member_id or domain")
        return self


class Bitrix24Source(_Model):
    portals: list[Portal] = Field(default_factory=list)


class OneCSource(_Model):
    auth: Auth


class Sources(_Model):
    bitrix24: Bitrix24Source | None = None
    onec: OneCSource | None = None


class RetryPolicy(_Model):
    """Delays between attempts; after the last one the delivery is dead."""

    schedule: list[Duration] = Field(
        default_factory=lambda: [
            timedelta(minutes=1),
            timedelta(minutes=5),
            timedelta(minutes=15),
            timedelta(hours=1),
            timedelta(hours=3),
            timedelta(hours=12),
        ]
    )
    timeout: Duration = timedelta(seconds=30)
    jitter: float = Field(default=0.2, ge=0, le=1)
    # A target may ask for a pause with Retry-After; we honour it only within these bounds.
    retry_after_max: Duration = timedelta(hours=1)


class RateLimit(_Model):
    per_second: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)


class CircuitBreaker(_Model):
    enabled: bool = True
    failure_ratio: float = Field(default=0.5, gt=0, le=1)
    window: Duration = timedelta(seconds=60)
    min_attempts: int = Field(default=10, ge=1)
    open_for: Duration = timedelta(seconds=30)


class _TargetBase(_Model):
    retry: RetryPolicy | None = None
    timeout: Duration | None = None
    rate_limit: RateLimit | None = None
    concurrency: int = Field(default=16, ge=1, le=512)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    allow_private: bool = False


class OneCTarget(_TargetBase):
    kind: Literal["onec"]
    url: str
    auth: Auth | None = None


class WalkingWarehouseTarget(_TargetBase):
    kind: Literal["walking_warehouse"]
    url: str
    auth: Auth | None = None


class HttpTarget(_TargetBase):
    kind: Literal["http"]
    url: str
    secret: SecretStr | None = None
    auth: Auth | None = None


class Bitrix24Target(_TargetBase):
    kind: Literal["bitrix24"]
    webhook_url: SecretStr  # the URL embeds the webhook code, a secret
    # Bitrix24 REST allows ~2 requests/s per portal with a burst of 50 (leaky bucket).
    rate_limit: RateLimit | None = RateLimit(per_second=2, burst=50)

    @field_validator("webhook_url")
    @classmethod
    def _trailing_slash(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        return value if url.endswith("/") else SecretStr(url + "/")


Target = Annotated[
    OneCTarget | WalkingWarehouseTarget | HttpTarget | Bitrix24Target,
    Field(discriminator="kind"),
]


class RouteTarget(_Model):
    target: str
    method: str | None = None
    params: dict[str, Any] | None = None


class RouteFrom(_Model):
    source: SourceName
    events: list[str] = Field(default_factory=lambda: ["*"])


class Route(_Model):
    name: str
    from_: RouteFrom = Field(alias="from")
    to: list[RouteTarget]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("to", mode="before")
    @classmethod
    def _plain_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"target": item} if isinstance(item, str) else item for item in value]
        return value

    def matches(self, source: str, event_type: str) -> bool:
        """True when this route takes events of this source and type (glob patterns)."""
        return self.from_.source == source and any(
            fnmatch.fnmatchcase(event_type, pattern) for pattern in self.from_.events
        )


class AdminToken(_Model):
    """A bearer token for /admin/v1, kept only as its SHA-256 (`mmhub admin-token` makes one)."""

    name: str
    role: Literal["viewer", "operator"]
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Admin(_Model):
    tokens: list[AdminToken] = Field(default_factory=list)


class Pii(_Model):
    """Personal data (phones, e-mails) in what readers are shown; targets always get it as sent."""

    mask_for_viewers: bool = True


class HubConfig(_Model):
    admin: Admin = Field(default_factory=Admin)
    pii: Pii = Field(default_factory=Pii)
    sources: Sources = Field(default_factory=Sources)
    targets: dict[str, Target] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    @model_validator(mode="after")
    def _routes_name_known_targets(self) -> HubConfig:
        for i, route in enumerate(self.routes):
            for j, hop in enumerate(route.to):
                where = f"routes.{i}.to.{j}.target"
                target = self.targets.get(hop.target)
                if target is None:
                    known = ", ".join(sorted(self.targets)) or "none"
                    raise ValueError(f"{where}: unknown target {hop.target!r} (known: {known})")
                if isinstance(target, Bitrix24Target) and not hop.method:
                    raise ValueError(f"{where}: bitrix24 target {hop.target!r} needs a method")
        names = [route.name for route in self.routes]
        if len(names) != len(set(names)):
            raise ValueError("routes: route names must be unique")
        return self

    def retry_for(self, target: str) -> RetryPolicy:
        """The target's own retry policy, else the default one, with the target's timeout."""
        spec = self.targets[target]
        policy = spec.retry or self.retry
        if spec.timeout is not None:
            policy = policy.model_copy(update={"timeout": spec.timeout})
        return policy
