"""Bitrix24 REST errors, read from the JSON body whatever the HTTP status (error-codes.md).

Bitrix24 answers `{"error": CODE, "error_description": TEXT}` with 200, 400, 401, 403, 429 or 503;
`batch` puts the same pair per command in `result_error` under HTTP 200. `classify` names what an
error means to a caller: wait and retry, refresh a token, the record is gone, or give up.
"""

from __future__ import annotations

import enum
import re

# Bitrix24's "slow down / try later" codes; any other code is a refusal that a retry cannot fix.
RETRYABLE_CODES = frozenset(
    {"QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT", "INTERNAL_SERVER_ERROR"}
)
_AUTH_CODES = frozenset(
    {"NO_AUTH_FOUND", "INVALID_TOKEN", "INVALID_CREDENTIALS", "INSUFFICIENT_SCOPE"}
    | {"USER_ACCESS_ERROR", "WRONG_AUTH_TYPE", "AUTHORIZATION_ERROR"}
)
_SERVER_CODES = frozenset({"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER", "OVERLOAD_LIMIT"})
# crm.deal.get & co. answer a missing record with an empty code and "Not found"; crm.item.get with
# NOT_FOUND; tasks.task.get with ERROR_CORE and ACTION_NOT_ALLOWED (missing or out of reach).
_NOT_FOUND = re.compile(r"not found|ACTION_NOT_ALLOWED", re.IGNORECASE)


class Kind(enum.StrEnum):
    RATE_LIMITED = "rate_limited"  # QUERY_LIMIT_EXCEEDED: the portal's request rate
    TIME_LIMITED = "time_limited"  # OPERATION_TIME_LIMIT: a method's time budget, for minutes
    AUTH_EXPIRED = "auth_expired"  # expired_token: refresh the OAuth token, then retry
    AUTH = "auth"  # wrong webhook code or token, missing scope: configuration
    NOT_FOUND = "not_found"  # the record does not exist (any more) or cannot be seen
    SERVER = "server"  # the portal failed (5xx, INTERNAL_SERVER_ERROR)
    TRANSPORT = "transport"  # no reply: connection refused, timeout
    REFUSED = "refused"  # anything else: bad params, access denied, unknown method


RETRYABLE_KINDS = frozenset(
    {Kind.RATE_LIMITED, Kind.TIME_LIMITED, Kind.SERVER, Kind.TRANSPORT, Kind.AUTH_EXPIRED}
)


def classify(code: str, description: str, status: int | None) -> Kind:
    """What a Bitrix24 error means, from its code first, its text and HTTP status after."""
    upper = code.upper()
    if upper == "QUERY_LIMIT_EXCEEDED":
        return Kind.RATE_LIMITED
    if upper == "OPERATION_TIME_LIMIT":
        return Kind.TIME_LIMITED
    if upper == "EXPIRED_TOKEN":
        return Kind.AUTH_EXPIRED
    if upper in _AUTH_CODES:
        return Kind.AUTH
    if upper in _SERVER_CODES:
        return Kind.SERVER
    if upper == "NOT_FOUND" or _NOT_FOUND.search(description):
        return Kind.NOT_FOUND
    if status is not None and (status >= 500 or status in (408, 425, 429)):
        return Kind.SERVER
    return Kind.REFUSED


class RestError(Exception):
    """A failed REST call or batch command; never carries the webhook URL or a token."""

    def __init__(self, kind: Kind, code: str, description: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {description}" if code else description)
        self.kind = kind
        self.code = code
        self.description = description
        self.status = status

    @classmethod
    def from_body(cls, body: dict[str, object], status: int | None) -> RestError:
        """The error of a reply or of one `result_error` entry."""
        code = str(body.get("error") or "")
        description = str(body.get("error_description") or "")
        return cls(classify(code, description, status), code, description, status)

    @property
    def retryable(self) -> bool:
        """Whether a later attempt may succeed (limits, portal failures, transport, token expiry)."""
        return self.kind in RETRYABLE_KINDS

    @property
    def error_class(self) -> str:
        """For attempt rows: `b24:<CODE>` when the portal gave one, else the kind."""
        return f"b24:{self.code}" if self.code else f"b24:{self.kind.value}"
