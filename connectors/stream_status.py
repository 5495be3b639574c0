"""How far behind the consumer group is, per stream: what `bsky-indexer status` shows.

``stream_state(client, stream, group)`` reads a handful of Redis commands (XLEN, XINFO GROUPS,
XINFO CONSUMERS, XPENDING), never the entries themselves unless Redis cannot tell the group's lag
(see ``lag``). ``status(client, settings)`` does it for every stream the configured mode reads and
adds the dead-letter count per source stream.

Times come from the Redis server's clock (TIME), the same clock that stamps entry ids.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from config.settings import Settings


@dataclass
class ConsumerState:
    name: str
    pending: int  # entries delivered to it and not acked
    idle_s: float  # since it last read or claimed


@dataclass
class StreamState:
    stream: str
    group: str
    length: int  # XLEN: entries still in the stream (acked ones are deleted by default)
    group_exists: bool
    # Entries not yet delivered to the group. Redis knows it unless entries after the group's
    # position were deleted or trimmed; then they are counted, up to ``lag_scan`` (and
    # ``lag_at_least`` is set when that bound was reached); with lag_scan=0 it stays None.
    lag: int | None
    lag_at_least: bool = False
    pending: int = 0  # delivered, not yet acked, over all consumers
    oldest_pending_id: str | None = None
    oldest_pending_age_s: float | None = None  # since that entry was added to the stream
    oldest_pending_idle_s: float | None = None  # since it was last delivered to a consumer
    oldest_pending_deliveries: int | None = None
    consumers: list[ConsumerState] = field(default_factory=list)
    dead_letters: int | None = None  # filled by status()
    dead_letters_at_least: bool = False


@dataclass
class Status:
    streams: list[StreamState]
    dead_letter_stream: str
    dead_letter_length: int
    dead_letters_scanned: int  # newest dead letters counted per source stream

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _id_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def server_time_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def stream_state(
    client: redis.Redis, stream: str, group: str, lag_scan: int = 10_000
) -> StreamState:
    """The group's position on one stream; a missing stream or group reads as empty."""
    now = server_time_ms(client)
    length = int(client.xlen(stream))
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:  # no such stream
        groups = []
    info = next((g for g in groups if _text(g["name"]) == group), None)
    if info is None:
        return StreamState(stream, group, length, group_exists=False, lag=length)
    state = StreamState(stream, group, length, group_exists=True, lag=info.get("lag"))
    if state.lag is None and lag_scan > 0:
        state.lag, state.lag_at_least = _count_after(
            client, stream, _text(info["last-delivered-id"]) or "0-0", lag_scan
        )
    summary = client.xpending(stream, group)
    state.pending = int(summary["pending"])
    if state.pending:
        oldest = client.xpending_range(stream, group, "-", "+", 1)[0]
        state.oldest_pending_id = _text(oldest["message_id"])
        state.oldest_pending_age_s = max(0, now - _id_ms(state.oldest_pending_id)) / 1000
        state.oldest_pending_idle_s = int(oldest["time_since_delivered"]) / 1000
        state.oldest_pending_deliveries = int(oldest["times_delivered"])
    state.consumers = [
        ConsumerState(_text(c["name"]) or "", int(c["pending"]), int(c["idle"]) / 1000)
        for c in client.xinfo_consumers(stream, group)
    ]
    return state


def _count_after(client: redis.Redis, stream: str, after: str, limit: int) -> tuple[int, bool]:
    """Entries with an id above ``after``, counted up to ``limit``: (count, limit reached)."""
    count, start = 0, f"({after}"
    while count < limit:
        page = client.xrange(stream, min=start, max="+", count=min(1000, limit - count))
        if not page:
            return count, False
        count += len(page)
        start = f"({_text(page[-1][0])}"
    return count, True


def status(client: redis.Redis, settings: Settings, scan: int = 10_000) -> Status:
    """Every stream the mode reads, with its dead letters among the newest ``scan`` ones."""
    states = [stream_state(client, s, g, scan) for s, g in settings.stream_groups()]
    dls = settings.dead_letter_stream
    dl_length = int(client.xlen(dls))
    per_stream: Counter[str] = Counter()
    scanned = 0
    end = "+"
    while scanned < scan:
        page = client.xrevrange(dls, max=end, min="-", count=min(1000, scan - scanned))
        if not page:
            break
        for _id, fields in page:
            per_stream[_text(fields.get(b"stream")) or ""] += 1
        scanned += len(page)
        end = f"({_text(page[-1][0])}"
    for st in states:
        st.dead_letters = per_stream[st.stream]
        st.dead_letters_at_least = scanned < dl_length
    return Status(states, dls, dl_length, scanned)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _n(value: int | None, at_least: bool = False) -> str:
    if value is None:
        return "?"
    return f"≥{value}" if at_least else str(value)


def render(st: Status) -> str:
    """The status as a table for a terminal, then each group's consumers."""
    header = ("stream", "group", "length", "lag", "pending", "oldest pending", "dead letters")
    table = [header]
    for s in st.streams:
        table.append(
            (
                s.stream,
                s.group if s.group_exists else f"{s.group} (missing)",
                str(s.length),
                _n(s.lag, s.lag_at_least),
                str(s.pending),
                _age(s.oldest_pending_age_s),
                _n(s.dead_letters, s.dead_letters_at_least),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table]
    lines[0:1] = [lines[0].rstrip(), "  ".join("-" * w for w in widths)]
    for s in st.streams:
        if not s.consumers:
            continue
        lines.append("")
        oldest = ""
        if s.oldest_pending_id:
            oldest = (
                f"; oldest pending {s.oldest_pending_id}, delivered "
                f"{s.oldest_pending_deliveries}x, idle {_age(s.oldest_pending_idle_s)}"
            )
        lines.append(f"{s.stream} / {s.group}{oldest}")
        name_w = max(len(c.name) for c in s.consumers)
        for c in s.consumers:
            lines.append(f"  {c.name.ljust(name_w)}  pending {c.pending:<8} idle {_age(c.idle_s)}")
    lines.append("")
    lines.append(f"dead-letter stream {st.dead_letter_stream}: {st.dead_letter_length} entries")
    return "\n".join(line.rstrip() for line in lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--scan",
        type=int,
        default=10_000,
        help="newest dead letters (and, when Redis cannot tell the lag, entries) to count",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=30)
    try:
        st = status(client, settings, max(args.scan, 0))
    except redis.RedisError as exc:
        print(f"bsky-indexer status: redis: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if args.json:
        print(json.dumps(st.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(render(st))
    return 0
