"""StreamEvents as the producers write them, for tests: small, explicit, valid."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import libipld

_seq = itertools.count(1000)
_tid = itertools.count(1)
_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"


def tid() -> str:
    """A fresh, increasing record key / revision."""
    n = (1_700_000_000_000_000 << 10) + next(_tid)
    out = ""
    for _ in range(13):
        out = _ALPHABET[n & 31] + out
        n >>= 5
    return out


def cid(seed: str, codec: int = 0x71) -> str:
    """A CIDv1 (sha-256) of the seed; dag-cbor by default, raw (0x55) for blobs."""
    digest = hashlib.sha256(seed.encode()).digest()
    return libipld.encode_cid(bytes([0x01, codec, 0x12, 0x20]) + digest)


def blob_cid(seed: str) -> str:
    return cid(seed, 0x55)


def did(name: str) -> str:
    return "did:plc:" + hashlib.sha256(name.encode()).hexdigest()[:24].translate(
        str.maketrans("0189", "abcd")
    )


def uri(author: str, collection: str, rkey: str) -> str:
    return f"at://{author}/{collection}/{rkey}"


def blob(seed: str, mime: str = "image/jpeg") -> dict[str, Any]:
    return {"$type": "blob", "ref": {"$link": blob_cid(seed)}, "mimeType": mime, "size": 1234}


TIME = "2025-10-30T12:00:00.123456789+00:00"
CREATED = "2025-10-30T11:59:59.000Z"


def create(
    author: str,
    collection: str,
    record: dict[str, Any],
    rkey: str | None = None,
    type_: str = "create",
    time: str = TIME,
) -> dict[str, Any]:
    rkey = rkey or tid()
    record = {"$type": collection, **record}
    record.setdefault("createdAt", CREATED)
    return {
        "type": type_,
        "seq": next(_seq),
        "time": time,
        "did": author,
        "commit": cid(f"commit{next(_seq)}"),
        "rev": tid(),
        "collection": collection,
        "rkey": rkey,
        "cid": cid(repr(sorted(record.items())) + rkey),
        "record": record,
    }


def delete(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "delete",
        "seq": next(_seq),
        "time": TIME,
        "did": event["did"],
        "commit": cid(f"commit{next(_seq)}"),
        "rev": tid(),
        "collection": event["collection"],
        "rkey": event["rkey"],
    }


def update(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    record = {k: v for k, v in event["record"].items() if k != "$type"}
    record.update(changes)
    return create(event["did"], event["collection"], record, rkey=event["rkey"], type_="update")


def ref(event: dict[str, Any]) -> dict[str, str]:
    return {"uri": uri(event["did"], event["collection"], event["rkey"]), "cid": event["cid"]}


def event_uri(event: dict[str, Any]) -> str:
    return uri(event["did"], event["collection"], event["rkey"])


def post(author: str, text: str = "hello", **fields: Any) -> dict[str, Any]:
    return create(author, "app.bsky.feed.post", {"text": text, **fields})


def reply(author: str, root: dict[str, Any], parent: dict[str, Any], text: str = "re") -> dict:
    return post(author, text, reply={"root": ref(root), "parent": ref(parent)})


def like(author: str, subject: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return create(author, "app.bsky.feed.like", {"subject": ref(subject), **fields})


def repost(author: str, subject: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return create(author, "app.bsky.feed.repost", {"subject": ref(subject), **fields})


def follow(author: str, subject: str) -> dict[str, Any]:
    return create(author, "app.bsky.graph.follow", {"subject": subject})


def block(author: str, subject: str) -> dict[str, Any]:
    return create(author, "app.bsky.graph.block", {"subject": subject})


def profile(author: str, **fields: Any) -> dict[str, Any]:
    return create(author, "app.bsky.actor.profile", fields, rkey="self")


def mention(did_: str) -> dict[str, Any]:
    return {
        "index": {"byteStart": 0, "byteEnd": 5},
        "features": [{"$type": "app.bsky.richtext.facet#mention", "did": did_}],
    }
