"""Raw label-stream entry -> Event with ``type='label'``. Never raises.

``decode_label_entry(stream, entry_id, fields)`` accepts both shapes the producers write
(spec/event-format.md, "Label batches"):

* field ``labels``: ``{"seq": 123, "labels": [label, ...]}`` (a batch, possibly empty);
* field ``event``: ``{"type": "label", "label": label}``.

A label is ``src`` (a DID), ``uri`` (an at:// URI or a DID), ``cid`` (a CID, ``{"$link"}``, null
or absent: stored as ''), ``val`` (1 to 128 bytes, as in com.atproto.label.defs), ``neg`` (bool,
null or absent: false), ``cts`` (required) and ``exp`` (optional) timestamps, normalised like every
other timestamp. Other fields (``ver``, ``sig``) are not stored.

An entry is the unit of delivery: when any of its labels is bad, the whole entry is dead-lettered
with a reason naming that label, and none of its labels is written (requeueing it after a fix
applies them all, and replays change nothing).
"""

from __future__ import annotations

from typing import Any

from flows import datamodel as dm
from flows.decode import _as_str, _fields_payload, _show, json_object
from flows.events import LABEL, Event, Label

MAX_VAL_BYTES = 128  # com.atproto.label.defs#label.val maxLength


def _field(fields: Any, name: bytes) -> Any:
    if not isinstance(fields, dict):
        return None
    v = fields.get(name)
    return fields.get(name.decode()) if v is None else v


def _label(raw: Any) -> Label | str:
    """The label, or the reason it cannot be stored."""
    if type(raw) is not dict:
        return f"label is not an object but {type(raw).__name__}"
    src = raw.get("src")
    if not dm.is_did(src):
        return "missing field 'src'" if src is None else f"invalid src {_show(src)}"
    uri = raw.get("uri")
    if not (dm.is_did(uri) or dm.is_at_uri(uri)):
        return "missing field 'uri'" if uri is None else f"invalid uri {_show(uri)}"
    cid = raw.get("cid")
    if type(cid) is dict and set(cid) == {"$link"}:
        cid = cid["$link"]
    if cid is None or cid == "":
        cid = ""
    elif not dm.is_cid(cid):
        return f"invalid cid {_show(cid)}"
    val = raw.get("val")
    if type(val) is not str or not val:
        return "missing field 'val'" if val is None else f"invalid val {_show(val)}"
    if len(val.encode("utf-8", "surrogatepass")) > MAX_VAL_BYTES:
        return f"val longer than {MAX_VAL_BYTES} bytes: {_show(val)}"
    if "\x00" in val:
        return f"invalid val {_show(val)}: NUL byte"
    neg = raw.get("neg")
    if neg is None:
        neg = False
    elif type(neg) is not bool:
        return f"invalid neg {_show(neg)}"
    cts = raw.get("cts")
    if cts is None:
        return "missing field 'cts'"
    try:
        cts = dm.normalize_time(cts)
    except ValueError:
        return f"invalid cts {_show(cts)}"
    exp = raw.get("exp")
    if exp is not None:
        try:
            exp = dm.normalize_time(exp)
        except ValueError:
            return f"invalid exp {_show(exp)}"
        if exp.startswith("0000"):
            # The AppView reads exp::timestamp, and Postgres has no year 0: one such row would
            # fail every getLabels query for its subject.
            return f"invalid exp {_show(raw.get('exp'))}"
    return Label(src, uri, cid, val, neg, cts, exp)


def _decode(ev: Event, fields: Any) -> None:
    raw = _field(fields, b"labels")
    shape = "labels"
    if raw is None:
        raw = _field(fields, b"event")
        shape = "event"
    if raw is None:
        ev.payload = _fields_payload(fields)
        ev.error = "missing field 'labels' or 'event'"
        return
    msg = json_object(ev, fields, raw, shape)
    if msg is None:
        return
    if shape == "event":
        t = msg.get("type")
        if t != LABEL:
            ev.error = "missing field 'type'" if t is None else f"unknown type {_show(t)}"
            return
        if "label" not in msg:
            ev.error = "missing field 'label'"
            return
        items = [msg["label"]]
    else:
        items = msg.get("labels")
        if type(items) is not list:
            ev.error = (
                "missing field 'labels'" if items is None else f"invalid labels {_show(items)}"
            )
            return
        seq = msg.get("seq")
        if seq is not None and type(seq) is not int:
            ev.error = f"invalid seq {_show(seq)}"
            return
        if type(seq) is int:
            ev.seq = seq
    labels = []
    for n, item in enumerate(items):
        label = _label(item)
        if isinstance(label, str):
            ev.error = f"label {n + 1} of {len(items)}: {label}" if len(items) > 1 else label
            return
        labels.append(label)
    ev.type = LABEL
    ev.labels = labels
    ev.payload = None


def decode_label_entry(stream: str, entry_id: str, fields: dict[Any, Any]) -> Event:
    """One Event for one raw label-stream entry, good or bad; never raises."""
    ev = Event(stream=_as_str(stream), entry_id=_as_str(entry_id))
    try:
        _decode(ev, fields)
    except Exception as e:  # noqa: BLE001 - the contract is "never raises"
        ev.labels = None
        ev.error = f"internal decode error: {type(e).__name__}: {e}"
        if ev.payload is None:
            ev.payload = _fields_payload(fields)
    return ev
