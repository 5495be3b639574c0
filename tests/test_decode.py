"""flows/decode.py: raw stream entry -> Event, never raising, every bad entry with a reason."""

from __future__ import annotations

import copy

import libipld
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.datamodel import EPOCH
from flows.decode import decode_entry
from flows.events import Event

CID = "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq"
BLOB_CID = "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity"
DID = "did:plc:abc"
TIME = "2025-10-30T12:00:00.1234567+00:00"
NOW = "2025-10-30T11:59:59.000Z"
SUBJECT = {"uri": "at://did:plc:xyz/app.bsky.feed.post/3m4glqtatds2k", "cid": CID}


def like_record(**kw: object) -> dict:
    return {"$type": "app.bsky.feed.like", "subject": SUBJECT, "createdAt": NOW, **kw}


def create(collection: str = "app.bsky.feed.like", record: object = None, **kw: object) -> dict:
    ev = {
        "type": "create",
        "seq": 6322504946,
        "time": TIME,
        "did": DID,
        "commit": CID,
        "rev": "3m4glqtb2xk2a",
        "collection": collection,
        "rkey": "3m4glqtatds2k",
        "cid": CID,
        "record": like_record() if record is None else record,
    }
    ev.update(kw)
    return ev


def fields(ev: object) -> dict:
    return {b"event": orjson.dumps(ev)}


def decode(ev: object) -> Event:
    return decode_entry("firehose_live", "1-0", fields(ev))


def without(d: dict, key: str) -> dict:
    d = dict(d)
    del d[key]
    return d


# --------------------------------------------------------------------------------------------
# Good events
# --------------------------------------------------------------------------------------------


def test_create_like() -> None:
    ev = decode(create())
    assert ev.ok and ev.error is None and ev.payload is None
    assert (ev.stream, ev.entry_id, ev.type, ev.did, ev.seq) == (
        "firehose_live",
        "1-0",
        "create",
        DID,
        6322504946,
    )
    assert ev.time == "2025-10-30T12:00:00.123Z"
    assert (ev.commit, ev.rev, ev.collection, ev.rkey, ev.cid) == (
        CID,
        "3m4glqtb2xk2a",
        "app.bsky.feed.like",
        "3m4glqtatds2k",
        CID,
    )
    assert ev.uri == f"at://{DID}/app.bsky.feed.like/3m4glqtatds2k"
    assert ev.record == like_record()
    assert ev.created_at == NOW


def test_update_with_offset_created_at() -> None:
    ev = decode(create(type="update", record=like_record(createdAt="2025-10-30T13:59:59.5+02:00")))
    assert ev.ok and ev.type == "update"
    assert ev.created_at == "2025-10-30T11:59:59.500Z"
    assert ev.record["createdAt"] == "2025-10-30T13:59:59.5+02:00"  # the record keeps its value


def test_unknown_collection_is_not_an_error() -> None:
    rec = {"$type": "com.example.thing", "anything": {"goes": [1, "x"]}}
    ev = decode(create("com.example.thing", rec))
    assert ev.ok and ev.record == {"$type": "com.example.thing", "anything": {"goes": [1, "x"]}}
    assert ev.created_at == EPOCH  # no createdAt: upstream's normalizeDatetimeAlways gives epoch


def test_delete() -> None:
    msg = without(without(create(type="delete"), "cid"), "record")
    ev = decode(msg)
    assert (
        ev.ok and ev.type == "delete" and ev.uri == f"at://{DID}/app.bsky.feed.like/3m4glqtatds2k"
    )
    assert ev.record is None and ev.cid is None and ev.payload is None


def test_repo_with_and_without_seq() -> None:
    msg = {
        "type": "repo",
        "seq": -1,
        "time": TIME,
        "did": DID,
        "commit": CID,
        "rev": "3m4glqtb2xk2a",
    }
    ev = decode(msg)
    assert ev.ok and (ev.type, ev.seq, ev.commit, ev.rev) == ("repo", -1, CID, "3m4glqtb2xk2a")
    ev = decode(without(msg, "seq"))
    assert ev.ok and ev.seq == -1


@pytest.mark.parametrize(
    ("status", "want"),
    [
        ("Takendown", "takendown"),
        ("deactivated", "deactivated"),
        ("Desynchronized", "desynchronized"),
        (None, None),
    ],
)
def test_account(status: str | None, want: str | None) -> None:
    ev = decode(
        {"type": "account", "seq": 5, "time": TIME, "did": DID, "active": False, "status": status}
    )
    assert (
        ev.ok and ev.type == "account" and ev.active is False and ev.status == want and ev.seq == 5
    )


def test_account_without_status_or_seq() -> None:
    ev = decode({"type": "account", "time": TIME, "did": DID, "active": True})
    assert ev.ok and ev.active is True and ev.status is None and ev.seq == -1


@pytest.mark.parametrize(
    ("handle", "want"),
    [
        ("alice.example.com", "alice.example.com"),
        ("Alice.Example.COM", "alice.example.com"),
        (None, None),
        ("handle.invalid", "handle.invalid"),
        ("Handle.Invalid", "handle.invalid"),
        ("not a handle", "handle.invalid"),
    ],
)
def test_identity(handle: str | None, want: str | None) -> None:
    ev = decode({"type": "identity", "seq": 7, "time": TIME, "did": DID, "handle": handle})
    assert ev.ok and ev.type == "identity" and ev.handle == want


def test_str_fields_and_ids_are_accepted() -> None:
    ev = decode_entry("s", "2-0", {"event": orjson.dumps(create()).decode()})
    assert ev.ok and ev.record == like_record()
    ev = decode_entry(b"s", b"3-0", {b"event": bytearray(orjson.dumps(create()))})  # type: ignore[arg-type]
    assert ev.ok and (ev.stream, ev.entry_id) == ("s", "3-0")


def test_label_producer_time_format() -> None:
    ev = decode(create(time="2025-10-30 12:00:00.123 UTC"))
    assert ev.ok and ev.time == "2025-10-30T12:00:00.123Z"


# --------------------------------------------------------------------------------------------
# Every producer shape of links, bytes and blobs indexes to the same record
# --------------------------------------------------------------------------------------------


def _blob_bytes() -> bytes:
    d = libipld.decode_cid(BLOB_CID)
    return bytes([1, d["codec"], d["hash"]["code"], d["hash"]["size"]]) + d["hash"]["digest"]


REF_SHAPES = {
    "link": {"$link": BLOB_CID},
    "string": BLOB_CID,
    "int-array": list(_blob_bytes()),
    "int-array-multibase-0": [0, *_blob_bytes()],
}
CANONICAL_BLOB = {
    "$type": "blob",
    "ref": {"$link": BLOB_CID},
    "mimeType": "image/jpeg",
    "size": 4321,
}


def _blob(ref: object, mime: str = "image/jpeg", size: object = 4321) -> dict:
    return {"$type": "blob", "ref": copy.deepcopy(ref), "mimeType": mime, "size": size}


def _post_with_media(ref: object) -> dict:
    return {
        "$type": "app.bsky.feed.post",
        "text": "look",
        "createdAt": NOW,
        "embed": {
            "$type": "app.bsky.embed.recordWithMedia",
            "record": {"$type": "app.bsky.embed.record", "record": SUBJECT},
            "media": {
                "$type": "app.bsky.embed.images",
                "images": [{"alt": "a", "image": _blob(ref)}, {"alt": "b", "image": _blob(ref)}],
            },
        },
        "facets": [
            {
                "index": {"byteStart": 0, "byteEnd": 4},
                "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://a.example"}],
            }
        ],
    }


@pytest.mark.parametrize("shape", sorted(REF_SHAPES))
def test_post_blob_shapes_index_identically(shape: str) -> None:
    ev = decode(create("app.bsky.feed.post", _post_with_media(REF_SHAPES[shape])))
    want = _post_with_media({"$link": BLOB_CID})
    assert ev.ok, ev.error
    assert ev.record == want
    assert ev.record["embed"]["media"]["images"][0]["image"] == CANONICAL_BLOB
    assert ev.record["embed"]["record"]["record"]["cid"] == CID  # strongRef cid stays a string
    assert orjson.dumps(ev.record) == orjson.dumps(want)


@pytest.mark.parametrize("shape", sorted(REF_SHAPES))
def test_profile_blob_shapes_index_identically(shape: str) -> None:
    rec = {
        "$type": "app.bsky.actor.profile",
        "displayName": "Alice",
        "avatar": _blob(REF_SHAPES[shape], size=4321.0),
        "banner": _blob(REF_SHAPES[shape], mime="image/png", size=4321),
    }
    ev = decode(create("app.bsky.actor.profile", rec, rkey="self"))
    assert ev.ok, ev.error
    assert ev.record["avatar"] == CANONICAL_BLOB
    assert ev.record["banner"] == {**CANONICAL_BLOB, "mimeType": "image/png"}


@pytest.mark.parametrize("shape", sorted(REF_SHAPES))
def test_video_and_thumb_blob_shapes(shape: str) -> None:
    ref = REF_SHAPES[shape]
    video = {
        "$type": "app.bsky.feed.post",
        "text": "",
        "createdAt": NOW,
        "embed": {"$type": "app.bsky.embed.video", "video": _blob(ref, "video/mp4", 9_000_000)},
    }
    ev = decode(create("app.bsky.feed.post", video))
    assert ev.ok, ev.error
    assert ev.record["embed"]["video"]["ref"] == {"$link": BLOB_CID}
    external = {
        "$type": "app.bsky.feed.post",
        "text": "",
        "createdAt": NOW,
        "embed": {
            "$type": "app.bsky.embed.external",
            "external": {
                "uri": "https://a.example",
                "title": "t",
                "description": "d",
                "thumb": _blob(ref),
            },
        },
    }
    ev = decode(create("app.bsky.feed.post", external))
    assert ev.ok, ev.error
    assert ev.record["embed"]["external"]["thumb"] == CANONICAL_BLOB


def test_bytes_shapes_index_identically() -> None:
    records = [
        {"$type": "com.example.sig", "sig": {"$bytes": "AAEC/w"}},
        {"$type": "com.example.sig", "sig": {"$bytes": "AAEC/w=="}},
        {"$type": "com.example.sig", "sig": [0, 1, 2, 255]},
    ]
    out = [decode(create("com.example.sig", r)).record for r in records]
    assert out == [{"$type": "com.example.sig", "sig": {"$bytes": "AAEC/w"}}] * 3


def test_legacy_blob_is_rejected_with_envelope_kept() -> None:
    rec = {"$type": "app.bsky.actor.profile", "avatar": {"cid": BLOB_CID, "mimeType": "image/jpeg"}}
    ev = decode(create("app.bsky.actor.profile", rec, rkey="self"))
    assert ev.error is not None and "legacy blob" in ev.error
    assert ev.commit == CID and ev.rev == "3m4glqtb2xk2a" and ev.record is None


# --------------------------------------------------------------------------------------------
# Bad input: every entry gets a reason and keeps its bytes
# --------------------------------------------------------------------------------------------


def assert_bad(ev: Event, raw: bytes, reason: str) -> None:
    assert isinstance(ev, Event)
    assert not ev.ok
    assert ev.error is not None and reason in ev.error, ev.error
    assert ev.payload == raw
    assert ev.record is None and ev.created_at is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "invalid JSON"),
        (b"{", "invalid JSON"),
        (b'{"type": "create",}', "invalid JSON"),
        (b"not json", "invalid JSON"),
        (b'{"type":"create","did":"did:plc:\xff"}', "invalid UTF-8 at byte 32"),
        (b"\xc3\x28", "invalid UTF-8"),
        (b"[1, 2]", "not an object but list"),
        (b'"create"', "not an object but str"),
        (b"42", "not an object but int"),
        (b"null", "not an object but NoneType"),
        (b'{"type": "commit"}', "unknown type 'commit'"),
        (b'{"type": 1}', "unknown type 1"),
        (b'{"did": "did:plc:abc"}', "missing field 'type'"),
        (b"{}", "missing field 'type'"),
    ],
)
def test_unparseable_entries(raw: bytes, reason: str) -> None:
    assert_bad(decode_entry("firehose_live", "1-0", {b"event": raw}), raw, reason)


def test_missing_event_field_keeps_the_fields() -> None:
    ev = decode_entry("label_live", "1-0", {b"labels": b'{"seq": 1}'})
    assert ev.error == "missing field 'event'"
    assert orjson.loads(ev.payload) == {"labels": '{"seq": 1}'}
    ev = decode_entry("firehose_live", "1-0", {})
    assert ev.error == "missing field 'event'" and ev.payload == b"{}"


ENVELOPE_CASES = [
    # (mutation, reason, fields expected to be kept)
    (lambda m: without(m, "did"), "missing field 'did'", {"type": "create"}),
    (
        lambda m: {**m, "did": "alice.bsky.social"},
        "invalid did 'alice.bsky.social'",
        {"type": "create"},
    ),
    (lambda m: {**m, "did": "did:plc:"}, "invalid did", {"type": "create"}),
    (lambda m: {**m, "did": 5}, "invalid did 5", {"type": "create"}),
    (lambda m: without(m, "time"), "missing field 'time'", {"did": DID, "seq": 6322504946}),
    (lambda m: {**m, "time": "yesterday"}, "invalid time 'yesterday'", {"did": DID}),
    (lambda m: {**m, "time": "2025-02-30T00:00:00Z"}, "invalid time", {"did": DID}),
    (lambda m: {**m, "time": 1761825600}, "invalid time 1761825600", {"did": DID}),
    (lambda m: without(m, "seq"), "missing field 'seq'", {"did": DID}),
    (lambda m: {**m, "seq": "12"}, "invalid seq '12'", {"did": DID}),
    (lambda m: {**m, "seq": True}, "invalid seq True", {"did": DID}),
    (lambda m: {**m, "seq": 1.5}, "invalid seq 1.5", {"did": DID}),
    (
        lambda m: without(m, "commit"),
        "missing field 'commit'",
        {"time": "2025-10-30T12:00:00.123Z"},
    ),
    (lambda m: {**m, "commit": "not a cid"}, "invalid commit", {"did": DID}),
    (lambda m: without(m, "rev"), "missing field 'rev'", {"commit": CID}),
    (lambda m: {**m, "rev": "2025-10-30"}, "invalid rev '2025-10-30'", {"commit": CID}),
    (lambda m: without(m, "collection"), "missing field 'collection'", {"rev": "3m4glqtb2xk2a"}),
    (
        lambda m: {**m, "collection": "likes"},
        "invalid collection 'likes'",
        {"rev": "3m4glqtb2xk2a"},
    ),
    (lambda m: without(m, "rkey"), "missing field 'rkey'", {"collection": "app.bsky.feed.like"}),
    (lambda m: {**m, "rkey": ".."}, "invalid rkey '..'", {"collection": "app.bsky.feed.like"}),
    (lambda m: {**m, "rkey": "a/b"}, "invalid rkey", {"collection": "app.bsky.feed.like"}),
    (
        lambda m: without(m, "cid"),
        "missing field 'cid'",
        {"uri": f"at://{DID}/app.bsky.feed.like/3m4glqtatds2k"},
    ),
    (lambda m: {**m, "cid": {"$link": CID}}, "invalid cid", {"rkey": "3m4glqtatds2k"}),
    (lambda m: without(m, "record"), "missing field 'record'", {"cid": CID}),
    (lambda m: {**m, "record": None}, "missing field 'record'", {"cid": CID}),
    (lambda m: {**m, "record": "text"}, "record is not an object but str", {"cid": CID}),
    (lambda m: {**m, "record": [like_record()]}, "record is not an object but list", {"cid": CID}),
]


@pytest.mark.parametrize(("mutate", "reason", "kept"), ENVELOPE_CASES)
def test_bad_envelope(mutate, reason: str, kept: dict) -> None:  # noqa: ANN001
    raw = orjson.dumps(mutate(create()))
    ev = decode_entry("firehose_live", "1-0", {b"event": raw})
    assert_bad(ev, raw, reason)
    for k, v in kept.items():
        assert getattr(ev, k) == v


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        (
            {"type": "account", "time": TIME, "did": DID, "status": "deleted"},
            "missing field 'active'",
        ),
        (
            {"type": "account", "time": TIME, "did": DID, "active": "false"},
            "invalid active 'false'",
        ),
        ({"type": "account", "time": TIME, "did": DID, "active": 0}, "invalid active 0"),
        (
            {"type": "account", "time": TIME, "did": DID, "active": True, "status": 3},
            "invalid status 3",
        ),
        (
            {"type": "account", "time": TIME, "did": DID, "active": True, "status": "a\x00"},
            "invalid status",
        ),
        ({"type": "identity", "time": TIME, "did": DID, "handle": ["a.b"]}, "invalid handle"),
        ({"type": "identity", "time": TIME, "did": "did:x"}, "invalid did 'did:x'"),
        ({"type": "repo", "time": TIME, "did": DID, "commit": CID}, "missing field 'rev'"),
        (
            {"type": "repo", "time": TIME, "did": DID, "rev": "3m4glqtb2xk2a"},
            "missing field 'commit'",
        ),
        (
            {
                "type": "delete",
                "seq": 1,
                "time": TIME,
                "did": DID,
                "commit": CID,
                "rev": "3m4glqtb2xk2a",
            },
            "missing field 'collection'",
        ),
    ],
)
def test_bad_repo_level_events(msg: dict, reason: str) -> None:
    raw = orjson.dumps(msg)
    assert_bad(decode_entry("s", "1-0", {b"event": raw}), raw, reason)


RECORD_CASES = [
    (
        "app.bsky.feed.like",
        like_record(subject={**SUBJECT, "uri": "https://x"}),
        "record: subject.uri is not an AT-URI",
    ),
    (
        "app.bsky.feed.like",
        like_record(createdAt="not-a-date"),
        "record: createdAt is not a datetime",
    ),
    ("app.bsky.feed.like", without(like_record(), "subject"), "record: subject is required"),
    (
        "app.bsky.feed.like",
        {**like_record(), "$type": "app.bsky.feed.post"},
        "does not match the collection",
    ),
    ("app.bsky.feed.like", without(like_record(), "$type"), "record has no $type"),
    (
        "app.bsky.graph.follow",
        {"$type": "app.bsky.graph.follow", "subject": "bob", "createdAt": NOW},
        "record: subject is not a DID",
    ),
    (
        "app.bsky.feed.post",
        {"$type": "app.bsky.feed.post", "text": "null \x00 byte", "createdAt": NOW},
        "record: text contains a NUL character",
    ),
    (
        "app.bsky.feed.post",
        {"$type": "app.bsky.feed.post", "text": "x" * 3001, "createdAt": NOW},
        "record: text is longer than 3000 bytes",
    ),
    (
        "com.example.blob",
        {"$type": "com.example.blob", "data": "y" * 200_000},
        "record: data is longer than 100000 bytes",
    ),
    (
        "com.example.nul",
        {"$type": "com.example.nul", "k": ["\x00"]},
        "record: k[0] contains a NUL character",
    ),
    ("app.bsky.feed.like", like_record(weight=0.5), "record: non-integer number 0.5"),
    ("app.bsky.feed.like", like_record(x={"$link": "nope"}), "record: $link is not a CID"),
    (
        "app.bsky.actor.profile",
        {
            "$type": "app.bsky.actor.profile",
            "avatar": {"$type": "blob", "ref": [1, 2], "mimeType": "image/png", "size": 1},
        },
        "record: blob ref bytes are not a CID",
    ),
    (
        "app.bsky.graph.listitem",
        {
            "$type": "app.bsky.graph.listitem",
            "subject": "did:plc:someone",
            "list": "at://did:plc:other/app.bsky.graph.list/3k",
            "createdAt": NOW,
        },
        "belongs to did:plc:other",
    ),
    (
        "app.bsky.feed.threadgate",
        {
            "$type": "app.bsky.feed.threadgate",
            "post": f"at://{DID}/app.bsky.feed.post/3zzzzzzzzzzzz",
            "createdAt": NOW,
        },
        f"is not at://{DID}/app.bsky.feed.post/3m4glqtatds2k",
    ),
    (
        "app.bsky.feed.postgate",
        {
            "$type": "app.bsky.feed.postgate",
            "post": "at://did:plc:other/app.bsky.feed.post/3m4glqtatds2k",
            "createdAt": NOW,
        },
        "is not at://",
    ),
]


@pytest.mark.parametrize(("collection", "record", "reason"), RECORD_CASES)
def test_bad_record_keeps_the_envelope(collection: str, record: dict, reason: str) -> None:
    raw = orjson.dumps(create(collection, record))
    ev = decode_entry("firehose_live", "9-0", {b"event": raw})
    assert_bad(ev, raw, reason)
    # Everything actor_sync and the dead letter need is there.
    assert (ev.type, ev.did, ev.seq, ev.time) == (
        "create",
        DID,
        6322504946,
        "2025-10-30T12:00:00.123Z",
    )
    assert (ev.commit, ev.rev, ev.collection, ev.rkey, ev.cid) == (
        CID,
        "3m4glqtb2xk2a",
        collection,
        "3m4glqtatds2k",
        CID,
    )
    assert ev.uri == f"at://{DID}/{collection}/3m4glqtatds2k"


def test_matching_gates_and_listitem_are_fine() -> None:
    own = {
        "$type": "app.bsky.graph.listitem",
        "subject": "did:plc:someone",
        "list": f"at://{DID}/app.bsky.graph.list/3k",
        "createdAt": NOW,
    }
    assert decode(create("app.bsky.graph.listitem", own)).ok
    gate = {
        "$type": "app.bsky.feed.threadgate",
        "post": f"at://{DID}/app.bsky.feed.post/3m4glqtatds2k",
        "createdAt": NOW,
    }
    assert decode(create("app.bsky.feed.threadgate", gate)).ok
    assert decode(create("app.bsky.feed.postgate", {**gate, "$type": "app.bsky.feed.postgate"})).ok


def test_nul_escape_in_raw_json_is_caught() -> None:
    raw = orjson.dumps(
        create("app.bsky.feed.post", {"$type": "app.bsky.feed.post", "text": "a", "createdAt": NOW})
    )
    raw = raw.replace(b'"text":"a"', b'"text":"a\\u0000b"')
    ev = decode_entry("s", "1-0", {b"event": raw})
    assert_bad(ev, raw, "text contains a NUL character")
    # An escaped backslash followed by "u0000" is not a NUL: no false positive.
    raw2 = raw.replace(b"a\\u0000b", b"a\\\\u0000b")
    assert decode_entry("s", "1-0", {b"event": raw2}).ok


def test_deeply_nested_record_is_an_error_not_a_crash() -> None:
    raw = (
        b'{"type":"create","seq":1,"time":"'
        + TIME.encode()
        + b'","did":"did:plc:abc","commit":"'
        + CID.encode()
    )
    raw += b'","rev":"3m4glqtb2xk2a","collection":"com.example.x","rkey":"k","cid":"' + CID.encode()
    raw += b'","record":{"$type":"com.example.x","v":' + b"[" * 1000 + b"]" * 1000 + b"}}"
    ev = decode_entry("s", "1-0", {b"event": raw})
    assert_bad(ev, raw, "nested too deeply")


def test_input_is_not_mutated() -> None:
    msg = create("app.bsky.feed.post", _post_with_media(REF_SHAPES["int-array"]))
    raw = orjson.dumps(msg)
    f = {b"event": raw}
    before = copy.deepcopy(f)
    decode_entry("s", "1-0", f)
    assert f == before


# --------------------------------------------------------------------------------------------
# Property: decode_entry never raises
# --------------------------------------------------------------------------------------------

KEYS = st.sampled_from(
    [
        "$type",
        "$link",
        "$bytes",
        "ref",
        "cid",
        "uri",
        "mimeType",
        "size",
        "createdAt",
        "text",
        "subject",
        "embed",
    ]
) | st.text(max_size=8)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(
        ["blob", CID, BLOB_CID, NOW, "app.bsky.feed.like", "at://did:plc:x/a.b.c/k", "\x00"]
    )
)
JSON = st.recursive(
    LEAVES,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=40,
)


def _check_invariants(ev: Event) -> None:
    assert isinstance(ev, Event)
    if ev.error is None:
        assert ev.payload is None and ev.type
    else:
        assert isinstance(ev.payload, bytes) and ev.record is None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    ev = decode_entry("s", "1-0", {b"event": raw})
    _check_invariants(ev)
    assert ev.error is not None or raw.strip().startswith(b"{")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, JSON, max_size=8))
def test_never_raises_on_arbitrary_json_objects(obj: dict) -> None:
    _check_invariants(decode(obj))


ENVELOPE = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["create", "update", "delete", "repo", "account", "identity"])
        | LEAVES,
        "seq": st.integers(-(2**63), 2**63 - 1) | LEAVES,
        "time": st.sampled_from([TIME, "2025-10-30 12:00:00.1 UTC"]) | LEAVES,
        "did": st.sampled_from([DID, "did:web:example.com"]) | LEAVES,
        "commit": st.just(CID) | LEAVES,
        "rev": st.just("3m4glqtb2xk2a") | LEAVES,
        "collection": st.sampled_from(
            ["app.bsky.feed.like", "app.bsky.feed.post", "app.bsky.actor.profile", "com.x.y"]
        )
        | LEAVES,
        "rkey": st.sampled_from(["self", "3m4glqtatds2k"]) | LEAVES,
        "cid": st.just(CID) | LEAVES,
        "active": st.booleans() | LEAVES,
        "status": st.sampled_from(["Takendown", None]) | LEAVES,
        "handle": st.sampled_from(["a.example.com", None]) | LEAVES,
    }
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ENVELOPE, JSON)
def test_never_raises_on_arbitrary_records_in_valid_envelopes(
    envelope: dict, record: object
) -> None:
    _check_invariants(decode({**envelope, "record": record}))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.binary(max_size=8) | st.text(max_size=8),
        st.binary(max_size=40) | st.text(max_size=40) | st.integers(),
    )
)
def test_never_raises_on_arbitrary_field_maps(f: dict) -> None:
    _check_invariants(decode_entry("s", "1-0", f))


# --------------------------------------------------------------------------------------------
# Lexicons of lists, feeds, starter packs, labelers, verifications, status and declarations
# (verdicts checked against upstream's own @atproto/lex schemas)
# --------------------------------------------------------------------------------------------

LIST_URI = f"at://{DID}/app.bsky.graph.list/3k"
IMAGE = {"$type": "blob", "ref": {"$link": BLOB_CID}, "mimeType": "image/png", "size": 10}
LABELER = {
    "$type": "app.bsky.labeler.service",
    "policies": {
        "labelValues": ["spam"],
        "labelValueDefinitions": [
            {
                "identifier": "spam",
                "severity": "alert",
                "blurs": "none",
                "locales": [{"lang": "en", "name": "Spam", "description": "spammy"}],
            }
        ],
    },
    "createdAt": NOW,
}
GOOD_RECORDS = [
    {
        "$type": "app.bsky.graph.list",
        "name": "L",
        "purpose": "app.bsky.graph.defs#anything",  # known values only: any string
        "avatar": IMAGE,
        "createdAt": NOW,
    },
    {"$type": "app.bsky.graph.referencelistoptout", "subject": LIST_URI, "createdAt": NOW},
    {
        "$type": "app.bsky.feed.generator",
        "did": "did:web:feeds.example.com",
        "displayName": "e\u0301" * 24,  # 24 graphemes, 48 code points
        "contentMode": "app.bsky.feed.defs#contentModeVideo",
        "createdAt": NOW,
    },
    {
        "$type": "app.bsky.graph.starterpack",
        "name": "P",
        "list": LIST_URI,
        "feeds": [{"$type": "app.bsky.graph.starterpack#feedItem", "uri": LIST_URI}],
        "createdAt": NOW,
    },
    LABELER,
    {
        "$type": "app.bsky.graph.verification",
        "subject": DID,
        "handle": "alice.example.com",
        "displayName": "",
        "createdAt": NOW,
    },
    {"$type": "app.bsky.actor.status", "status": "x", "createdAt": NOW},
    {"$type": "app.bsky.notification.declaration", "allowSubscriptions": "none"},
    {"$type": "com.germnetwork.declaration", "version": "1.0.0", "currentKey": {"$bytes": "AQ"}},
    # Upstream does not validate chat declarations at all.
    {"$type": "chat.bsky.actor.declaration", "allowIncoming": 1},
    {"$type": "app.bsky.feed.post", "text": "x", "langs": ["X-private"], "createdAt": NOW},
    {
        "$type": "app.bsky.feed.post",
        "text": "big picture",
        "embed": {
            "$type": "app.bsky.embed.images",
            "images": [{"image": {**IMAGE, "size": 2_000_000}, "alt": ""}],
        },
        "createdAt": NOW,
    },
]


@pytest.mark.parametrize("record", GOOD_RECORDS, ids=lambda r: r["$type"])
def test_valid_records_of_the_other_collections(record: dict) -> None:
    collection = "chat.bsky.actor.declaration" if "allowIncoming" in record else record["$type"]
    ev = decode(create(collection, record))
    assert ev.ok, ev.error


BAD_RECORDS = [
    (
        {"$type": "app.bsky.graph.list", "name": "x" * 65, "purpose": "p", "createdAt": NOW},
        "name is longer than 64 bytes",
    ),
    (
        {
            "$type": "app.bsky.graph.list",
            "name": "L",
            "purpose": "p",
            "createdAt": NOW,
            "avatar": {**IMAGE, "mimeType": "image/gif"},
        },
        "avatar blob mimeType 'image/gif' is not accepted",
    ),
    (
        {"$type": "app.bsky.graph.listitem", "subject": DID, "list": LIST_URI},
        "createdAt is required",
    ),
    (
        {"$type": "app.bsky.graph.referencelistoptout", "subject": 5, "createdAt": NOW},
        "subject must be a string",
    ),
    (
        {"$type": "app.bsky.feed.generator", "did": "nope", "displayName": "x", "createdAt": NOW},
        "did is not a DID",
    ),
    (
        {
            "$type": "app.bsky.graph.starterpack",
            "name": "P",
            "list": LIST_URI,
            "createdAt": NOW,
            "feeds": [{"uri": LIST_URI}] * 4,
        },
        "feeds has more than 3 items",
    ),
    (
        # A named object's $type must name it, even outside a union.
        {
            "$type": "app.bsky.graph.starterpack",
            "name": "P",
            "list": LIST_URI,
            "createdAt": NOW,
            "feeds": [{"$type": "app.bsky.feed.defs#generatorView", "uri": LIST_URI}],
        },
        "feeds[0].$type must be 'app.bsky.graph.starterpack#feedItem'",
    ),
    (
        {
            **LABELER,
            "policies": {
                **LABELER["policies"],
                "labelValueDefinitions": [
                    {
                        **LABELER["policies"]["labelValueDefinitions"][0],  # type: ignore[index]
                        "locales": [{"lang": "EN", "name": "Spam", "description": "spammy"}],
                    }
                ],
            },
        },
        "locales[0].lang is not a language tag",
    ),
    (
        {**LABELER, "subjectCollections": ["not an nsid"]},
        "subjectCollections[0] is not an NSID",
    ),
    (
        {
            "$type": "app.bsky.graph.verification",
            "subject": DID,
            "handle": "alice.example.com",
            "createdAt": NOW,
        },
        "displayName is required",
    ),
    (
        {
            "$type": "app.bsky.actor.status",
            "status": "x",
            "createdAt": NOW,
            "embed": {"$type": "app.bsky.embed.external", "external": {"uri": "https://x.com"}},
        },
        "embed.external.title is required",
    ),
    (
        {"$type": "com.germnetwork.declaration", "version": "1.0", "currentKey": {"$bytes": "AQ"}},
        "version is shorter than 5 bytes",
    ),
    (
        {"$type": "com.germnetwork.declaration", "version": "1.0.0", "currentKey": "AQ"},
        "currentKey must be bytes",
    ),
    (
        {"$type": "app.bsky.notification.declaration", "allowSubscriptions": None},
        "allowSubscriptions must not be null",
    ),
    (
        {"$type": "app.bsky.feed.post", "text": "x", "langs": ["abcd"], "createdAt": NOW},
        "langs[0] is not a language tag",  # strict BCP-47: a 2-3 letter primary subtag
    ),
    (
        {"$type": "app.bsky.feed.post", "text": "x", "langs": ["de-1901-1901"], "createdAt": NOW},
        "langs[0] is not a language tag",  # a repeated variant
    ),
]


@pytest.mark.parametrize(("record", "reason"), BAD_RECORDS, ids=lambda v: str(v)[:40])
def test_invalid_records_of_the_other_collections(record: dict, reason: str) -> None:
    ev = decode(create(record["$type"], record))
    assert ev.error is not None and reason in ev.error, ev.error
    assert ev.record is None and ev.uri is not None
