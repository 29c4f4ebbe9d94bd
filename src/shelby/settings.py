"""One settings object for the server, from flags and environment (API.md, "Operations").

Flags win over the environment, which wins over the defaults. Tokens that are not set
are generated once and kept in the data directory (beside the SQLite file), so that a
restart keeps the dashboard link and the agents' join token working.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import msgspec

__all__ = [
    "DEFAULT_DB",
    "Settings",
    "TokenFiles",
    "data_dir_of",
    "ensure_tokens",
    "heartbeat_interval",
    "is_database_url",
    "is_loopback",
    "parse_rate_limit",
    "parse_size",
]

DEFAULT_DB = "./shelby-data/shelby.db"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    db: str = DEFAULT_DB
    host: str = "127.0.0.1"
    port: int = 8000
    lease_seconds: float = 60.0
    cors_origins: tuple[str, ...] = ()
    dev: bool = False
    # "N/second" (or minute, hour) per token, per client address without one; "off".
    rate_limit: str = "50/second"
    admin_token: str = ""
    join_token: str = ""
    # How often the lease sweeper looks for silent nodes and overdue jobs; 0: a quarter
    # of the lease, at most 5 s.
    sweep_interval: float = 0.0
    # The server ends a job that outlived its timeout only this long after it, so that
    # the agent, which stops it at the timeout, gets to report it first.
    timeout_grace_seconds: float = 30.0
    max_body_bytes: int = 1 << 20
    max_script_bytes: int = 8 << 20
    # A request's line and headers: at most this long, and complete this soon after the
    # connection opens or the request begins (shelby.api.protocol).
    max_head_bytes: int = 64 << 10
    head_timeout_seconds: float = 10.0
    # A request's body must arrive whole this soon after its head (shelby.api.endpoint).
    body_timeout_seconds: float = 60.0
    # An operator's Ed25519 key file (PEM); empty: one made in the data directory.
    signing_key: str = ""
    # Heartbeats and log lines older than this many days move to archive segments
    # (README, "Retention and archives"); 0: never. SQLite only.
    retention_days: float = 0.0
    # Seconds between archive runs while retention is on.
    archive_interval: float = 3600.0

    @property
    def effective_sweep_interval(self) -> float:
        if self.sweep_interval > 0:
            return self.sweep_interval
        return min(max(self.lease_seconds / 4, 0.1), 5.0)

    @property
    def effective_cors_origins(self) -> tuple[str, ...]:
        return ("*",) if self.dev else self.cors_origins

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **flags: object) -> Settings:
        """Settings from ``env`` (default ``os.environ``), overridden by the flags that
        are not ``None``."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if "SHELBY_DB" in env:
            values["db"] = env["SHELBY_DB"]
        if "SHELBY_HOST" in env:
            values["host"] = env["SHELBY_HOST"]
        if "SHELBY_PORT" in env:
            values["port"] = int(env["SHELBY_PORT"])
        if "SHELBY_LEASE_SECONDS" in env:
            values["lease_seconds"] = float(env["SHELBY_LEASE_SECONDS"])
        if env.get("SHELBY_CORS_ORIGINS"):
            values["cors_origins"] = tuple(
                o.strip() for o in env["SHELBY_CORS_ORIGINS"].split(",") if o.strip()
            )
        if "SHELBY_RATE_LIMIT" in env:
            values["rate_limit"] = env["SHELBY_RATE_LIMIT"]
        if "SHELBY_SWEEP_INTERVAL" in env:
            values["sweep_interval"] = float(env["SHELBY_SWEEP_INTERVAL"])
        if "SHELBY_TIMEOUT_GRACE_SECONDS" in env:
            values["timeout_grace_seconds"] = float(env["SHELBY_TIMEOUT_GRACE_SECONDS"])
        if "SHELBY_HEAD_TIMEOUT_SECONDS" in env:
            values["head_timeout_seconds"] = float(env["SHELBY_HEAD_TIMEOUT_SECONDS"])
        if "SHELBY_BODY_TIMEOUT_SECONDS" in env:
            values["body_timeout_seconds"] = float(env["SHELBY_BODY_TIMEOUT_SECONDS"])
        if "SHELBY_SIGNING_KEY" in env:
            values["signing_key"] = env["SHELBY_SIGNING_KEY"]
        if "SHELBY_RETENTION_DAYS" in env:
            values["retention_days"] = float(env["SHELBY_RETENTION_DAYS"])
        if "SHELBY_ARCHIVE_INTERVAL" in env:
            values["archive_interval"] = float(env["SHELBY_ARCHIVE_INTERVAL"])
        values["admin_token"] = env.get("SHELBY_ADMIN_TOKEN", "")
        values["join_token"] = env.get("SHELBY_JOIN_TOKEN", "")
        values.update({k: v for k, v in flags.items() if v is not None and v != ()})
        settings = msgspec.convert(values, cls)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.lease_seconds <= 0:
            raise ValueError("the lease must be a positive number of seconds")
        if self.head_timeout_seconds <= 0 or self.body_timeout_seconds <= 0:
            raise ValueError("the head and body timeouts must be positive numbers of seconds")
        parse_rate_limit(self.rate_limit)
        if self.retention_days < 0:
            raise ValueError("retention is a number of days, 0 for none")
        if self.archive_interval <= 0:
            raise ValueError("the archive interval must be a positive number of seconds")
        if self.retention_days > 0 and is_database_url(self.db):
            raise ValueError(
                "retention is SQLite-only for now: a PostgreSQL log keeps all its history"
            )
        if self.dev and not is_loopback(self.host):
            raise ValueError(
                f"--dev turns credentials off: it binds loopback only, not {self.host}"
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def heartbeat_interval(lease_seconds: float) -> float:
    """At most a third of the lease, so that two lost heartbeats do not lose a node."""
    interval = min(10.0, lease_seconds / 3)
    return float(int(interval)) if interval >= 1 else round(interval, 3)


def parse_rate_limit(text: str) -> str | None:
    """The ``limits`` expression for a setting, or ``None`` for ``off``."""
    if text.strip().lower() == "off":
        return None
    from limits import parse

    try:
        parse(text)
    except ValueError as exc:
        raise ValueError(f"rate limit {text!r}: {exc}") from exc
    return text


MAX_SIZE = 2**63 - 1
"""The largest size a resource limit can be set to (``setrlimit`` takes a signed 64 bits
in Python; above it, ``OverflowError``)."""

_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """A size in bytes from ``512M``, ``4G``, ``1.5GiB``, ``1048576`` (units are powers
    of 1024); ``0``, ``off``, ``none`` or ``unlimited``: 0, no limit."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    if value in ("0", "OFF", "NONE", "UNLIMITED"):
        return 0
    unit = value[-1:] if value[-1:] in _SIZE_UNITS else ""
    number = value.removesuffix(unit) if unit else value
    try:
        size = int(float(number) * _SIZE_UNITS[unit])
    except (ValueError, OverflowError):  # OverflowError: inf, 1e400
        raise ValueError(f"{text!r} is not a size such as 512M, 4G or off") from None
    if size < 0:
        raise ValueError(f"{text!r}: a size cannot be negative")
    if size > MAX_SIZE:
        raise ValueError(f"{text!r}: larger than any limit the kernel takes (8 EiB)")
    return size


def is_database_url(db: str) -> bool:
    """A server's URL (PostgreSQL) rather than a SQLite file."""
    return "://" in db and not db.startswith("sqlite:///")


def data_dir_of(db: str) -> Path:
    """Where the server keeps its files: beside the SQLite file, or ``./shelby-data``
    for a database URL."""
    if is_database_url(db):
        return Path("./shelby-data")
    return Path(db.removeprefix("sqlite:///")).parent


class TokenFiles(msgspec.Struct, frozen=True):
    admin_generated: bool
    join_generated: bool


def _kept_token(path: Path) -> tuple[str, bool]:
    """The token stored at ``path``, made and stored first when there is none."""
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # Owner-only from the first byte: the file is created with its mode, not chmodded.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def ensure_tokens(settings: Settings) -> tuple[Settings, TokenFiles]:
    """Fill in the tokens the environment did not give, from the data directory."""
    directory = data_dir_of(settings.db)
    admin, join = settings.admin_token, settings.join_token
    admin_new = join_new = False
    if not admin:
        admin, admin_new = _kept_token(directory / "admin.token")
    if not join:
        join, join_new = _kept_token(directory / "join.token")
    updated = msgspec.structs.replace(settings, admin_token=admin, join_token=join)
    return updated, TokenFiles(admin_new, join_new)
