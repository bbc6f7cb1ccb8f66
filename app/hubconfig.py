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


class RateLimit(_Model):
    per_second: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)


# Bitrix24 REST allows ~2 requests/s per portal with a burst of 50 (leaky bucket, limits.md).
BITRIX24_RATE_LIMIT = RateLimit(per_second=2, burst=50)


def _with_slash(value: SecretStr) -> SecretStr:
    url = value.get_secret_value()
    return value if url.endswith("/") else SecretStr(url + "/")


class PortalRest(_Model):
    """A portal's REST API through an inbound webhook, for enrichment and reconciliation."""

    webhook_url: SecretStr  # embeds the webhook code, a secret
    rate_limit: RateLimit = BITRIX24_RATE_LIMIT
    allow_private: bool = False

    _trailing_slash = field_validator("webhook_url")(_with_slash)


class PortalApp(_Model):
    """The hub as a Bitrix24 local application: OAuth 2.0 tokens come with ONAPPINSTALL and are kept encrypted."""

    client_id: str
    client_secret: SecretStr
    # The authorization server that renews tokens (Bitrix24's own, unless a test or a proxy says otherwise).
    oauth_url: str = "https://oauth.bitrix.info/oauth/token/"
    # An oauth_url on loopback or a private range (tests, a local proxy).
    allow_private: bool = False
    # The hub's public address of POST /webhooks/bitrix24, for `mmhub bitrix24 bind` (online handlers).
    handler_url: str | None = None


class PortalOffline(_Model):
    """Pull the portal's offline event queue (application mode): nothing changed in the portal is lost."""

    # The source key: the hub's own writes (made with it) raise no entry in this queue.
    auth_connector: str = "mmhub"
    poll_every: Duration = timedelta(seconds=30)


ReconciledEntity = Literal["deal", "lead", "contact", "company"]
RECONCILED: tuple[ReconciledEntity, ...] = ("deal", "lead", "contact", "company")


class PortalReconcile(_Model):
    """Ask the portal which records changed, and create the events Bitrix24 never sent (`mmhub reconcile`)."""

    every: Duration = timedelta(minutes=15)
    entities: list[ReconciledEntity] = Field(default_factory=lambda: list(RECONCILED))


class Portal(_Model):
    """One Bitrix24 portal; a request is matched by `auth[member_id]`, else `auth[domain]`.

    During a token rotation `application_tokens: [new, old]` accepts either, so no event is refused in the gap.
    A portal with `app` may name no token: the one its ONAPPINSTALL brought is kept (encrypted) and accepted.
    """

    member_id: str | None = None
    domain: str | None = None
    application_token: SecretStr | None = None
    application_tokens: list[SecretStr] = Field(default_factory=list)
    app: PortalApp | None = None
    offline: PortalOffline | None = None
    # The Bitrix24 user the hub's REST writes are made as: an enriched event whose record this user changed last,
    # right after the hub wrote to it, is the hub's own echo and ends `suppressed`.
    echo_user_id: int | None = None
    reconcile: PortalReconcile | None = None
    rest: PortalRest | None = None

    @model_validator(mode="after")
    def _needs_identity(self) -> Portal:
        if not self.member_id and not self.domain:
            raise ValueError("a portal needs member_id or domain")
        if not self.tokens() and self.app is None:
            raise ValueError("a portal needs application_token, application_tokens or app")
        if self.reconcile is not None and self.rest is None and self.app is None:
            raise ValueError(
                "reconcile reads the portal's REST API: add `rest` (or `app`) to the portal"
            )
        if self.offline is not None and self.app is None:
            raise ValueError("offline events need application mode: add `app` to the portal")
        if self.app is not None and not self.member_id:
            raise ValueError(
                "a portal with app needs member_id (its installation is kept by member_id)"
            )
        return self

    def tokens(self) -> list[str]:
        """Every token this portal accepts (empty values are no token)."""
        given = [self.application_token, *self.application_tokens]
        return [t.get_secret_value() for t in given if t is not None and t.get_secret_value()]


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
    # An inbound webhook URL (it embeds the webhook code, a secret), or `portal`: the member_id of an application
    # portal, whose installed tokens make the call with the portal's offline `auth_connector` (no echo).
    webhook_url: SecretStr | None = None
    portal: str | None = None
    rate_limit: RateLimit | None = BITRIX24_RATE_LIMIT

    _trailing_slash = field_validator("webhook_url")(
        lambda value: None if value is None else _with_slash(value)
    )

    @model_validator(mode="after")
    def _one_way_in(self) -> Bitrix24Target:
        if (self.webhook_url is None) == (self.portal is None):
            raise ValueError("a bitrix24 target needs webhook_url or portal (one of them)")
        return self


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
    # latest: of the waiting deliveries of one subject, only the newest is sent; the others end superseded.
    coalesce: Literal["latest"] | None = None
    # (v2) data.record = the record read from the portal's REST API at delivery time
    enrich: bool = False

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


class Retention(_Model):
    """`retention: {older_than: 30d, every: 1h}`: a relay purges on this schedule (one at a time)."""

    older_than: Duration
    every: Duration = timedelta(hours=1)
    include_dead: bool = False


class HubConfig(_Model):
    admin: Admin = Field(default_factory=Admin)
    pii: Pii = Field(default_factory=Pii)
    sources: Sources = Field(default_factory=Sources)
    targets: dict[str, Target] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    retention: Retention | None = None

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
            if route.enrich and route.from_.source != "bitrix24":
                raise ValueError(f"routes.{i}.enrich: only routes from bitrix24 can be enriched")
        for name, spec in self.targets.items():
            if isinstance(spec, Bitrix24Target) and spec.portal is not None:
                portal = self.portal(spec.portal)
                if portal is None or portal.app is None:
                    raise ValueError(
                        f"targets.{name}.portal: no application portal {spec.portal!r}"
                    )
        names = [route.name for route in self.routes]
        if len(names) != len(set(names)):
            raise ValueError("routes: route names must be unique")
        return self

    def portal(self, member_id: str | None) -> Portal | None:
        """The configured Bitrix24 portal with this member_id."""
        portals = self.sources.bitrix24.portals if self.sources.bitrix24 else []
        return next((p for p in portals if member_id and p.member_id == member_id), None)

    def rest_base(self, spec: Bitrix24Target) -> str:
        """Where a bitrix24 target's calls go: its webhook URL, or its application portal's REST address."""
        if spec.webhook_url is not None:
            return spec.webhook_url.get_secret_value()
        portal = self.portal(spec.portal)
        return f"https://{portal.domain if portal and portal.domain else 'portal.invalid'}/rest/"

    def retry_for(self, target: str) -> RetryPolicy:
        """The target's own retry policy, else the default one, with the target's timeout."""
        spec = self.targets[target]
        policy = spec.retry or self.retry
        if spec.timeout is not None:
            policy = policy.model_copy(update={"timeout": spec.timeout})
        return policy
