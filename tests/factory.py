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


def account(author: str, active: bool, status: str | None = None, time: str = TIME) -> dict:
    return {
        "type": "account",
        "seq": next(_seq),
        "time": time,
        "did": author,
        "active": active,
        "status": status,
    }


def identity(author: str, handle: str | None, time: str = TIME) -> dict[str, Any]:
    return {"type": "identity", "seq": next(_seq), "time": time, "did": author, "handle": handle}


# -- lists, feeds, starter packs, labelers, verifications, declarations ------------------------

FACETS = [
    {
        "index": {"byteStart": 0, "byteEnd": 4},
        "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com"}],
    }
]


def list_(author: str, name: str = "friends", **fields: Any) -> dict[str, Any]:
    fields.setdefault("purpose", "app.bsky.graph.defs#curatelist")
    return create(author, "app.bsky.graph.list", {"name": name, **fields})


def list_item(author: str, lst: dict[str, Any] | str, subject: str) -> dict[str, Any]:
    list_uri = lst if isinstance(lst, str) else event_uri(lst)
    return create(author, "app.bsky.graph.listitem", {"subject": subject, "list": list_uri})


def list_block(author: str, lst: dict[str, Any] | str) -> dict[str, Any]:
    subject = lst if isinstance(lst, str) else event_uri(lst)
    return create(author, "app.bsky.graph.listblock", {"subject": subject})


def list_opt_out(author: str, lst: dict[str, Any] | str) -> dict[str, Any]:
    subject = lst if isinstance(lst, str) else event_uri(lst)
    return create(author, "app.bsky.graph.referencelistoptout", {"subject": subject})


def feed_generator(author: str, feed_did: str, name: str = "Cats", **fields: Any) -> dict:
    return create(
        author, "app.bsky.feed.generator", {"did": feed_did, "displayName": name, **fields}
    )


def starter_pack(author: str, lst: dict[str, Any], name: str = "Pack", **fields: Any) -> dict:
    return create(
        author, "app.bsky.graph.starterpack", {"name": name, "list": event_uri(lst), **fields}
    )


def labeler(author: str, rkey: str = "self", **fields: Any) -> dict[str, Any]:
    fields.setdefault("policies", {"labelValues": ["spam"]})
    return create(author, "app.bsky.labeler.service", fields, rkey=rkey)


def verification(author: str, subject: str, handle: str, name: str = "Someone") -> dict:
    return create(
        author,
        "app.bsky.graph.verification",
        {"subject": subject, "handle": handle, "displayName": name},
    )


def actor_status(author: str, rkey: str = "self", **fields: Any) -> dict[str, Any]:
    fields.setdefault("status", "app.bsky.actor.status#live")
    return create(author, "app.bsky.actor.status", fields, rkey=rkey)


def threadgate(post_: dict[str, Any], allow: list[dict] | None = None, **fields: Any) -> dict:
    """A threadgate on post_ (same author and rkey); ``allow=None`` leaves the field out."""
    if allow is not None:
        fields["allow"] = allow
    record = {"post": event_uri(post_), **fields}
    return create(post_["did"], "app.bsky.feed.threadgate", record, rkey=post_["rkey"])


def rule(name: str, **fields: Any) -> dict[str, Any]:
    """A threadgate rule: mentionRule, followerRule, followingRule or listRule (with list=)."""
    return {"$type": f"app.bsky.feed.threadgate#{name}", **fields}


def postgate(post_: dict[str, Any], disable: bool = True, **fields: Any) -> dict[str, Any]:
    """A postgate on post_; ``disable`` adds the rule that forbids quoting it."""
    if disable:
        fields["embeddingRules"] = [{"$type": "app.bsky.feed.postgate#disableRule"}]
    record = {"post": event_uri(post_), **fields}
    return create(post_["did"], "app.bsky.feed.postgate", record, rkey=post_["rkey"])


def gallery(*seeds: str) -> dict[str, Any]:
    """A gallery embed with one image item per seed."""
    items = [
        {
            "$type": "app.bsky.embed.gallery#image",
            "image": blob(s, "image/png"),
            "alt": s,
            "aspectRatio": {"width": 4, "height": 3},
        }
        for s in seeds
    ]
    return {"$type": "app.bsky.embed.gallery", "items": items}


def quote_embed(subject: dict[str, Any], media: dict[str, Any] | None = None) -> dict[str, Any]:
    """An embed of subject's record, with media (recordWithMedia) when given."""
    record = {"$type": "app.bsky.embed.record", "record": ref(subject)}
    if media is None:
        return record
    return {"$type": "app.bsky.embed.recordWithMedia", "record": record, "media": media}
