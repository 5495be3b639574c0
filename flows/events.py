"""The one shape an entry has between decode and the sink.

Every entry read from a stream becomes exactly one Event, good or bad: the sink acks by
(stream, entry_id) after its batch commits, and dead-letters the bad ones (``error`` set) in the
same step, so no entry has a second path to its ack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from observability.tracing import Origin

# Operations on a record, and the repo-level events.
CREATE = "create"
UPDATE = "update"
DELETE = "delete"
REPO = "repo"
ACCOUNT = "account"
IDENTITY = "identity"
RECORD_OPS = (CREATE, UPDATE, DELETE)
COMMIT_OPS = (CREATE, UPDATE, DELETE, REPO)  # events that carry commit + rev for actor_sync
INVALID_HANDLE = "handle.invalid"  # atproto's marker, also for any handle that is not valid
LABEL = "label"  # an entry of the label stream: one or more labels


class Label(NamedTuple):
    """One label as the ``label`` table stores it (cid '' when absent, times normalised)."""

    src: str
    uri: str
    cid: str
    val: str
    neg: bool
    cts: str
    exp: str | None


@dataclass(slots=True)
class Event:
    stream: str
    entry_id: str
    type: str = ""  # one of the constants above; "" when the entry could not be decoded
    did: str = ""
    seq: int = -1
    time: str = ""  # normalised: 2025-10-30T12:00:00.123Z
    commit: str | None = None
    rev: str | None = None
    collection: str | None = None
    rkey: str | None = None
    uri: str | None = None  # at://did/collection/rkey for record ops
    cid: str | None = None
    record: dict[str, Any] | None = None  # lex JSON: {"$link"}, {"$bytes"}, typed blobs
    created_at: str | None = None  # record.createdAt, normalised the way upstream does
    active: bool | None = None  # account events
    status: str | None = None  # account events, lower-cased
    handle: str | None = None  # identity events: lower-cased; None when absent; INVALID_HANDLE
    labels: list[Label] | None = None  # label entries: every label of the entry, all valid
    error: str | None = None  # why this entry is dead-lettered; None for a good event
    payload: bytes | None = field(default=None, repr=False)  # original bytes, kept for dead letters
    deliveries: int = 1
    # When and by whom the entry was read and decoded (observability/tracing.py); set by the
    # decode step, carried to the sink for the batch's trace and latency.
    origin: Origin | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None
