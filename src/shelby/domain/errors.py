"""The refusals of the domain. The API maps each to its status code."""

from __future__ import annotations

__all__ = ["Conflict", "DomainError", "NotFound"]


class DomainError(Exception):
    """A command that the current state does not allow; nothing was appended."""

    status_code = 400


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    """The command contradicts the state (API.md's 409 cases)."""

    status_code = 409
