"""The dead-letter stream, for operators: list, put back, drop (`bsky-indexer dlq ...`).

A dead letter (written by ``StreamAcker``) holds ``payload`` (the entry's original bytes),
``stream`` and ``id`` (where it came from), ``reason``, ``deliveries`` and ``time``.

Requeueing adds the payload to its source stream as a new entry and deletes the dead letter, in
one server-side script: a dead letter is requeued once, even by two operators at the same time,
and never lost in between. The payload goes back under the field the producers use: ``labels``
for a label batch (``{"seq", "labels"}``), ``event`` for everything else.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis


@dataclass
class DeadLetter:
    id: str  # its id in the dead-letter stream
    stream: str  # the stream it came from
    entry_id: str  # its id there
    reason: str
    deliveries: int | None
    time: str
    payload: bytes

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "stream": self.stream,
            "entry_id": self.entry_id,
            "reason": self.reason,
            "deliveries": self.deliveries,
            "time": self.time,
        }
        try:
            out["payload"] = self.payload.decode("utf-8")
        except UnicodeDecodeError:
            out["payload_base64"] = base64.b64encode(self.payload).decode()
        return out


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _letter(entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
    deliveries = _text(fields.get(b"deliveries"))
    return DeadLetter(
        id=_text(entry_id),
        stream=_text(fields.get(b"stream")),
        entry_id=_text(fields.get(b"id")),
        reason=_text(fields.get(b"reason")),
        deliveries=int(deliveries) if deliveries.isdigit() else None,
        time=_text(fields.get(b"time")),
        payload=fields.get(b"payload") or b"",
    )


@dataclass
class Filter:
    """Which dead letters: explicit ids, or every one matching reason/stream (after ``after``)."""

    ids: Sequence[str] = ()
    reason: str | None = None  # a case-insensitive part of the reason
    stream: str | None = None  # the source stream, exactly
    after: str | None = None  # only dead letters with a higher id (paging)
    count: int | None = None  # at most this many

    def matches(self, dl: DeadLetter) -> bool:
        if self.reason is not None and self.reason.lower() not in dl.reason.lower():
            return False
        return self.stream is None or dl.stream == self.stream

    @property
    def narrows(self) -> bool:
        return bool(self.ids) or self.reason is not None or self.stream is not None


def select(client: redis.Redis, dead_letter_stream: str, f: Filter) -> Iterator[DeadLetter]:
    """The matching dead letters, oldest first."""
    found = 0
    if f.ids:
        for entry_id in f.ids:
            for eid, fields in client.xrange(dead_letter_stream, entry_id, entry_id):
                dl = _letter(eid, fields)
                if f.matches(dl) and (f.count is None or found < f.count):
                    found += 1
                    yield dl
        return
    start = f"({f.after}" if f.after else "-"
    while f.count is None or found < f.count:
        page = client.xrange(dead_letter_stream, min=start, max="+", count=500)
        if not page:
            return
        for eid, fields in page:
            dl = _letter(eid, fields)
            if f.matches(dl):
                found += 1
                yield dl
                if f.count is not None and found >= f.count:
                    return
        start = f"({_text(page[-1][0])}"


def payload_field(payload: bytes) -> str:
    """The field the producers put this payload under."""
    try:
        msg = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "event"
    if isinstance(msg, dict) and "labels" in msg and "type" not in msg:
        return "labels"
    return "event"


# Delete the dead letter, and only if it was still there, add its payload to the source stream.
_REQUEUE = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
  return redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
end
return false
"""


@dataclass
class Outcome:
    done: list[tuple[DeadLetter, str]]  # (dead letter, new entry id or "")
    skipped: list[tuple[DeadLetter, str]]  # (dead letter, why)


def requeue(client: redis.Redis, dead_letter_stream: str, letters: Iterable[DeadLetter]) -> Outcome:
    script = client.register_script(_REQUEUE)
    out = Outcome([], [])
    for dl in letters:
        if not dl.payload:
            out.skipped.append((dl, "no payload was kept"))
            continue
        if not dl.stream:
            out.skipped.append((dl, "no source stream recorded"))
            continue
        keys = [dead_letter_stream, dl.stream]
        new_id = script(keys=keys, args=[dl.id, payload_field(dl.payload), dl.payload])
        if new_id is None:
            out.skipped.append((dl, "already gone (requeued or dropped by someone else)"))
        else:
            out.done.append((dl, _text(new_id)))
    return out


def drop(client: redis.Redis, dead_letter_stream: str, letters: Iterable[DeadLetter]) -> Outcome:
    out = Outcome([], [])
    for dl in letters:
        if client.xdel(dead_letter_stream, dl.id):
            out.done.append((dl, ""))
        else:
            out.skipped.append((dl, "already gone"))
    return out


def render(letters: Sequence[DeadLetter]) -> str:
    """A table: one line per dead letter, the reason last (it is the longest)."""
    header = ("dead letter", "time", "stream", "entry id", "deliveries", "reason")
    rows = [header] + [
        (dl.id, dl.time, dl.stream, dl.entry_id, _text(str(dl.deliveries or "")), dl.reason)
        for dl in letters
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
        if n == 0:
            lines.append("  ".join("-" * w for w in [*widths, len(header[-1])]))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``dlq list|requeue|drop``, each with the same selection options."""
    sub = parser.add_subparsers(dest="dlq_command", required=True)
    for name, helptext in (
        ("list", "show dead letters (oldest first)"),
        ("requeue", "put dead letters back on the stream they came from"),
        ("drop", "delete dead letters"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("ids", nargs="*", help="dead-letter ids (as `dlq list` shows them)")
        p.add_argument("--reason", help="only those whose reason contains this (any case)")
        p.add_argument("--stream", help="only those from this stream")
        p.add_argument("--after", help="only those after this dead-letter id")
        p.add_argument(
            "--count",
            type=int,
            default=20 if name == "list" else None,
            help="at most this many" + (" (default 20)" if name == "list" else ""),
        )
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if name != "list":
            p.add_argument(
                "--all", action="store_true", help="every dead letter, when no id or filter given"
            )
        p.set_defaults(func=run, dlq_command=name)


def run(args: argparse.Namespace, settings: Any) -> int:
    f = Filter(args.ids, args.reason, args.stream, args.after, args.count)
    if f.count is not None and f.count < 1:
        print("bsky-indexer dlq: --count must be at least 1", file=sys.stderr)
        return 2
    if args.dlq_command != "list" and not (f.narrows or args.all):
        print(
            f"bsky-indexer dlq {args.dlq_command}: name dead-letter ids, --reason or --stream, "
            "or say --all",
            file=sys.stderr,
        )
        return 2
    dls = settings.dead_letter_stream
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=30)
    try:
        letters = select(client, dls, f)
        if args.dlq_command == "list":
            shown = list(letters)
            if args.json:
                print(json.dumps([dl.as_dict() for dl in shown], indent=2, ensure_ascii=False))
            else:
                print(render(shown) if shown else f"no matching dead letters in {dls}")
            return 0
        act = requeue if args.dlq_command == "requeue" else drop
        outcome = act(client, dls, letters)
    except redis.ResponseError as exc:
        print(f"bsky-indexer dlq: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"bsky-indexer dlq: redis: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    verb = "requeued" if args.dlq_command == "requeue" else "dropped"
    if args.json:
        report = {
            verb: [
                {"id": dl.id, "stream": dl.stream, **({"new_id": new} if new else {})}
                for dl, new in outcome.done
            ],
            "skipped": [{"id": dl.id, "why": why} for dl, why in outcome.skipped],
        }
        print(json.dumps(report, indent=2))
    else:
        for dl, why in outcome.skipped:
            print(f"skipped {dl.id}: {why}", file=sys.stderr)
        print(f"{verb} {len(outcome.done)}, skipped {len(outcome.skipped)}")
    if f.ids and len(outcome.done) + len(outcome.skipped) < len(f.ids):
        print("some ids named are not in the dead-letter stream", file=sys.stderr)
    return 0
