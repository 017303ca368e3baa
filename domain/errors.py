"""Domain errors: each carries a machine-readable code and a human reason."""


class DomainError(Exception):
    code = "rejected"
    http_status = 409

    def __init__(self, reason: str, code: str | None = None):
        super().__init__(reason)
        self.reason = reason
        if code:
            self.code = code


class NotFound(DomainError):
    code = "not_found"
    http_status = 404


class InvalidState(DomainError):
    code = "invalid_state"
    http_status = 409


class Forbidden(DomainError):
    code = "forbidden"
    http_status = 403


class VersionConflict(DomainError):
    code = "version_conflict"
    http_status = 409


class BudgetExceeded(DomainError):
    code = "budget_exceeded"
    http_status = 409


class InvalidCommand(DomainError):
    code = "invalid_command"
    http_status = 422
