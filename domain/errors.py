"""Domain errors: each carries a machine-readable code and a human reason, and no transport status.

The HTTP adapter (`infra/adapters/http/errors.py`) maps a code to its status in one table; a code
it does not list takes the status of its class's own code.
"""
from typing import Any


class DomainError(Exception):
    code = "rejected"

    def __init__(self, reason: str, code: str | None = None):
        super().__init__(reason)
        self.reason = reason
        if code:
            self.code = code


class NotFound(DomainError):
    code = "not_found"


class InvalidState(DomainError):
    code = "invalid_state"


class Forbidden(DomainError):
    code = "forbidden"


class VersionConflict(DomainError):
    code = "version_conflict"


class BudgetExceeded(DomainError):
    code = "budget_exceeded"


class InvalidCommand(DomainError):
    """A command that is not valid as sent; `details` names each field and what is wrong with it."""
    code = "invalid_command"

    def __init__(self, reason: str, code: str | None = None, details: list[dict[str, Any]] | None = None):
        super().__init__(reason, code)
        self.details = details


class Malformed(DomainError):
    """A request body that cannot be read as one JSON object (not JSON, a repeated member, too deep)."""
    code = "malformed_json"
