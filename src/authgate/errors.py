"""The error tree and the stable codes that HTTP answers, audit events and docs share.

Every error authgate raises on purpose derives from :class:`AuthgateError` and carries a
``code`` that never changes meaning::

    AuthgateError                 code
    ├── ConfigError               config_invalid      bad authgate.toml / AUTHGATE_* value
    ├── InvalidRequest            invalid_request     bad input to the admin API or CLI
    ├── NotFound                  not_found           no such principal / key
    ├── Conflict                  conflict            already exists, or not allowed now
    ├── AuthenticationFailed      authentication_failed   one opaque error for the caller;
    │   └── LockedOut             locked_out          the precise reason goes to the audit log
    ├── HandoffRefused            handoff_refused     a ticket not created or not redeemed;
    │                                                 carries the reason
    ├── Forbidden                 forbidden
    ├── RateLimited               rate_limited        carries retry_after (seconds)
    ├── StoreUnavailable          store_unavailable
    ├── AuditUnavailable          audit_unavailable
    ├── MissingExtra              missing_extra       an optional dependency is not installed
    ├── InvalidProof              invalid_proof       a Merkle proof or checkpoint does not verify
    ├── InvalidRecord             invalid_record      an audit record is malformed or not canonical
    └── RemoteError               remote_error        relayed from a remote admin API; the
                                                      instance carries the code it answered

:class:`Reason` lists the reason codes of decisions (``unknown_key``, ``insufficient_tier``,
...). They are part of the audit contract and of ``authgate decide`` output.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a decision came out the way it did. Values are stable contract strings."""

    OK = "ok"
    MISSING_CREDENTIAL = "missing_credential"
    MALFORMED_CREDENTIAL = "malformed_credential"
    AMBIGUOUS_CREDENTIAL = "ambiguous_credential"
    UNKNOWN_KEY = "unknown_key"
    INVALID_SECRET = "invalid_secret"
    REVOKED_KEY = "revoked_key"
    EXPIRED_KEY = "expired_key"
    UNKNOWN_PRINCIPAL = "unknown_principal"
    DISABLED_PRINCIPAL = "disabled_principal"
    INSUFFICIENT_TIER = "insufficient_tier"
    MISSING_SCOPE = "missing_scope"
    RATE_LIMITED = "rate_limited"
    NO_ROUTE = "no_route"
    MALFORMED_REQUEST = "malformed_request"
    INVALID_PASSWORD = "invalid_password"
    LOCKED_OUT = "locked_out"
    NO_PASSWORD = "no_password"
    INTERNAL_ERROR = "internal_error"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    MALFORMED_TOKEN = "malformed_token"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    UNKNOWN_SIGNING_KEY = "unknown_signing_key"
    INVALID_SIGNATURE = "invalid_signature"
    EXPIRED_TOKEN = "expired_token"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    STEP_UP_REQUIRED = "step_up_required"
    INVALID_SECOND_FACTOR = "invalid_second_factor"
    UNKNOWN_TICKET = "unknown_ticket"
    TICKET_EXPIRED = "ticket_expired"
    TICKET_REDEEMED = "ticket_redeemed"
    WRONG_RECIPIENT = "wrong_recipient"


class AuthgateError(Exception):
    """Root of every error authgate raises deliberately."""

    code = "internal_error"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message or self.code


class ConfigError(AuthgateError):
    """The configuration is invalid; the message names the offending key."""

    code = "config_invalid"


class InvalidRequest(AuthgateError):
    """Input to an admin operation is invalid."""

    code = "invalid_request"


class NotFound(AuthgateError):
    """The named principal or key does not exist."""

    code = "not_found"


class Conflict(AuthgateError):
    """The operation conflicts with existing state (duplicate name, revoked key, ...)."""

    code = "conflict"


class AuthenticationFailed(AuthgateError):
    """Authentication failed. The caller only ever sees this opaque error; ``reason`` is for
    the audit log and metrics."""

    code = "authentication_failed"

    def __init__(self, reason: Reason, message: str = "") -> None:
        super().__init__(message or "authentication failed")
        self.reason = reason


class LockedOut(AuthenticationFailed):
    """Too many failed attempts for this principal or client address."""

    code = "locked_out"

    def __init__(self, retry_after: float) -> None:
        super().__init__(Reason.LOCKED_OUT, "too many failed attempts")
        self.retry_after = retry_after


class HandoffRefused(AuthgateError):
    """A handoff ticket could not be created or redeemed; ``reason`` says why, ``ticket``
    names the ticket concerned (its id, recipient, subject, correlation id) when known."""

    code = "handoff_refused"

    def __init__(
        self, reason: Reason, message: str = "", ticket: dict[str, str] | None = None
    ) -> None:
        super().__init__(message or reason.value)
        self.reason = reason
        self.ticket = ticket


class Forbidden(AuthgateError):
    """Authenticated, but not allowed."""

    code = "forbidden"


class RateLimited(AuthgateError):
    """Over the rate limit; retry after ``retry_after`` seconds."""

    code = "rate_limited"

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited; retry after {retry_after:.3f}s")
        self.retry_after = retry_after


class StoreUnavailable(AuthgateError):
    """The identity store cannot be read or written."""

    code = "store_unavailable"


class AuditUnavailable(AuthgateError):
    """The audit ledger cannot accept events (fail closed)."""

    code = "audit_unavailable"


class MissingExtra(AuthgateError):
    """An optional dependency is missing; the message names the extra to install."""

    code = "missing_extra"

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"{module} is not installed; install it with: pip install 'authgate[{extra}]'"
        )
        self.extra = extra


class InvalidProof(AuthgateError):
    """A Merkle proof, checkpoint or ledger record does not verify."""

    code = "invalid_proof"


class InvalidRecord(AuthgateError):
    """An audit record's bytes are malformed or not in canonical form."""

    code = "invalid_record"


class RemoteError(AuthgateError):
    """An error answered by a running authgate's admin API; the instance's ``code`` is the
    stable code that API answered with (``not_found``, ``forbidden``, ...)."""

    code = "remote_error"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
