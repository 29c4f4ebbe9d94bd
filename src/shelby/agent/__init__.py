"""The program on a compute node: joins the coordinator, runs job scripts, reports.

- ``agent``: the loop (register, heartbeat, poll, N attempt slots, shutdown).
- ``runner``: one attempt, from assignment to ending; ``process``: a process tree.
- ``dataset``, ``environments``: what a script needs before it starts.
- ``spool``, ``shipper``: log lines on disk, and their way to the server by offset.
- ``attempts``: each attempt's state on disk, for restarts; ``client``: the HTTP calls.
- ``specs``: what the node is and how busy; ``modelhash``: API.md's model hash.
"""

from shelby.agent.agent import Agent, AgentConfig, JoinRefused
from shelby.agent.modelhash import model_hash

__all__ = ["Agent", "AgentConfig", "JoinRefused", "model_hash"]
