"""What may happen: a Decider per aggregate (jobs, nodes) and the one command handler."""

from shelby.domain.errors import Conflict, DomainError, NotFound
from shelby.domain.handler import JOBS, NODES, CommandHandler, Decider, Outcome

__all__ = [
    "JOBS",
    "NODES",
    "CommandHandler",
    "Conflict",
    "Decider",
    "DomainError",
    "NotFound",
    "Outcome",
]
