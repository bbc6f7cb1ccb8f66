"""ORM models: events, their deliveries (the outbox) and every delivery attempt.

Constraint names follow one convention so Alembic migrations stay stable and readable.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    RETRYING = "retrying"
    DEAD = "dead"
    HELD = "held"
    CANCELLED = "cancelled"
    # coalesce: latest: a newer waiting delivery of the same subject and route carried the state instead.
    SUPERSEDED = "superseded"
    # echo_user_id: the change was the hub's own write coming back.
    SUPPRESSED = "suppressed"


# Deliveries still on their way: they hold later deliveries with the same ordering key.
ACTIVE_STATUSES = (
    DeliveryStatus.PENDING,
    DeliveryStatus.DELIVERING,
    DeliveryStatus.RETRYING,
    DeliveryStatus.HELD,
)
_STATUS_LIST = ", ".join(f"'{s.value}'" for s in DeliveryStatus)
_ACTIVE_LIST = ", ".join(f"'{s.value}'" for s in ACTIVE_STATUSES)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "dedup_key"),
        Index(None, "subject"),
        Index(None, "type", "received_at"),
        Index(None, "received_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    dedup_key: Mapped[str] = mapped_column(Text)
    # For Bitrix24 the portal domain, for 1C empty: part of the CloudEvents `source` URN.
    origin: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    request_id: Mapped[str | None] = mapped_column(Text)
    # W3C traceparent of the ingest request's span: delivery attempts join that trace.
    traceparent: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # The body as received, with secret values masked.
    raw_body: Mapped[bytes] = mapped_column(LargeBinary)
    # SHA-256 of the canonical payload, kept only for events sent with an Idempotency-Key: the same
    # key with another payload is a conflict (409). None on rows stored before migration 0004.
    payload_hash: Mapped[bytes | None] = mapped_column(LargeBinary)

    deliveries: Mapped[list[Delivery]] = relationship(back_populates="event")


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_LIST})", name="status"),
        Index(None, "event_id"),
        Index(None, "status", "target", "created_at"),
        # The relay's and worker's question: what is due now for this target?
        Index(
            "ix_deliveries_due",
            "target",
            "next_attempt_at",
            postgresql_where=text("status IN ('pending', 'retrying', 'delivering')"),
        ),
        # Ordering: is there an earlier active delivery with the same key?
        Index(
            "ix_deliveries_active_order",
            "target",
            "ordering_key",
            "seq",
            postgresql_where=text(f"status IN ({_ACTIVE_LIST})"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    # Acceptance order, for per-(target, subject) ordering.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True))
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    route: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=DeliveryStatus.PENDING.value)
    attempt_count: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    ordering_key: Mapped[str] = mapped_column(Text)
    # While `delivering`: when the claim expires and the delivery is due again (visibility timeout).
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Who holds the claim: a worker records its result only while its token is still there.
    claim_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    # Support: the next attempt was asked for by an operator (recorded as manual) ...
    manual_next: Mapped[bool] = mapped_column(Boolean, server_default="false")
    # ... and restarts the retry schedule: attempts before this count do not use it up.
    retry_offset: Mapped[int] = mapped_column(Integer, server_default="0")
    # Edit-and-replay: the corrected data sent instead of the event's (the event keeps the original).
    payload_override: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # superseded: the delivery that carried this one's state (coalesce: latest).
    superseded_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    event: Mapped[Event] = relationship(back_populates="deliveries")
    attempts: Mapped[list[DeliveryAttempt]] = relationship(
        back_populates="delivery", order_by="DeliveryAttempt.number"
    )


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"
    __table_args__ = (
        Index(None, "delivery_id", "number"),
        Index(None, "target", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(Text)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[int] = mapped_column(Integer)
    http_status: Mapped[int | None] = mapped_column(Integer)
    # None on success; else e.g. `timeout`, `connect`, `http_503`, `b24:QUERY_LIMIT_EXCEEDED`.
    error_class: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text)
    manual: Mapped[bool] = mapped_column(Boolean, server_default="false")

    delivery: Mapped[Delivery] = relationship(back_populates="attempts")


class TargetState(Base):
    """Per-target switches every worker honours: an operator's pause, the circuit breaker."""

    __tablename__ = "target_states"

    target: Mapped[str] = mapped_column(Text, primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, server_default="false")
    paused_reason: Mapped[str | None] = mapped_column(Text)
    paused_by: Mapped[str | None] = mapped_column(Text)
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set while the breaker is not closed: open until then, half-open (one probe) after it.
    breaker_open_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Failures before this moment no longer count (the breaker closed then).
    breaker_reset_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AuditEntry(Base):
    """Who changed what through the admin API or the CLI, why, and how much."""

    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    target: Mapped[str | None] = mapped_column(Text)
    delivery_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    filter: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    count: Mapped[int] = mapped_column(Integer, server_default="0")
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class ReplayJob(Base):
    """A bulk replay worked through in batches, with progress and cancel."""

    __tablename__ = "replay_jobs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    filter: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # running → finished | cancelled
    status: Mapped[str] = mapped_column(Text, server_default="running")
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, server_default="0")
    # Keyset over deliveries.seq: work is (cursor, upto]; rows accepted later are not touched.
    cursor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    upto: Mapped[int] = mapped_column(BigInteger)


class Bitrix24Install(Base):
    """The hub installed as a local application on a portal: its OAuth 2.0 tokens, encrypted at rest.

    Only ciphertext is stored (app.bitrix24.cipher); uninstall revokes (the tokens are wiped, the row stays).
    """

    __tablename__ = "bitrix24_installs"

    member_id: Mapped[str] = mapped_column(Text, primary_key=True)
    domain: Mapped[str | None] = mapped_column(Text)
    client_endpoint: Mapped[str] = mapped_column(Text)
    scope: Mapped[str | None] = mapped_column(Text)
    application_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    access_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    refresh_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    installed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Bitrix24OfflineState(Base):
    """A portal's offline pull in progress: the `process_id` of the batch read and not yet cleared.

    Kept so that a relay that died between reading a batch and clearing it reads the same batch again (Bitrix24 hides
    a reserved batch from every other read); its events are then duplicates, and nothing is created twice.
    """

    __tablename__ = "bitrix24_offline"

    member_id: Mapped[str] = mapped_column(Text, primary_key=True)
    process_id: Mapped[str | None] = mapped_column(Text)
    pulled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Bitrix24Write(Base):
    """A write the hub made to a Bitrix24 record (a `bitrix24` target's delivered call): what echo suppression
    matches the record's next change against (`echo_user_id`)."""

    __tablename__ = "bitrix24_writes"
    __table_args__ = (Index(None, "portal", "subject", "written_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    portal: Mapped[str] = mapped_column(
        Text
    )  # the portal's host (app.bitrix24.portals.bucket_name)
    subject: Mapped[str] = mapped_column(
        Text
    )  # the record written, as events name it (`deal/7405`)
    method: Mapped[str] = mapped_column(Text)
    delivery_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    written_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Bitrix24Watermark(Base):
    """How far reconciliation has read a portal's records of one entity: the last DATE_MODIFY it covered."""

    __tablename__ = "bitrix24_watermarks"

    portal: Mapped[str] = mapped_column(Text, primary_key=True)
    entity: Mapped[str] = mapped_column(Text, primary_key=True)
    modified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    swept_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
