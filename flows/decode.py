"""Raw Redis stream entry -> Event. Never raises.

``decode_entry(stream, entry_id, fields)`` takes redis-py's raw entry fields (bytes or str keys
and values), reads the JSON StreamEvent in field ``event`` (docs: spec/event-format.md) and
returns one Event:

* a good event has ``error=None`` and ``payload=None``;
* a bad one has ``error`` set to a short reason and ``payload`` set to the original bytes, with
  every envelope field that could be read and validated filled in. When only the record is bad
  (normalisation or lexicon validation), type/did/seq/time/commit/rev/collection/rkey/uri/cid are
  all set and ``record`` is None, so the sink can still record the commit in actor_sync the way
  upstream does.

Envelope rules: ``type`` in create/update/delete/repo/account/identity; ``did`` a DID; ``time``
normalised with ``normalize_time``; ``seq`` an integer (required for record operations, default
-1 for repo/account/identity); ``commit`` a CID and ``rev`` a TID for create/update/delete/repo;
``collection`` an NSID, ``rkey`` a record key and (create/update) ``cid`` a CID and ``record`` an
object. Records are normalised (``datamodel.normalize_record``) and validated
(``lexicon.validate_record``), and two rules upstream's plugins enforce by throwing are checked
here because they only need the event: a list item's list must belong to the item's author, and a
thread/post gate's ``post`` must be the author's post with the gate's rkey.

Account: ``active`` boolean, ``status`` string or null, lower-cased. Identity: ``handle`` string
or null; it is lower-cased, and a value that is not a valid handle becomes atproto's marker
``handle.invalid`` (INVALID_HANDLE), kept apart from an absent handle (None), which says nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from flows import datamodel as dm
from flows.events import (
    ACCOUNT,
    CREATE,
    DELETE,
    IDENTITY,
    INVALID_HANDLE,
    REPO,
    UPDATE,
    Event,
)
from flows.lexicon import MAX_STRING_BYTES, validate_record

LISTITEM = "app.bsky.graph.listitem"
THREADGATE = "app.bsky.feed.threadgate"
POSTGATE = "app.bsky.feed.postgate"
_TYPES = frozenset((CREATE, UPDATE, DELETE, REPO, ACCOUNT, IDENTITY))
_NUL_ESCAPE = b"\\u0000"


def _show(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 100 else r[:97] + "..."


def _as_str(v: Any) -> str:
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).decode("utf-8", "replace")
    return str(v)


def _event_field(fields: Any) -> Any:
    if not isinstance(fields, dict):
        return None
    v = fields.get(b"event")
    if v is None:
        v = fields.get("event")
    return v


def _fields_payload(fields: Any) -> bytes:
    """Something to keep for an entry without an ``event`` field: its fields as JSON."""
    try:
        if isinstance(fields, dict):
            return orjson.dumps({_as_str(k): _as_str(v) for k, v in fields.items()})
        return orjson.dumps(_as_str(fields))
    except Exception:  # noqa: BLE001 - best effort only, never raise
        return b""


def _json_error(raw: bytes, exc: Exception) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as u:
        return f"invalid UTF-8 at byte {u.start}"
    return f"invalid JSON: {exc}"


def _uri_parts(uri: str) -> list[str]:
    return uri[5:].partition("#")[0].split("/")


def _cross_check(collection: str, did: str, rkey: str, record: dict[str, Any]) -> str | None:
    """Rules upstream's plugins enforce by throwing (so nothing but actor_sync is written); they
    only need the event itself. Runs after validation, so the URIs are well-formed."""
    if collection == LISTITEM:
        owner = _uri_parts(record["list"])[0]
        if owner != did:
            return f"list {_show(record['list'])} belongs to {owner}, not to the item's author"
    elif collection == THREADGATE or collection == POSTGATE:
        parts = _uri_parts(record["post"])
        if parts[0] != did or len(parts) != 3 or parts[2] != rkey:
            return f"post {_show(record['post'])} is not at://{did}/app.bsky.feed.post/{rkey}"
    return None


def json_object(ev: Event, fields: Any, raw: Any, name: str) -> dict[str, Any] | None:
    """The JSON object in an entry's field ``name`` (its raw value given), or None with
    ``ev.error`` set. ``ev.payload`` keeps the original bytes for the dead-letter stream."""
    if isinstance(raw, str):
        payload = raw.encode("utf-8", "surrogatepass")
    elif isinstance(raw, bytes):
        payload = raw
    elif isinstance(raw, bytearray | memoryview):
        payload = bytes(raw)
    else:
        ev.payload = _fields_payload(fields)
        ev.error = f"field '{name}' is {type(raw).__name__}, not bytes"
        return None
    ev.payload = payload  # dropped again once the event proves good
    try:
        msg = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        ev.error = _json_error(payload, e)
        return None
    if type(msg) is not dict:
        ev.error = f"{name} JSON is not an object but {type(msg).__name__}"
        return None
    return msg


def _decode(ev: Event, fields: Any) -> None:
    raw = _event_field(fields)
    if raw is None:
        ev.payload = _fields_payload(fields)
        ev.error = "missing field 'event'"
        return
    msg = json_object(ev, fields, raw, "event")
    if msg is None:
        return
    payload: bytes = ev.payload

    # -- common envelope ---------------------------------------------------------------------
    t = msg.get("type")
    if t is None:
        ev.error = "missing field 'type'"
        return
    if t not in _TYPES:
        ev.error = f"unknown type {_show(t)}"
        return
    ev.type = t

    did = _required(ev, msg, "did", dm.is_did)
    if did is None:
        return
    ev.did = did

    seq = msg.get("seq")
    if seq is None:
        if t in (CREATE, UPDATE, DELETE):
            ev.error = "missing field 'seq'"
            return
    elif type(seq) is not int:
        ev.error = f"invalid seq {_show(seq)}"
        return
    else:
        ev.seq = seq

    time = msg.get("time")
    if time is None:
        ev.error = "missing field 'time'"
        return
    try:
        ev.time = dm.normalize_time(time)
    except ValueError:
        ev.error = f"invalid time {_show(time)}"
        return

    # -- per type ----------------------------------------------------------------------------
    if t == ACCOUNT:
        active = msg.get("active")
        if type(active) is not bool:
            ev.error = (
                "missing field 'active'" if active is None else f"invalid active {_show(active)}"
            )
            return
        status = msg.get("status")
        if status is not None:
            if type(status) is not str or "\x00" in status or len(status) > 256:
                ev.error = f"invalid status {_show(status)}"
                return
            status = status.lower()
        ev.active, ev.status = active, status
        ev.payload = None
        return

    if t == IDENTITY:
        handle = msg.get("handle")
        if handle is not None:
            if type(handle) is not str:
                ev.error = f"invalid handle {_show(handle)}"
                return
            handle = handle.lower()
            if not dm.is_handle(handle):
                handle = INVALID_HANDLE
        ev.handle = handle
        ev.payload = None
        return

    commit = _required(ev, msg, "commit", dm.is_cid)
    if commit is None:
        return
    ev.commit = commit

    rev = _required(ev, msg, "rev", dm.is_tid)
    if rev is None:
        return
    ev.rev = rev

    if t == REPO:
        ev.payload = None
        return

    collection = _required(ev, msg, "collection", dm.is_nsid)
    if collection is None:
        return
    ev.collection = collection

    rkey = _required(ev, msg, "rkey", dm.is_record_key)
    if rkey is None:
        return
    ev.rkey = rkey
    ev.uri = f"at://{did}/{collection}/{rkey}"

    if t == DELETE:
        ev.payload = None
        return

    cid = _required(ev, msg, "cid", dm.is_cid)
    if cid is None:
        return
    ev.cid = cid

    record = msg.get("record")
    if record is None:
        ev.error = "missing field 'record'"
        return
    if type(record) is not dict:
        ev.error = f"record is not an object but {type(record).__name__}"
        return
    try:
        record = dm.normalize_record(record)
    except ValueError as e:
        ev.error = f"record: {e}"
        return
    # The raw JSON can only hold a NUL as the escape \u0000, and no decoded string is longer than
    # the payload: skip the per-string scan when neither can be present. Most payloads have no
    # backslash at all, and a one-byte search is several times cheaper than a six-byte one.
    scan = len(payload) > MAX_STRING_BYTES or (b"\\" in payload and _NUL_ESCAPE in payload)
    reason = validate_record(collection, record, scan_strings=scan)
    if reason is None:
        reason = _cross_check(collection, did, rkey, record)
    if reason is not None:
        ev.error = f"record: {reason}"
        return
    ev.record = record
    ev.created_at = dm.normalize_datetime_always(record.get("createdAt"))
    ev.payload = None


def _required(ev: Event, msg: dict[str, Any], name: str, valid: Callable[[Any], bool]) -> Any:
    """The field's value, or None with ``ev.error`` saying why it is missing or malformed."""
    value = msg.get(name)
    if value is None:
        ev.error = f"missing field '{name}'"
        return None
    if not valid(value):
        ev.error = f"invalid {name} {_show(value)}"
        return None
    return value


def decode_entry(stream: str, entry_id: str, fields: dict[Any, Any]) -> Event:
    """One Event for one raw stream entry, good or bad; never raises."""
    if not isinstance(stream, str):
        stream = _as_str(stream)
    if not isinstance(entry_id, str):
        entry_id = _as_str(entry_id)
    ev = Event(stream=stream, entry_id=entry_id)
    try:
        _decode(ev, fields)
    except Exception as e:  # noqa: BLE001 - the contract is "never raises"
        ev.record = None
        ev.error = f"internal decode error: {type(e).__name__}: {e}"
        if ev.payload is None:
            raw = _event_field(fields)
            ev.payload = raw if isinstance(raw, bytes) else _fields_payload(fields)
    return ev
