"""The archive's typed schema: Event -> Arrow rows, and archived rows -> StreamEvents again.

One row per indexed event. Common columns: ``stream`` and ``entryId`` (where the entry came from:
the key that makes an archived event unique), ``op`` (create, update, delete, repo, account,
identity), ``seq``, ``time`` (the receive time, UTC milliseconds), ``did``, ``commit``, ``rev``,
``collection``, ``rkey``, ``uri``, ``cid`` and ``record`` (the record as indexed: canonical lex
JSON text). Typed columns for the hot collections, null elsewhere: ``subject``/``subjectCid``
(likes and reposts), ``subjectDid`` (follows and blocks), ``text``, ``langs``, ``reply`` and
``embed`` (JSON text) for posts; ``active``/``status`` (account) and ``handle`` (identity).

Repo, account and identity events belong to no collection: their ``collection`` is the
pseudo-collection ``_repo``, ``_account`` or ``_identity`` (no NSID starts with ``_``), the same
value as their partition folder, so DuckDB's and pyarrow's hive partitioning agree with the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from flows.events import ACCOUNT, CREATE, DELETE, IDENTITY, REPO, UPDATE, Event

POST = "app.bsky.feed.post"
STRONG_REF_SUBJECT = frozenset(("app.bsky.feed.like", "app.bsky.feed.repost"))
DID_SUBJECT = frozenset(("app.bsky.graph.follow", "app.bsky.graph.block"))
ARCHIVED_OPS = frozenset((CREATE, UPDATE, DELETE, REPO, ACCOUNT, IDENTITY))
NO_COLLECTION = {REPO: "_repo", ACCOUNT: "_account", IDENTITY: "_identity"}

_REF = pa.struct([("uri", pa.string()), ("cid", pa.string())])

SCHEMA = pa.schema(
    [
        pa.field("stream", pa.string(), nullable=False),
        pa.field("entryId", pa.string(), nullable=False),
        pa.field("op", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("did", pa.string(), nullable=False),
        pa.field("commit", pa.string()),
        pa.field("rev", pa.string()),
        pa.field("collection", pa.string(), nullable=False),
        pa.field("rkey", pa.string()),
        pa.field("uri", pa.string()),
        pa.field("cid", pa.string()),
        pa.field("record", pa.string()),
        pa.field("subject", pa.string()),
        pa.field("subjectCid", pa.string()),
        pa.field("subjectDid", pa.string()),
        pa.field("text", pa.string()),
        pa.field("langs", pa.list_(pa.string())),
        pa.field("reply", pa.struct([("root", _REF), ("parent", _REF)])),
        pa.field("embed", pa.string()),
        pa.field("active", pa.bool_()),
        pa.field("status", pa.string()),
        pa.field("handle", pa.string()),
    ]
)
# The spool (spool.py) keeps one more column: the writer's batch number, for crash recovery.
BATCH = "_batch"
SPOOL_SCHEMA = SCHEMA.append(pa.field(BATCH, pa.int64(), nullable=False))


_HOT = ("subject", "subjectCid", "subjectDid", "text", "langs", "reply", "embed")


def archived(ev: Event) -> bool:
    """Whether the archive keeps this event: indexed (not dead-lettered) and a firehose event."""
    return ev.error is None and ev.type in ARCHIVED_OPS


def _ref(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    return {"uri": value.get("uri"), "cid": value.get("cid")}


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def to_batch(events: Sequence[Event], batch_no: int) -> pa.RecordBatch:
    """The spool rows of events (all ``archived``), tagged with the writer's batch number."""
    # Column by column: a comprehension per field is several times cheaper than a dict per row.
    n = len(events)
    cols: dict[str, list[Any]] = {
        "stream": [ev.stream for ev in events],
        "entryId": [ev.entry_id for ev in events],
        "op": [ev.type for ev in events],
        "seq": [ev.seq for ev in events],
        "time": [ev.time for ev in events],
        "did": [ev.did for ev in events],
        "commit": [ev.commit for ev in events],
        "rev": [ev.rev for ev in events],
        "collection": [ev.collection or NO_COLLECTION[ev.type] for ev in events],
        "rkey": [ev.rkey for ev in events],
        "uri": [ev.uri for ev in events],
        "cid": [ev.cid for ev in events],
        "record": [None if ev.record is None else _json(ev.record) for ev in events],
        "active": [ev.active for ev in events],
        "status": [ev.status for ev in events],
        "handle": [ev.handle for ev in events],
    }
    for name in _HOT:
        cols[name] = [None] * n
    subject, subject_cid, subject_did = cols["subject"], cols["subjectCid"], cols["subjectDid"]
    text, langs, replies, embed = cols["text"], cols["langs"], cols["reply"], cols["embed"]
    for i, ev in enumerate(events):
        record = ev.record
        if record is None:
            continue
        collection = ev.collection
        if collection in STRONG_REF_SUBJECT:
            ref = record.get("subject") or {}
            subject[i], subject_cid[i] = ref.get("uri"), ref.get("cid")
        elif collection in DID_SUBJECT:
            subject_did[i] = record.get("subject")
        elif collection == POST:
            text[i] = record.get("text")
            langs[i] = record.get("langs")
            reply = record.get("reply")
            if isinstance(reply, dict):
                replies[i] = {"root": _ref(reply.get("root")), "parent": _ref(reply.get("parent"))}
            embed[i] = _json(record.get("embed"))
    cols[BATCH] = [batch_no] * n
    # time arrives as normalised text (2025-10-30T12:00:00.123Z): Arrow parses it in one go.
    arrays = [
        pa.array(cols["time"], pa.string()).cast(f.type)
        if f.name == "time"
        else pa.array(cols[f.name], f.type)
        for f in SPOOL_SCHEMA
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=SPOOL_SCHEMA)


def time_text(times: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The ``time`` column as the normalised text again (``2025-10-30T12:00:00.123Z``)."""
    # %S prints the seconds with the column's millisecond fraction.
    return pc.binary_join_element_wise(pc.strftime(times, "%Y-%m-%dT%H:%M:%S"), "Z", "")


def dates(times: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The UTC day (``2025-10-30``) of each ``time``: the date partition."""
    return pc.strftime(pc.cast(times, pa.date32()), "%Y-%m-%d")


def stream_event(row: dict[str, Any]) -> dict[str, Any]:
    """The producers' StreamEvent (spec/event-format.md) for an archived row, ``time`` as text."""
    op = row["op"]
    out: dict[str, Any] = {"type": op, "seq": row["seq"], "time": row["time"], "did": row["did"]}
    if op == ACCOUNT:
        out["active"] = row["active"]
        out["status"] = row["status"]
        return out
    if op == IDENTITY:
        out["handle"] = row["handle"]
        return out
    out["commit"] = row["commit"]
    out["rev"] = row["rev"]
    if op == REPO:
        return out
    out["collection"] = row["collection"]
    out["rkey"] = row["rkey"]
    if op == DELETE:
        return out
    out["cid"] = row["cid"]
    out["record"] = orjson.Fragment(row["record"])  # already JSON text: sent as it is
    return out
