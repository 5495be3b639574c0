"""Dense, seeded StreamEvent sequences for the differential test against the upstream indexer.

``sequence(seed, n_events)`` gives the same events for the same arguments: a handful of DIDs, so
that replies, quotes, likes, gates, lists and account events keep landing on each other's records.
It mixes creates, updates (of every collection, including changed subjects), deletes (of live and
already deleted records), duplicates (a second like/repost/follow/block/listitem/... of the same
subject), replies with wrong roots and to missing posts, quotes of posts, lists, feeds and packs,
records that fail validation, and account and identity events.

Each kind of event can be switched off; ``ENABLED`` is what the differential test generates, i.e.
what our indexer handles so far. Enabling a kind is a one-line change there.

Left out on purpose: identity events without a handle (docs/semantics.md: we keep the known
handle, upstream re-resolves the DID), commits from an account after its deletion, and ``repo``
events (backfill only; upstream has no such event).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from connectors.synthetic import (
    BLOCK,
    FOLLOW,
    LIKE,
    LIST,
    LISTBLOCK,
    LISTITEM,
    POST,
    POSTGATE,
    PROFILE,
    REPOST,
    START_US,
    STARTERPACK,
    THREADGATE,
    cid_for,
    tid,
)

OPTOUT = "app.bsky.graph.referencelistoptout"
FEEDGEN = "app.bsky.feed.generator"
LABELER = "app.bsky.labeler.service"
VERIFICATION = "app.bsky.graph.verification"
STATUS = "app.bsky.actor.status"
CHAT_DECLARATION = "chat.bsky.actor.declaration"
NOTIF_DECLARATION = "app.bsky.notification.declaration"
GERM_DECLARATION = "com.germnetwork.declaration"

# kind -> relative weight. Kinds that are not collections: dup (a second record with the same
# subject), update, delete, invalid (a record that fails validation), gallery (post embeds),
# account and identity events.
WEIGHTS: dict[str, float] = {
    "post": 14,
    "like": 10,
    "repost": 5,
    "follow": 5,
    "block": 2,
    "profile": 3,
    "dup": 5,
    "update": 6,
    "delete": 8,
    "invalid": 1,
    "list": 2,
    "listitem": 3,
    "listblock": 1,
    "referencelistoptout": 1,
    "feedgen": 1,
    "starterpack": 1,
    "labeler": 1,
    "verification": 2,
    "status": 1,
    "declaration": 1,
    "threadgate": 3,
    "postgate": 2,
    "gallery": 1,
    "account": 2,
    "identity": 2,
}
ALL = frozenset(WEIGHTS)
CORE = frozenset(
    {"post", "like", "repost", "follow", "block", "profile", "dup", "update", "delete", "invalid"}
)
# What the differential test generates: the kinds our indexer handles so far.
ENABLED = ALL

_B32 = "abcdefghijklmnopqrstuvwxyz234567"
HANDLE_DOMAINS = ("test", "example.org")


class _Sequence:
    def __init__(self, seed: int, n_dids: int, kinds: frozenset[str]):
        unknown = kinds - ALL
        if unknown:
            raise ValueError(f"unknown kinds: {sorted(unknown)}")
        self.rng = random.Random(seed)
        self.kinds = kinds
        self.seed = seed
        self._n = 0
        self.dids = ["did:plc:" + "".join(self.rng.choices(_B32, k=24)) for _ in range(n_dids)]
        self.clock_ids = [self.rng.randrange(1024) for _ in range(n_dids)]
        self.alive = list(self.dids)  # not deleted: a deleted account commits nothing more
        self.us = START_US
        self.seq = 1_000
        # uri -> (did, collection, rkey, record, cid) of every record created and not deleted.
        self.live: dict[str, tuple[str, str, str, dict[str, Any], str]] = {}
        # Every uri ever used per collection, deleted ones included: later records may point at
        # records that are gone, or never were.
        self.seen: dict[str, list[tuple[str, str]]] = {}

    # --- small helpers ---------------------------------------------------------------------

    def _digest(self) -> bytes:
        self._n += 1
        return hashlib.sha256(f"{self.seed}/{self._n}".encode()).digest()

    def cid(self) -> str:
        return cid_for(self._digest())

    def blob(self, mime: str = "image/jpeg") -> dict[str, Any]:
        return {
            "$type": "blob",
            "ref": {"$link": cid_for(self._digest(), raw=True)},
            "mimeType": mime,
            "size": 1000 + self.rng.randrange(500_000),
        }

    def did(self) -> str:
        """Any account: a subject (a follow, a mention...) may be a deleted one."""
        return self.rng.choice(self.dids)

    def author(self) -> str:
        return self.rng.choice(self.alive)

    def created_at(self) -> str:
        """createdAt in the shapes real clients send; sometimes after the event (a skewed clock)."""
        us = self.us + self.rng.randrange(-90_000_000, 5_000_000)
        secs, frac = divmod(us, 1_000_000)
        h, rem = divmod(secs % 86_400, 3600)
        m, s = divmod(rem, 60)
        day = "2025-10-30" if secs // 86_400 == START_US // 86_400_000_000 else "2025-10-29"
        shape = self.rng.random()
        if shape < 0.7:
            return f"{day}T{h:02d}:{m:02d}:{s:02d}.{frac // 1000:03d}Z"
        if shape < 0.8:
            return f"{day}T{h:02d}:{m:02d}:{s:02d}.{frac:06d}+00:00"
        if shape < 0.9:
            return f"{day}T{h:02d}:{m:02d}:{s:02d}Z"
        # the same instant written in another zone: stored normalised to UTC
        return f"{day}T{(h + 2) % 24:02d}:{m:02d}:{s:02d}.{frac // 1000:03d}+02:00"

    def tick(self) -> str:
        """Advance the clock; the event time as producers write it (nanoseconds, +00:00)."""
        self.us += 1_000 + self.rng.randrange(400_000)
        self.seq += 1
        secs, frac = divmod(self.us, 1_000_000)
        h, rem = divmod(secs % 86_400, 3600)
        m, s = divmod(rem, 60)
        return f"2025-10-30T{h:02d}:{m:02d}:{s:02d}.{frac:06d}{self.rng.randrange(1000):03d}+00:00"

    def rkey(self, did: str) -> str:
        return tid(self.us - self.rng.randrange(1_000), self.clock_ids[self.dids.index(did)])

    def pick(self, collection: str, live_only: bool = False) -> tuple[str, str] | None:
        """(uri, cid) of a record of the collection: mostly live ones, sometimes deleted ones."""
        live = [(u, v[4]) for u, v in self.live.items() if v[1] == collection]
        if live and (live_only or self.rng.random() < 0.9):
            return self.rng.choice(live)
        if live_only:
            return None
        seen = self.seen.get(collection, [])
        return self.rng.choice(seen) if seen else None

    def post_ref(self) -> dict[str, str]:
        found = self.pick(POST)
        if found is None or self.rng.random() < 0.05:
            # a post that was never in the stream
            did = self.did()
            return {"uri": f"at://{did}/{POST}/{tid(START_US - 10**9, 7)}", "cid": self.cid()}
        return {"uri": found[0], "cid": found[1]}

    def ref(self, collection: str) -> dict[str, str] | None:
        found = self.pick(collection)
        return {"uri": found[0], "cid": found[1]} if found else None

    # --- records: (collection, rkey, record) or None when the kind cannot be made yet ------

    def post(self, did: str, gallery: bool = False) -> tuple[str, str, dict[str, Any]]:
        rng = self.rng
        text = rng.choice(("hello", "gm", "a thread 🧵", "café crème", "日本語のテキスト", "ok"))
        record: dict[str, Any] = {"$type": POST, "text": text}
        facets = []
        for _ in range(rng.choice((0, 0, 0, 1, 2))):
            start = len(record["text"].encode()) + 1
            handle = "@someone.test"
            record["text"] += " " + handle
            feature = {"$type": "app.bsky.richtext.facet#mention", "did": self.did()}
            if rng.random() < 0.2:
                feature = {"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com/x"}
            facets.append(
                {
                    "index": {"byteStart": start, "byteEnd": start + len(handle)},
                    "features": [feature],
                }
            )
        if facets:
            record["facets"] = facets
        if rng.random() < 0.45:
            parent = self.post_ref()
            root = parent
            p = self.live.get(parent["uri"])
            if p is not None and "reply" in p[3]:
                root = p[3]["reply"]["root"]
            if rng.random() < 0.08:
                root = self.post_ref()  # a wrong root: invalidReplyRoot
            record["reply"] = {"root": root, "parent": parent}
        embed = rng.random()
        if embed < 0.15:
            quoted: dict[str, str] | None = self.post_ref()
            if rng.random() < 0.3:
                for collection in (LIST, FEEDGEN, STARTERPACK):
                    if rng.random() < 0.5:
                        quoted = self.ref(collection) or quoted
            record["embed"] = {"$type": "app.bsky.embed.record", "record": quoted}
        elif embed < 0.22:
            record["embed"] = {
                "$type": "app.bsky.embed.recordWithMedia",
                "record": {"$type": "app.bsky.embed.record", "record": self.post_ref()},
                "media": self.gallery() if gallery and rng.random() < 0.5 else self.images(),
            }
        elif embed < 0.32:
            record["embed"] = self.images()
        elif embed < 0.37:
            external: dict[str, Any] = {
                "uri": "https://example.com/a",
                "title": "t",
                "description": "",
            }
            if rng.random() < 0.5:
                external["thumb"] = self.blob()
            record["embed"] = {"$type": "app.bsky.embed.external", "external": external}
        elif embed < 0.40:
            video: dict[str, Any] = {
                "$type": "app.bsky.embed.video",
                "video": self.blob("video/mp4"),
            }
            if rng.random() < 0.5:
                video["alt"] = "a video"
            record["embed"] = video
        elif gallery:
            record["embed"] = self.gallery()
        if rng.random() < 0.6:
            record["langs"] = rng.choice((["en"], ["ja"], ["en", "pt"]))
        if rng.random() < 0.1:
            record["tags"] = ["tag", "other"]
        record["createdAt"] = self.created_at()
        return POST, self.rkey(did), record

    def images(self) -> dict[str, Any]:
        images = []
        for _ in range(self.rng.choice((1, 1, 2, 4))):
            image: dict[str, Any] = {"image": self.blob(), "alt": self.rng.choice(("", "alt"))}
            if self.rng.random() < 0.5:
                image["aspectRatio"] = {"width": 3, "height": 2}
            images.append(image)
        return {"$type": "app.bsky.embed.images", "images": images}

    def gallery(self) -> dict[str, Any]:
        items = [
            {
                "$type": "app.bsky.embed.gallery#image",
                "image": self.blob("image/png"),
                "alt": self.rng.choice(("", "g")),
                "aspectRatio": {"width": 1, "height": 1},
            }
            for _ in range(self.rng.choice((1, 2, 5)))
        ]
        return {"$type": "app.bsky.embed.gallery", "items": items}

    def subject_record(self, collection: str, did: str) -> tuple[str, str, dict[str, Any]]:
        record: dict[str, Any] = {"$type": collection, "subject": self.post_ref()}
        if collection == LIKE and self.rng.random() < 0.2:
            repost = self.ref(REPOST)
            if repost is not None:
                record["via"] = repost
        record["createdAt"] = self.created_at()
        return collection, self.rkey(did), record

    def did_subject(self, collection: str, did: str) -> tuple[str, str, dict[str, Any]]:
        record = {"$type": collection, "subject": self.did(), "createdAt": self.created_at()}
        return collection, self.rkey(did), record

    def profile(self, did: str) -> tuple[str, str, dict[str, Any]]:
        rng = self.rng
        record: dict[str, Any] = {"$type": PROFILE, "displayName": rng.choice(("A", "Bé", ""))}
        if rng.random() < 0.5:
            record["description"] = "about me"
        if rng.random() < 0.4:
            record["avatar"] = self.blob()
        if rng.random() < 0.2:
            record["pinnedPost"] = self.post_ref()
        if "starterpack" in self.kinds and rng.random() < 0.3:
            pack = self.ref(STARTERPACK)
            if pack is not None:
                record["joinedViaStarterPack"] = pack
        if rng.random() < 0.9:  # optional in the lexicon
            record["createdAt"] = self.created_at()
        rkey = "self" if rng.random() < 0.95 else self.rkey(did)  # not self: a record row only
        return PROFILE, rkey, record

    def list_(self, did: str) -> tuple[str, str, dict[str, Any]]:
        purpose = self.rng.choice(("app.bsky.graph.defs#modlist", "app.bsky.graph.defs#curatelist"))
        record: dict[str, Any] = {"$type": LIST, "purpose": purpose, "name": "a list"}
        self.describe(record)
        record["createdAt"] = self.created_at()
        return LIST, self.rkey(did), record

    def describe(self, record: dict[str, Any]) -> None:
        """Sometimes a description, with a link facet (stored as JSON text by lists and feeds)."""
        if self.rng.random() < 0.5:
            record["description"] = "see ünïcode.example"
            if self.rng.random() < 0.5:
                link = {"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com/u"}
                index = {"byteStart": 4, "byteEnd": 21}
                record["descriptionFacets"] = [{"index": index, "features": [link]}]

    def own_list(self, did: str) -> str | None:
        """A list of did's, mostly; sometimes someone else's (upstream refuses the item)."""
        own = [u for u, v in self.live.items() if v[1] == LIST and v[0] == did]
        if self.rng.random() < 0.1:
            found = self.pick(LIST)
            return found[0] if found else None
        return self.rng.choice(own) if own else None

    def listitem(self, did: str) -> tuple[str, str, dict[str, Any]] | None:
        list_uri = self.own_list(did)
        if list_uri is None:
            return None
        record = {
            "$type": LISTITEM,
            "subject": self.did(),
            "list": list_uri,
            "createdAt": self.created_at(),
        }
        return LISTITEM, self.rkey(did), record

    def list_subject(self, collection: str, did: str) -> tuple[str, str, dict[str, Any]] | None:
        found = self.pick(LIST)
        if found is None:
            return None
        subject = found[0]
        if collection == OPTOUT and self.rng.random() < 0.2:
            subject = subject.replace(LIST, POST)  # not a list: an opt-out declines the row
        record = {"$type": collection, "subject": subject, "createdAt": self.created_at()}
        return collection, self.rkey(did), record

    def feedgen(self, did: str) -> tuple[str, str, dict[str, Any]]:
        record: dict[str, Any] = {
            "$type": FEEDGEN,
            "did": "did:web:feed.example.com",
            "displayName": "My feed",
        }
        self.describe(record)
        record["createdAt"] = self.created_at()
        rkey = self.rng.choice(("whats-hot", "cats", self.rkey(did)))
        return FEEDGEN, rkey, record

    def starterpack(self, did: str) -> tuple[str, str, dict[str, Any]] | None:
        list_uri = self.own_list(did)
        if list_uri is None:
            return None
        record: dict[str, Any] = {
            "$type": STARTERPACK,
            "name": "Join us",
            "list": list_uri,
            "createdAt": self.created_at(),
        }
        feed = self.pick(FEEDGEN)
        if feed is not None:
            record["feeds"] = [{"uri": feed[0]}]
        return STARTERPACK, self.rkey(did), record

    def labeler(self, did: str) -> tuple[str, str, dict[str, Any]]:
        record = {
            "$type": LABELER,
            "policies": {"labelValues": ["spam", "!hide"]},
            "createdAt": self.created_at(),
        }
        return LABELER, "self" if self.rng.random() < 0.9 else self.rkey(did), record

    def verification(self, did: str) -> tuple[str, str, dict[str, Any]]:
        record = {
            "$type": VERIFICATION,
            "subject": self.did(),
            "handle": "someone.test",
            "displayName": "Someone",
            "createdAt": self.created_at(),
        }
        return VERIFICATION, self.rkey(did), record

    def status(self, did: str) -> tuple[str, str, dict[str, Any]]:
        record = {
            "$type": STATUS,
            "status": "app.bsky.actor.status#live",
            "durationMinutes": 30,
            "createdAt": self.created_at(),
        }
        return STATUS, "self" if self.rng.random() < 0.9 else self.rkey(did), record

    def declaration(self, did: str) -> tuple[str, str, dict[str, Any]]:
        rkey = "self" if self.rng.random() < 0.9 else self.rkey(did)
        which = self.rng.randrange(3)
        if which == 0:
            return CHAT_DECLARATION, rkey, {"$type": CHAT_DECLARATION, "allowIncoming": "following"}
        if which == 1:
            record = {"$type": NOTIF_DECLARATION, "allowSubscriptions": "followers"}
            return NOTIF_DECLARATION, rkey, record
        record = {
            "$type": GERM_DECLARATION,
            "version": "1.0.0",
            "currentKey": {"$bytes": "AAECAwQFBgc"},
        }
        return GERM_DECLARATION, rkey, record

    def gate(self, collection: str, did: str) -> tuple[str, str, dict[str, Any]] | None:
        """A thread gate or post gate for one of did's posts (rkey = the post's rkey)."""
        own = [(u, v[2]) for u, v in self.live.items() if v[1] == POST and v[0] == did]
        if not own:
            return None
        post_uri, rkey = self.rng.choice(own)
        if self.rng.random() < 0.05:
            rkey = self.rkey(did)  # rkey not matching the post: upstream refuses the gate
        record: dict[str, Any] = {"$type": collection, "post": post_uri}
        if collection == THREADGATE:
            rules: list[dict[str, Any]] = []
            for rule in ("mentionRule", "followerRule", "followingRule", "listRule"):
                if self.rng.random() < 0.35:
                    rules.append({"$type": f"app.bsky.feed.threadgate#{rule}"})
                    if rule == "listRule":
                        found = self.pick(LIST)
                        if found is None:
                            rules.pop()
                        else:
                            rules[-1]["list"] = found[0]
            record["allow"] = rules
            replies = [u for u, v in self.live.items() if v[1] == POST and v[0] != did]
            if replies and self.rng.random() < 0.3:
                record["hiddenReplies"] = [self.rng.choice(replies)]
        else:
            if self.rng.random() < 0.7:
                record["embeddingRules"] = [{"$type": "app.bsky.feed.postgate#disableRule"}]
            quotes = [u for u, v in self.live.items() if v[1] == POST and v[0] != did]
            if quotes and self.rng.random() < 0.4:
                record["detachedEmbeddingUris"] = [self.rng.choice(quotes)]
        record["createdAt"] = self.created_at()
        return collection, rkey, record

    def invalid(self, did: str) -> tuple[str, str, dict[str, Any]]:
        """A record both sides must refuse: bad datetime, wrong $type, missing field, bad blob."""
        collection, rkey, record = self.subject_record(LIKE, did)
        which = self.rng.randrange(4)
        if which == 0:
            record["createdAt"] = "yesterday"
        elif which == 1:
            record["$type"] = POST
        elif which == 2:
            del record["subject"]
        else:
            collection, rkey, record = self.post(did)
            record["embed"] = {
                "$type": "app.bsky.embed.images",
                "images": [{"image": {"cid": self.cid(), "mimeType": "image/jpeg"}, "alt": ""}],
            }
        return collection, rkey, record

    # --- events ----------------------------------------------------------------------------

    def commit(self, op: str, did: str, collection: str, rkey: str, record: Any) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": op,
            "seq": self.seq,
            "time": "",
            "did": did,
            "commit": self.cid(),
            "rev": self.rkey(did),
            "collection": collection,
            "rkey": rkey,
        }
        uri = f"at://{did}/{collection}/{rkey}"
        if op == "delete":
            self.live.pop(uri, None)
        else:
            cid = self.cid()
            event["cid"] = cid
            event["record"] = record
            self.live[uri] = (did, collection, rkey, record, cid)
            self.seen.setdefault(collection, []).append((uri, cid))
        return event

    def make(self, kind: str, did: str) -> tuple[str, str, dict[str, Any]] | None:
        builders = {
            "post": lambda: self.post(did),
            "gallery": lambda: self.post(did, gallery=True),
            "like": lambda: self.subject_record(LIKE, did),
            "repost": lambda: self.subject_record(REPOST, did),
            "follow": lambda: self.did_subject(FOLLOW, did),
            "block": lambda: self.did_subject(BLOCK, did),
            "profile": lambda: self.profile(did),
            "list": lambda: self.list_(did),
            "listitem": lambda: self.listitem(did),
            "listblock": lambda: self.list_subject(LISTBLOCK, did),
            "referencelistoptout": lambda: self.list_subject(OPTOUT, did),
            "feedgen": lambda: self.feedgen(did),
            "starterpack": lambda: self.starterpack(did),
            "labeler": lambda: self.labeler(did),
            "verification": lambda: self.verification(did),
            "status": lambda: self.status(did),
            "declaration": lambda: self.declaration(did),
            "threadgate": lambda: self.gate(THREADGATE, did),
            "postgate": lambda: self.gate(POSTGATE, did),
            "invalid": lambda: self.invalid(did),
        }
        return builders[kind]()

    def duplicate(self) -> dict[str, Any] | None:
        """The same creator, the same subject, a new rkey."""
        dupable = (LIKE, REPOST, FOLLOW, BLOCK, LISTITEM, LISTBLOCK, OPTOUT, VERIFICATION)
        live = [v for v in self.live.values() if v[1] in dupable]
        if not live:
            return None
        did, collection, _, record, _ = self.rng.choice(live)
        record = {**record, "createdAt": self.created_at()}
        return self.commit("create", did, collection, self.rkey(did), record)

    def update(self) -> dict[str, Any] | None:
        if not self.live:
            return None
        did, collection, rkey, record, _ = self.rng.choice(list(self.live.values()))
        record = dict(record)
        change = self.rng.random()
        if collection == POST and change < 0.5:
            record["text"] = "edited"
            if change < 0.1:
                record.pop("reply", None)  # a reply edited into a top-level post
        elif collection in _KIND_OF and change < 0.4:
            # a changed subject: the row moves (and may collide with another row: a duplicate)
            fresh = self.make(_KIND_OF.get(collection, "like"), did)
            if fresh is not None and "subject" in fresh[2]:
                record["subject"] = fresh[2]["subject"]
        record["createdAt"] = self.created_at()
        return self.commit("update", did, collection, rkey, record)

    def delete(self) -> dict[str, Any] | None:
        rng = self.rng
        if self.live and rng.random() < 0.9:
            did, collection, rkey, _, _ = rng.choice(list(self.live.values()))
        else:
            # a record already deleted (or never indexed), of an account still alive
            gone = [
                u for refs in self.seen.values() for u, _ in refs if u.split("/")[2] in self.alive
            ]
            if not gone:
                return None
            did, collection, rkey = rng.choice(gone)[len("at://") :].split("/")
        return self.commit("delete", did, collection, rkey, None)

    def account(self) -> dict[str, Any]:
        active, status = self.rng.choice(
            (
                (True, None),
                (False, "deactivated"),
                (False, "Deactivated"),
                (False, "takendown"),
                (False, "suspended"),
                (False, "deleted"),
                (False, "desynchronized"),
                (False, None),
            )
        )
        did = self.author()
        if status == "deleted":
            if len(self.alive) <= 2:
                status = "deactivated"  # keep a few accounts that interact
            else:
                self.alive.remove(did)
                self.live = {u: v for u, v in self.live.items() if v[0] != did}
        return {
            "type": "account",
            "seq": self.seq,
            "time": "",
            "did": did,
            "active": active,
            "status": status,
        }

    def identity(self) -> dict[str, Any]:
        i = self.dids.index(self.author())
        shape = self.rng.random()
        if shape < 0.6:
            handle = f"user{i}.{HANDLE_DOMAINS[0]}"
        elif shape < 0.75:
            handle = f"User{i}.Example.ORG"  # upper case: stored lower-cased
        elif shape < 0.9:
            handle = f"user{self.rng.randrange(len(self.dids))}.{HANDLE_DOMAINS[0]}"  # taken over
        else:
            handle = "not a handle"
        return {
            "type": "identity",
            "seq": self.seq,
            "time": "",
            "did": self.dids[i],
            "handle": handle,
        }

    def events(self, n_events: int) -> list[dict[str, Any]]:
        kinds = sorted(self.kinds)
        weights = [WEIGHTS[k] for k in kinds]
        out: list[dict[str, Any]] = []
        while len(out) < n_events:
            time = self.tick()
            kind = self.rng.choices(kinds, weights)[0]
            event: dict[str, Any] | None
            if kind == "dup":
                event = self.duplicate()
            elif kind == "update":
                event = self.update()
            elif kind == "delete":
                event = self.delete()
            elif kind == "account":
                event = self.account()
            elif kind == "identity":
                event = self.identity()
            else:
                did = self.author()
                made = self.make(kind, did)
                event = None if made is None else self.commit("create", did, *made)
                if event is not None and kind == "invalid":
                    self.live.pop(f"at://{did}/{made[0]}/{made[1]}", None)
            if event is not None:
                event["time"] = time
                out.append(event)
        return out


_KIND_OF = {
    LIKE: "like",
    REPOST: "repost",
    FOLLOW: "follow",
    BLOCK: "block",
    LISTITEM: "listitem",
    LISTBLOCK: "listblock",
    OPTOUT: "referencelistoptout",
    VERIFICATION: "verification",
}


def sequence(
    seed: int, n_events: int, n_dids: int = 4, kinds: frozenset[str] = ENABLED
) -> list[dict[str, Any]]:
    """n_events StreamEvents over n_dids accounts; the same list for the same arguments."""
    return _Sequence(seed, n_dids, kinds).events(n_events)
