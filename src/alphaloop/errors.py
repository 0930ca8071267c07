"""Classified errors.

Every error alphaloop raises says *what* is wrong (a stable ``code``), *where*
(the message names the field, operator or file) and *how bad* it is, so that the
orchestrator can decide at the place the error arises whether to retry:

- ``TRANSIENT``: may succeed if tried again (I/O hiccup, timeout). Retried.
- ``PERMANENT``: the input is wrong; retrying cannot help (bad spec, bad file).
- ``CRITICAL``: the result would be untrustworthy (lookahead, corrupted state);
  the run should stop or the candidate be voided.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    """How bad an error is, decided where it arises: ``TRANSIENT`` (may succeed if
    tried again: retried with backoff), ``PERMANENT`` (the input is wrong: never
    retried) or ``CRITICAL`` (a result would be untrustworthy: the run stops or the
    candidate is voided)."""

    TRANSIENT = "TRANSIENT"
    PERMANENT = "PERMANENT"
    CRITICAL = "CRITICAL"


class AlphaloopError(Exception):
    """Base error: a stable ``code``, a human message and an :class:`ErrorClass`."""

    code: str = "ALPHALOOP_ERROR"
    error_class: ErrorClass = ErrorClass.PERMANENT

    def __init__(self, message: str, *, code: str | None = None,
                 error_class: ErrorClass | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if error_class is not None:
            self.error_class = error_class

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class DataError(AlphaloopError):
    """Market data that cannot be used (missing file, bad schema, failed quality check)."""

    code = "DATA_ERROR"


class ExpressionError(AlphaloopError):
    """A strategy expression that does not parse or does not type-check."""

    code = "EXPRESSION_ERROR"


class SpecError(AlphaloopError):
    """A strategy spec, family or parameter set that is invalid."""

    code = "SPEC_ERROR"


class LookaheadError(AlphaloopError):
    """A computation that used data from the future."""

    code = "LOOKAHEAD"
    error_class = ErrorClass.CRITICAL


class ExecutionConfigError(AlphaloopError):
    """An execution/cost model (engine B) or verification policy that is invalid."""

    code = "EXEC_CONFIG_INVALID"
