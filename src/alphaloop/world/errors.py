"""The world service's errors: each has a stable ``code``, an HTTP status and a class.

Raised where the problem is found; the app turns any of them into one JSON body
``{"error": {"code", "message", "field"}}`` with :attr:`WorldError.status`.
"""

from __future__ import annotations

from alphaloop.errors import AlphaloopError, ErrorClass


class WorldError(AlphaloopError):
    """A request the service refuses, or a failure of the service itself."""

    code = "WORLD_ERROR"

    def __init__(self, message: str, *, code: str | None = None, status: int = 422,
                 field: str | None = None, error_class: ErrorClass | None = None) -> None:
        super().__init__(message, code=code, error_class=error_class)
        self.status = status
        self.field = field


def not_found(what: str, key: str, field: str | None = None) -> WorldError:
    return WorldError(f"{what} {key!r} does not exist", code=f"{what.upper()}_NOT_FOUND",
                      status=404, field=field)


def invalid(field: str, message: str, code: str = "INVALID_REQUEST") -> WorldError:
    return WorldError(f"{field}: {message}", code=code, status=422, field=field)


def unavailable(message: str) -> WorldError:
    """The database is locked or down: the client may retry (HTTP 503)."""
    return WorldError(message, code="DB_UNAVAILABLE", status=503,
                      error_class=ErrorClass.TRANSIENT)
