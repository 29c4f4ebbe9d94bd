"""What is known: the read models, each kept in tables beside the log.

Every projection sees every event, in log order, inside the transaction that appends
it. ``ALL`` is the list the stores are built with.
"""

from shelby.events.store import Projection
from shelby.projections.activity import ActivityProjection
from shelby.projections.jobs import JobsProjection
from shelby.projections.logs import LogsProjection
from shelby.projections.nodes import NodesProjection
from shelby.projections.provenance import ProvenanceProjection
from shelby.projections.usage import UsageProjection

__all__ = [
    "ALL",
    "ActivityProjection",
    "JobsProjection",
    "LogsProjection",
    "NodesProjection",
    "ProvenanceProjection",
    "UsageProjection",
    "all_projections",
]


def all_projections() -> list[Projection]:
    return [
        JobsProjection(),
        NodesProjection(),
        LogsProjection(),
        ProvenanceProjection(),
        UsageProjection(),
        ActivityProjection(),
    ]


ALL: list[Projection] = all_projections()
