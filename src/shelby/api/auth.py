"""Who is asking: the admin, join and node tokens of API.md, "Credentials".

Tokens are only ever compared as SHA-256 hashes. The admin and join hashes are
compared with ``hmac.compare_digest``; a node token is found by its hash in a dict,
which reveals nothing usable through timing, since an attacker cannot steer the
hash of a guess towards a stored one.
"""

from __future__ import annotations

import hmac
from enum import StrEnum

import msgspec

from shelby.api.errors import ApiError
from shelby.service import Service, token_hash

__all__ = ["Access", "Principal", "admin_token_valid", "authorize", "bearer_token"]


class Access(StrEnum):
    """Which token an endpoint takes."""

    PUBLIC = "public"
    ADMIN = "admin"
    JOIN = "join"
    NODE = "node"


class Principal(msgspec.Struct, frozen=True):
    kind: str  # admin, join, node, dev (credentials off) or anonymous (public endpoint)
    node_id: str | None = None  # the node a node token is bound to

    def act_for(self, node_id: str) -> None:
        """A node token may act only for its own node."""
        if self.kind == "node" and node_id != self.node_id:
            raise ApiError(403, f"this node token belongs to another node, not {node_id!r}")


DEV = Principal("dev")
ANONYMOUS = Principal("anonymous")


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _is(hashed: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(hashed, expected)


def admin_token_valid(service: Service, token: str | None) -> bool:
    """For the websockets, which take the admin token as ``?token=``."""
    if service.settings.dev:
        return True
    return token is not None and _is(token_hash(token), service.admin_hash)


def authorize(
    service: Service, access: Access, token: str | None, hashed: str | None = None
) -> Principal:
    """The principal for ``token`` on an endpoint of ``access``, or the 401/403.
    ``hashed`` is the token's hash when the caller has it already."""
    if access is Access.PUBLIC:
        return ANONYMOUS
    if service.settings.dev:
        return DEV
    if token is None:
        raise ApiError(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    if hashed is None:
        hashed = token_hash(token)
    is_admin = _is(hashed, service.admin_hash)
    is_join = _is(hashed, service.join_hash)
    node_id = service.node_of_token(hashed)
    match access:
        case Access.JOIN:
            if is_join:
                return Principal("join")
            raise ApiError(401, "registering a node takes the join token")
        case Access.ADMIN:
            if is_admin:
                return Principal("admin")
            if node_id is not None:
                raise ApiError(403, "a node token may not call admin endpoints")
        case Access.NODE:
            if node_id is not None:
                return Principal("node", node_id)
            if is_admin:
                raise ApiError(403, "the agent endpoints take a node token, not the admin token")
        case _:
            raise AssertionError(access)
    if is_join:
        raise ApiError(401, "the join token is only for registering a node")
    raise ApiError(401, "unknown token", {"WWW-Authenticate": "Bearer"})
