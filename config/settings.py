"""Every setting the indexer reads, from the environment, validated once at start.

The names are those the TypeScript and Rust indexers use, so one deployment's environment serves all
three. A bad value raises ConfigError naming the variable; nothing is parsed lazily later.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from urllib.parse import urlsplit, urlunsplit

from psycopg.conninfo import conninfo_to_dict


class ConfigError(ValueError):
    """A setting has a value the indexer cannot run with."""


MODES = ("all", "stream", "label")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://localhost:6379"
    database_url: str = "postgresql://localhost/bsky"
    streams: tuple[str, ...] = ("firehose_live", "firehose_backfill")
    label_stream: str = "label_live"
    group: str = "firehose_group"
    label_group: str = "firehose_group"
    consumer: str = "indexer"
    mode: str = "all"
    batch_size: int = 500
    batch_max_wait: float = 0.2
    concurrency: int = 100
    shards: int = 0  # 0: one per worker of the cluster
    db_pool_max_size: int = 20
    db_pool_min_idle: int = 5
    metrics_port: int = 9090  # 0: no /metrics endpoint
    metrics_interval: float = 5.0
    log_format: str = "text"
    stop_when_idle: float | None = None
    dead_letter_stream: str = "firehose_dead_letter"
    dead_letter_maxlen: int = 1_000_000
    delete_after_ack: bool = True
    poll_interval: float = 0.05
    claim_idle_ms: int = 60_000
    max_deliveries: int = 10
    stage_timings: str | None = None  # benchmarks: a JSON file of per-stage timings
    archive_dir: str | None = None  # the Parquet archive (sinks/archive); None: off
    archive_roll_bytes: int = 32 * 1024 * 1024
    archive_roll_seconds: float = 600.0
    # Handles verified by DID resolution (resolution/); off: identity events' handles are trusted.
    enable_did_resolution: bool = True
    plc_url: str = "https://plc.directory"
    did_resolution_timeout: float = 3.0
    did_cache_size: int = 100_000
    did_cache_ttl: float = 3600.0
    did_resolution_concurrency: int = 16
    did_resolution_retry_max: float = 3600.0
    did_resolution_dns_servers: tuple[str, ...] = ()  # (): the system's resolver
    did_resolution_http_address: str | None = None  # host:port for every handle/did:web GET

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        r = _Reader(env)
        group = r.text("INDEXER_GROUP", cls.group)
        s = cls(
            redis_url=r.url("REDIS_URL", cls.redis_url, ("redis", "rediss", "unix")),
            database_url=r.url("DATABASE_URL", cls.database_url, ("postgresql", "postgres")),
            streams=r.names("INDEXER_STREAMS", cls.streams),
            label_stream=r.text("INDEXER_LABEL_STREAM", cls.label_stream),
            group=group,
            label_group=r.text("INDEXER_LABEL_GROUP", group),
            consumer=r.text("INDEXER_CONSUMER", socket.gethostname() or cls.consumer),
            mode=r.choice("INDEXER_MODE", cls.mode, MODES),
            batch_size=r.integer("INDEXER_BATCH_SIZE", cls.batch_size, 1, 100_000),
            batch_max_wait=r.number("INDEXER_BATCH_MAX_WAIT", cls.batch_max_wait, 0.001, 60),
            concurrency=r.integer("INDEXER_CONCURRENCY", cls.concurrency, 1, 1_000_000),
            shards=r.integer("INDEXER_SHARDS", cls.shards, 0, 4096),
            db_pool_max_size=r.integer("DB_POOL_MAX_SIZE", cls.db_pool_max_size, 1, 10_000),
            db_pool_min_idle=r.integer("DB_POOL_MIN_IDLE", cls.db_pool_min_idle, 0, 10_000),
            metrics_port=r.integer("METRICS_PORT", cls.metrics_port, 0, 65535),
            metrics_interval=r.number("INDEXER_METRICS_INTERVAL", cls.metrics_interval, 0.05, 3600),
            log_format=r.choice("INDEXER_LOG_FORMAT", cls.log_format, LOG_FORMATS),
            stop_when_idle=r.optional_number("INDEXER_STOP_WHEN_IDLE", 0, 86_400),
            dead_letter_stream=r.text("INDEXER_DEAD_LETTER_STREAM", cls.dead_letter_stream),
            dead_letter_maxlen=r.integer(
                "INDEXER_DEAD_LETTER_MAXLEN", cls.dead_letter_maxlen, 1, 10**10
            ),
            delete_after_ack=r.boolean("INDEXER_DELETE_AFTER_ACK", cls.delete_after_ack),
            poll_interval=r.number("INDEXER_POLL_INTERVAL", cls.poll_interval, 0.001, 10),
            claim_idle_ms=r.integer("INDEXER_CLAIM_IDLE_MS", cls.claim_idle_ms, 1, 86_400_000),
            max_deliveries=r.integer("INDEXER_MAX_DELIVERIES", cls.max_deliveries, 1, 1_000_000),
            stage_timings=r.file("INDEXER_STAGE_TIMINGS"),
            archive_dir=r.directory("INDEXER_ARCHIVE_DIR"),
            archive_roll_bytes=r.integer(
                "INDEXER_ARCHIVE_ROLL_BYTES", cls.archive_roll_bytes, 1024, 1 << 40
            ),
            archive_roll_seconds=r.number(
                "INDEXER_ARCHIVE_ROLL_SECONDS", cls.archive_roll_seconds, 0.001, 86_400
            ),
            enable_did_resolution=r.boolean("ENABLE_DID_RESOLUTION", cls.enable_did_resolution),
            plc_url=r.url("PLC_URL", cls.plc_url, ("http", "https")),
            did_resolution_timeout=r.number(
                "DID_RESOLUTION_TIMEOUT", cls.did_resolution_timeout, 0.01, 300
            ),
            did_cache_size=r.integer("DID_CACHE_SIZE", cls.did_cache_size, 0, 100_000_000),
            did_cache_ttl=r.number("DID_CACHE_TTL", cls.did_cache_ttl, 0, 30 * 86_400),
            did_resolution_concurrency=r.integer(
                "DID_RESOLUTION_CONCURRENCY", cls.did_resolution_concurrency, 1, 1024
            ),
            did_resolution_retry_max=r.number(
                "DID_RESOLUTION_RETRY_MAX", cls.did_resolution_retry_max, 1, 30 * 86_400
            ),
            did_resolution_dns_servers=r.dns_servers("DID_RESOLUTION_DNS_SERVERS"),
            did_resolution_http_address=r.address("DID_RESOLUTION_HTTP_ADDRESS"),
        )
        if s.db_pool_min_idle > s.db_pool_max_size:
            raise ConfigError(
                f"DB_POOL_MIN_IDLE ({s.db_pool_min_idle}) exceeds DB_POOL_MAX_SIZE "
                f"({s.db_pool_max_size})"
            )
        if s.dead_letter_stream in s.streams:
            raise ConfigError("INDEXER_DEAD_LETTER_STREAM must not be one of INDEXER_STREAMS")
        reads_labels = s.mode != "stream"
        if reads_labels and (s.label_stream in s.streams or s.label_stream == s.dead_letter_stream):
            raise ConfigError(
                "INDEXER_LABEL_STREAM must differ from INDEXER_STREAMS and the dead-letter stream"
            )
        return s

    def stream_groups(self) -> list[tuple[str, str]]:
        """(stream, group) for every stream INDEXER_MODE reads: record streams, then labels."""
        pairs: list[tuple[str, str]] = []
        if self.mode in ("all", "stream"):
            pairs += [(stream, self.group) for stream in self.streams]
        if self.mode in ("all", "label"):
            pairs.append((self.label_stream, self.label_group))
        return pairs

    def summary(self) -> dict[str, object]:
        """The settings for a log line, with credentials removed from connection strings."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = redact_url(value) if f.name.endswith("_url") else value
        return out


def redact_url(url: str) -> str:
    """The URL (or libpq key=value string) with any password replaced, so it can be logged."""
    if "://" not in url:
        return re.sub(r"(?i)(password\s*=\s*)('[^']*'|\S+)", r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None and "@" not in parts.netloc:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}" if user else f"***@{host}"
    query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_NAME = re.compile(r"^[A-Za-z0-9_.:\-{}]+$")


class _Reader:
    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, default: str) -> str:
        value = self._raw(name)
        if value is None:
            return default
        if not _NAME.match(value):
            raise ConfigError(f"{name}={value!r}: use letters, digits and _.:-{{}} only")
        return value

    def names(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._raw(name)
        if value is None:
            return default
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        if not items:
            raise ConfigError(f"{name}={value!r}: name at least one stream")
        for item in items:
            if not _NAME.match(item):
                raise ConfigError(f"{name}: {item!r} is not a valid stream name")
        if len(set(items)) != len(items):
            raise ConfigError(f"{name}={value!r}: a stream is named twice")
        return items

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() not in allowed:
            raise ConfigError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
        return value.lower()

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r}: expected a whole number") from None
        if not low <= number <= high:
            raise ConfigError(f"{name}={number}: expected {low} to {high}")
        return number

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self._raw(name)
        if value is None:
            return default
        return self._bounded(name, value, low, high)

    def optional_number(self, name: str, low: float, high: float) -> float | None:
        value = self._raw(name)
        if value is None:
            return None
        return self._bounded(name, value, low, high)

    def _bounded(self, name: str, value: str, low: float, high: float) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r}: expected a number of seconds") from None
        if not low <= number <= high:
            raise ConfigError(f"{name}={number}: expected {low} to {high}")
        return number

    def file(self, name: str) -> str | None:
        """A file to write at exit: its folder must exist now, not only when it is written."""
        value = self._raw(name)
        if value is None:
            return None
        folder = os.path.dirname(os.path.abspath(value))
        if not os.path.isdir(folder):
            raise ConfigError(f"{name}={value!r}: the folder {folder} does not exist")
        return value

    def directory(self, name: str) -> str | None:
        """A folder to write into: it exists (or its parent does, to create it) and is writable."""
        value = self._raw(name)
        if value is None:
            return None
        path = os.path.abspath(value)
        existing = path if os.path.exists(path) else os.path.dirname(path)
        if not os.path.isdir(existing):
            what = "is not a folder" if existing == path else f"{existing} does not exist"
            raise ConfigError(f"{name}={value!r}: {what}")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{name}={value!r}: {existing} is not writable")
        return path

    def boolean(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={value!r}: expected true or false")

    def dns_servers(self, name: str) -> tuple[str, ...]:
        """A comma list of ``ip``, ``ip:port`` or ``[v6]:port``; () when unset."""
        from resolution.handle import nameserver

        value = self._raw(name)
        if value is None:
            return ()
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        for item in items:
            try:
                nameserver(item)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        return items

    def address(self, name: str) -> str | None:
        """``host:port`` (``[v6]:port``)."""
        value = self._raw(name)
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name}={value!r}: expected host:port")
        return value

    def url(self, name: str, default: str, schemes: tuple[str, ...]) -> str:
        value = self._raw(name)
        if value is None:
            return default
        if "://" not in value and "postgresql" in schemes:
            try:  # a libpq key=value string is fine too
                conninfo_to_dict(value)
                return value
            except Exception:
                raise ConfigError(f"{name}: not a valid connection string") from None
        try:
            scheme = urlsplit(value).scheme
        except ValueError:
            scheme = ""
        if scheme not in schemes or (scheme in ("http", "https") and not _host_of(value)):
            # Never echo the value: it may hold a password.
            raise ConfigError(f"{name}: expected a {'/'.join(schemes)}:// URL")
        return value


def _host_of(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None
