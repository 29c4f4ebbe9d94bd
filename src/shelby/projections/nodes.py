"""The node view: one row per registered node, with its latest heartbeat."""

from __future__ import annotations

from shelby.events.store import Recorded
from shelby.events.types import NodeHeartbeat, NodeRegistered
from shelby.projections._sql import Statement, event_names, to_json

__all__ = ["NODE_COLUMNS", "NodesProjection"]

NODE_COLUMNS = (
    "node_id, name, specs, live_specs, labels, max_concurrent_jobs, registered_at,"
    " last_seen, running_jobs"
)


class NodesProjection:
    name = "nodes"
    handles = event_names(NodeRegistered, NodeHeartbeat)
    # A heartbeat sets exactly the columns the node's next heartbeat sets again, and a
    # registration between them sets last_seen itself: in a replay, where heartbeats
    # are most of the log, only a node's last one in each chunk is applied. (The replay
    # groups heartbeats by stream: a node's are all in node-<id>, as the domain appends.)
    superseded = event_names(NodeHeartbeat)
    version = 1
    tables = ("nodes",)
    ddl = (
        """CREATE TABLE IF NOT EXISTS nodes (
            node_id TEXT PRIMARY KEY,
            registered_seq BIGINT NOT NULL,
            name TEXT NOT NULL,
            token_hash TEXT NOT NULL,
            specs TEXT NOT NULL,
            live_specs TEXT NOT NULL,
            labels TEXT NOT NULL,
            max_concurrent_jobs INTEGER NOT NULL,
            registered_at DOUBLE PRECISION NOT NULL,
            last_seen DOUBLE PRECISION NOT NULL,
            running_jobs TEXT NOT NULL
        )""",
        "CREATE UNIQUE INDEX IF NOT EXISTS nodes_by_token ON nodes (token_hash)",
        "CREATE INDEX IF NOT EXISTS nodes_by_order ON nodes (registered_seq)",
        "CREATE INDEX IF NOT EXISTS nodes_by_last_seen ON nodes (last_seen)",
    )

    def apply(self, rec: Recorded) -> list[Statement]:
        e = rec.event
        match e:
            case NodeRegistered():
                return [
                    (
                        "INSERT INTO nodes (node_id, registered_seq, name, token_hash, specs,"
                        " live_specs, labels, max_concurrent_jobs, registered_at, last_seen,"
                        " running_jobs) VALUES (?, ?, ?, ?, ?, '{}', ?, ?, ?, ?, '[]')"
                        " ON CONFLICT (node_id) DO UPDATE SET name = excluded.name,"
                        " token_hash = excluded.token_hash, specs = excluded.specs,"
                        " labels = excluded.labels,"
                        " max_concurrent_jobs = excluded.max_concurrent_jobs,"
                        " last_seen = excluded.last_seen",
                        (
                            e.node_id,
                            rec.seq,
                            e.name,
                            e.token_hash,
                            to_json(e.specs),
                            to_json(e.labels),
                            e.max_concurrent_jobs,
                            rec.timestamp,
                            rec.timestamp,
                        ),
                    )
                ]
            case NodeHeartbeat():
                return [
                    (
                        "UPDATE nodes SET last_seen = ?, live_specs = ?, running_jobs = ?"
                        " WHERE node_id = ?",
                        (rec.timestamp, to_json(e.specs), to_json(e.running_jobs), e.node_id),
                    )
                ]
            case _:
                raise TypeError(f"{self.name} does not handle {rec.type}")
