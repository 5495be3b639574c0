"""Realistic synthetic StreamEvents, the same for the same seed.

``generate(n_events, n_dids=20000, seed=0, stream_kind="live")`` yields StreamEvent dicts in the
producers' shape (``event-format.md``) with valid app.bsky records.

* ``live``: the firehose mix. About 45% likes, 36% follows, 9% posts, 6% reposts; the rest are
  deletes of earlier likes/follows/posts/reposts, profiles (create, then updates), blocks, list
  items, duplicates (a second like/follow/repost of the same subject by the same creator), thread
  and post gates (on the newest post, by its author), lists, list blocks, starter packs, and a few
  account and identity events. Subjects mostly refer to posts generated earlier (recent ones
  more often), so like, repost, reply and quote counters come out meaningful. ``seq`` increases.
* ``backfill``: what the repo backfiller sends: repo after repo, every record a ``create`` in MST
  order (collection, then rkey) with ``seq`` -1, and a ``repo`` event after each 500 records and
  at the end of the repo.

Posts carry replies (root and parent refer to earlier posts, replies to replies included), quotes
(``app.bsky.embed.record``, ``recordWithMedia`` with images), images with blob refs, external
links, mention/link/tag facets with UTF-8 byte offsets, and langs. DIDs are ``did:plc:`` + 24
base32 chars; rkeys and revs are TIDs from a simulated clock (starting 2025-10-30T12:00:00Z, about
1,000 events a second), so they increase per DID; CIDs are real CIDv1 strings over sha256 digests.

CLI: ``bsky-indexer generate --events N [--dids D] [--seed S] [--kind live|backfill] [--out F|-]``.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time as _time
from collections import deque
from collections.abc import Iterator
from typing import IO, Any

import libipld
import orjson

START_US = 1_761_825_600_000_000  # 2025-10-30T12:00:00Z in microseconds
FIRST_SEQ = 6_322_500_000
KINDS = ("live", "backfill")

POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"
REPOST = "app.bsky.feed.repost"
FOLLOW = "app.bsky.graph.follow"
BLOCK = "app.bsky.graph.block"
PROFILE = "app.bsky.actor.profile"
LIST = "app.bsky.graph.list"
LISTITEM = "app.bsky.graph.listitem"
LISTBLOCK = "app.bsky.graph.listblock"
STARTERPACK = "app.bsky.graph.starterpack"
THREADGATE = "app.bsky.feed.threadgate"
POSTGATE = "app.bsky.feed.postgate"

# The live mix: (kind, share). "dup" is a second like/follow/repost of the same subject.
MIX = (
    ("like", 0.45),
    ("follow", 0.36),
    ("post", 0.09),
    ("repost", 0.06),
    ("delete", 0.0125),
    ("profile", 0.006),
    ("block", 0.005),
    ("listitem", 0.005),
    ("dup", 0.004),
    ("account", 0.002),
    ("identity", 0.002),
    ("threadgate", 0.0015),
    ("postgate", 0.0005),
    ("list", 0.0005),
    ("listblock", 0.0003),
    ("starterpack", 0.0002),
)
# Kinds whose author is the owner of what they refer to (a list, a post); see _owned.
OWNED = ("listitem", "threadgate", "postgate", "starterpack")
LIST_PURPOSES = ("app.bsky.graph.defs#curatelist", "app.bsky.graph.defs#modlist")
GATE_RULES = (
    (),
    ("app.bsky.feed.threadgate#mentionRule",),
    ("app.bsky.feed.threadgate#followingRule",),
    ("app.bsky.feed.threadgate#followerRule", "app.bsky.feed.threadgate#mentionRule"),
    ("app.bsky.feed.threadgate#listRule",),
)
BACKFILL_MIX = (("like", 0.45), ("follow", 0.36), ("post", 0.11), ("repost", 0.06), ("block", 0.02))

_B32 = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 lower case: DIDs and CIDs
_S32 = "234567abcdefghijklmnopqrstuvwxyz"  # base32-sortable: TIDs
_PAIRS = [_S32[i >> 5] + _S32[i & 31] for i in range(1024)]
_CID_DAG_CBOR = b"\x01\x71\x12\x20"  # CIDv1, dag-cbor, sha2-256, 32 bytes
_CID_RAW = b"\x01\x55\x12\x20"  # CIDv1, raw, sha2-256, 32 bytes (blobs)

WORDS = (
    "the a an and or but so then just really very good great bad new old first last long little "
    "own other big high small large next early young important few public same able today "
    "tomorrow yesterday night morning week year time people way day man woman child world life "
    "hand part place case point group number fact work home water room mother area money story "
    "month lot right study book eye job word issue side kind head house friend father power hour "
    "game line end member law car city name team minute idea kid body info back parent face "
    "others level office door health person art war history party result change reason research "
    "girl guy moment air teacher force coffee music photo post thread feed sky blue cloud rain "
    "sun garden cat dog bird code bug deploy server index stream fire hose think know want look "
    "make get see come take find give tell feel try leave call love read write run walk play "
    "watch listen learn build ship fix break eat drink sleep laugh wait hope wonder agree"
).split()
EXTRA = ("café", "naïve", "日本語", "🎉", "🦋", "über", "façade", "😀", "中文", "crème")
NAMES = (
    "alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy rupert "
    "sybil trent victor walter yara zoe ana bruno chen dara emeka fatima goro hana ines jonas "
    "kofi lena mateo nora omar priya quinn rosa sami tomas uma vera wei ximena yusuf zara"
).split()
LANGS = (
    ("en",),
    ("en",),
    ("en",),
    ("en",),
    ("en",),
    ("ja",),
    ("pt",),
    ("de",),
    ("es",),
    ("en", "es"),
)
DOMAINS = ("example.com", "news.example.org", "blog.example.net", "video.example.com")
ACCOUNT_STATES = (
    (False, "deactivated", 35),
    (True, None, 35),
    (False, "takendown", 10),
    (False, "deleted", 10),
    (False, "suspended", 5),
    (False, "desynchronized", 3),
    (False, "throttled", 2),
)


def tid(micros: int, clock_id: int = 0) -> str:
    """A TID: 13 base32-sortable chars for (microseconds since the epoch, clock id)."""
    n = (micros << 10) | clock_id
    p = _PAIRS
    return (
        _S32[(n >> 60) & 31]
        + p[(n >> 50) & 1023]
        + p[(n >> 40) & 1023]
        + p[(n >> 30) & 1023]
        + p[(n >> 20) & 1023]
        + p[(n >> 10) & 1023]
        + p[n & 1023]
    )


def cid_for(digest: bytes, raw: bool = False) -> str:
    """The CIDv1 string (``bafyrei…``, or ``bafkrei…`` for raw) of a sha256 digest."""
    return libipld.encode_cid((_CID_RAW if raw else _CID_DAG_CBOR) + digest)


class _Clock:
    """Fast timestamp strings for a clock in microseconds (the seconds part is cached)."""

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def _prefix(self, sec: int) -> str:
        cache = self._cache
        prefix = cache.get(sec)
        if prefix is None:
            if len(cache) > 256:
                cache.clear()
            prefix = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(sec))
            cache[sec] = prefix
        return prefix

    def created_at(self, micros: int) -> str:
        """A record createdAt: ``2025-10-30T12:00:00.123Z``."""
        sec, us = divmod(micros, 1_000_000)
        return f"{self._prefix(sec)}.{us // 1000:03d}Z"

    def received(self, nanos: int) -> str:
        """An ingester receive time, 6 to 9 fraction digits: ``…12:00:00.1234567+00:00``."""
        sec, ns = divmod(nanos, 1_000_000_000)
        frac = f"{ns:09d}"
        while len(frac) > 6 and frac[-1] == "0":
            frac = frac[:-1]
        return f"{self._prefix(sec)}.{frac}+00:00"


class _Generator:
    def __init__(self, n_dids: int, seed: int, kind: str):
        if n_dids < 2:
            raise ValueError("n_dids must be at least 2")
        if kind not in KINDS:
            raise ValueError(f"stream_kind must be one of {', '.join(KINDS)}, not {kind!r}")
        self.kind = kind
        self.rng = rng = random.Random(seed)
        self.n = n_dids
        self.dids = ["did:plc:" + "".join(rng.choices(_B32, k=24)) for _ in range(n_dids)]
        self.handles = [f"{NAMES[i % len(NAMES)]}{i}.bsky.social" for i in range(n_dids)]
        self.clock_ids = [int(rng.random() * 1024) for _ in range(n_dids)]
        self.has_profile = bytearray(n_dids)
        self.profiled: list[int] = []  # a sample of the accounts with a profile (bounded)
        self.clock = _Clock()
        self.t = START_US  # simulated receive clock, microseconds
        self.seq = FIRST_SEQ
        self._hash = hashlib.sha256(seed.to_bytes(8, "big", signed=True))
        self._counter = 0
        # Bounded, so memory stays flat for any n_events. The most recent posts: (uri, cid,
        # root uri, root cid, author index), and reposts: (uri, cid, subject uri, subject cid).
        self.posts: deque[tuple[str, str, str, str, int]] = deque(maxlen=20_000)
        self.reposts: deque[tuple[str, str, str, str]] = deque(maxlen=5_000)
        self.lists: deque[tuple[str, int]] = deque(maxlen=2_000)  # (uri, author index)
        self.gated: dict[str, str] = {}  # gate collection -> the post it last gated
        # Records a later delete or duplicate may refer to: (did index, collection, rkey, subject),
        # a sample of those still alive (a random slot is replaced once it is full).
        self.live: list[tuple[int, str, str, Any]] = []

    # --- small helpers ---------------------------------------------------------------------

    def _digest(self) -> bytes:
        self._counter += 1
        h = self._hash.copy()
        h.update(self._counter.to_bytes(8, "big"))
        return h.digest()

    def cid(self) -> str:
        return cid_for(self._digest())

    def blob(self, mime: str = "image/jpeg") -> dict[str, Any]:
        return {
            "$type": "blob",
            "ref": {"$link": cid_for(self._digest(), raw=True)},
            "mimeType": mime,
            "size": 20_000 + int(self.rng.random() * 970001),
        }

    @staticmethod
    def _ring_add(ring: list[Any], item: Any, cap: int, rng: random.Random) -> None:
        if len(ring) < cap:
            ring.append(item)
        else:
            ring[int(rng.random() * cap)] = item

    def _recent_index(self, size: int) -> int:
        """An index into posts or reposts, recent ones (the end) far more often: popularity."""
        r = self.rng.random()
        return size - 1 - int(size * r * r * r)

    def _other(self, a: int) -> int:
        """A DID index other than a, skewed towards popular (low) indices."""
        r = self.rng.random()
        b = int(self.n * r * r * r)
        return b if b != a else (b + 1) % self.n

    def _old_post_ref(self) -> dict[str, str]:
        """A post from before the generated period (not in the stream)."""
        rng = self.rng
        did = self.dids[int(rng.random() * self.n)]
        ago = 1 + int(rng.random() * 400 * 86_400_000_000)
        rkey = tid(START_US - ago, int(rng.random() * 1024))
        return {"uri": f"at://{did}/{POST}/{rkey}", "cid": self.cid()}

    def _post_ref(self) -> dict[str, str]:
        posts = self.posts
        if not posts or self.rng.random() < 0.1:
            return self._old_post_ref()
        p = posts[self._recent_index(len(posts))]
        return {"uri": p[0], "cid": p[1]}

    def link(self) -> str:
        rng = self.rng
        return f"https://{rng.choice(DOMAINS)}/{rng.choice(WORDS)}/{int(rng.random() * 1e6)}"

    def text(self, lo: int = 3, hi: int = 15) -> str:
        rng = self.rng
        words = rng.choices(WORDS, k=lo + int(rng.random() * (hi - lo + 1)))
        if rng.random() < 0.1:
            words.insert(int(rng.random() * (len(words) + 1)), rng.choice(EXTRA))
        if not words:
            return ""
        words[0] = words[0].capitalize()
        return " ".join(words)

    # --- records: each returns (collection, rkey, record) ---------------------------------

    def like(self, a: int, us: int) -> tuple[str, str, dict[str, Any]]:
        rng = self.rng
        record: dict[str, Any] = {"$type": LIKE}
        if self.reposts and rng.random() < 0.03:
            r = self.reposts[self._recent_index(len(self.reposts))]
            record["subject"] = {"uri": r[2], "cid": r[3]}
            record["via"] = {"uri": r[0], "cid": r[1]}
        else:
            record["subject"] = self._post_ref()
        record["createdAt"] = self.clock.created_at(us - int(rng.random() * 2_000_000))
        return LIKE, tid(us, self.clock_ids[a]), record

    def repost(self, a: int, us: int) -> tuple[str, str, dict[str, Any]]:
        record = {
            "$type": REPOST,
            "subject": self._post_ref(),
            "createdAt": self.clock.created_at(us - int(self.rng.random() * 2_000_000)),
        }
        return REPOST, tid(us, self.clock_ids[a]), record

    def follow(self, a: int, us: int) -> tuple[str, str, dict[str, Any]]:
        return self._subject_did(FOLLOW, a, us)

    def block(self, a: int, us: int) -> tuple[str, str, dict[str, Any]]:
        return self._subject_did(BLOCK, a, us)

    def _subject_did(self, collection: str, a: int, us: int) -> tuple[str, str, dict[str, Any]]:
        """A follow or a block: the subject is another account's DID."""
        record = {
            "$type": collection,
            "subject": self.dids[self._other(a)],
            "createdAt": self.clock.created_at(us - int(self.rng.random() * 2_000_000)),
        }
        return collection, tid(us, self.clock_ids[a]), record

    def graph_list(self, a: int, us: int) -> tuple[str, str, dict[str, Any]]:
        rng = self.rng
        record: dict[str, Any] = {
            "$type": LIST,
            "purpose": rng.choice(LIST_PURPOSES),
            "name": self.text(1, 4)[:64],
        }
        if rng.random() < 0.6:
            record["description"] = self.text(3, 20)
        record["createdAt"] = self.clock.created_at(us - int(rng.random() * 2_000_000))
        return LIST, tid(us, self.clock_ids[a]), record

    def list_block(self, a: int, us: int) -> tuple[str, str, dict[str, Any]]:
        if not self.lists:
            return self.block(a, us)
        record = {
            "$type": LISTBLOCK,
            "subject": self.lists[self._recent_index(len(self.lists))][0],
            "createdAt": self.clock.created_at(us - int(self.rng.random() * 2_000_000)),
        }
        return LISTBLOCK, tid(us, self.clock_ids[a]), record

    def _owned(self, kind: str, us: int) -> tuple[int, str, str, dict[str, Any]] | None:
        """A record whose author must own what it refers to: a list item or starter pack (the
        author's list), a thread or post gate (the author's newest post, same rkey). None when
        there is nothing to refer to yet."""
        rng = self.rng
        created = self.clock.created_at(us - int(rng.random() * 2_000_000))
        if kind in ("listitem", "starterpack"):
            if not self.lists:
                return None
            uri, a = self.lists[self._recent_index(len(self.lists))]
            rkey = tid(us, self.clock_ids[a])
            if kind == "listitem":
                subject = self.dids[self._other(a)]
                return (
                    a,
                    LISTITEM,
                    rkey,
                    {
                        "$type": LISTITEM,
                        "subject": subject,
                        "list": uri,
                        "createdAt": created,
                    },
                )
            return (
                a,
                STARTERPACK,
                rkey,
                {
                    "$type": STARTERPACK,
                    "name": self.text(1, 5)[:50],
                    "list": uri,
                    "createdAt": created,
                },
            )
        collection = THREADGATE if kind == "threadgate" else POSTGATE
        if not self.posts or self.gated.get(collection) == self.posts[-1][0]:
            return None
        uri, _cid, _root, _root_cid, a = self.posts[-1]
        self.gated[collection] = uri
        record: dict[str, Any] = {"$type": collection, "post": uri}
        if collection == THREADGATE:
            rules = []
            for rule in rng.choice(GATE_RULES):
                if rule.endswith("#listRule"):
                    if not self.lists:
                        continue
                    rules.append({"$type": rule, "list": self.lists[-1][0]})
                else:
                    rules.append({"$type": rule})
            record["allow"] = rules
        else:
            record["embeddingRules"] = [{"$type": "app.bsky.feed.postgate#disableRule"}]
        record["createdAt"] = created
        return a, collection, uri.rsplit("/", 1)[1], record

    def profile(self, a: int, us: int) -> tuple[str, str, dict[str, Any]]:
        rng = self.rng
        name = NAMES[a % len(NAMES)]
        record: dict[str, Any] = {
            "$type": PROFILE,
            "displayName": f"{name.capitalize()} {rng.choice(NAMES).capitalize()}",
            "description": self.text(4, 20),
        }
        if rng.random() < 0.8:
            record["avatar"] = self.blob("image/jpeg")
        if rng.random() < 0.4:
            record["banner"] = self.blob("image/png")
        record["createdAt"] = self.clock.created_at(us - int(rng.random() * 2_000_000))
        return PROFILE, "self", record

    def post(self, a: int, us: int) -> tuple[str, str, dict[str, Any]]:
        rng = self.rng
        text = self.text()
        facets: list[dict[str, Any]] = []
        size = len(text.encode())

        def add(piece: str, feature: dict[str, Any]) -> None:
            nonlocal text, size
            start = size + 1
            text += " " + piece
            size = start + len(piece.encode())
            facets.append({"index": {"byteStart": start, "byteEnd": size}, "features": [feature]})

        if rng.random() < 0.12:
            for _ in range(1 + int(rng.random() * 2)):
                b = self._other(a)
                add(
                    "@" + self.handles[b],
                    {"$type": "app.bsky.richtext.facet#mention", "did": self.dids[b]},
                )
        if rng.random() < 0.08:
            uri = self.link()
            add(uri, {"$type": "app.bsky.richtext.facet#link", "uri": uri})
        if rng.random() < 0.04:
            tag = rng.choice(WORDS)
            add("#" + tag, {"$type": "app.bsky.richtext.facet#tag", "tag": tag})

        record: dict[str, Any] = {"$type": POST, "text": text}
        if facets:
            record["facets"] = facets
        if self.posts and rng.random() < 0.3:
            p = self.posts[self._recent_index(len(self.posts))]
            record["reply"] = {
                "root": {"uri": p[2], "cid": p[3]},
                "parent": {"uri": p[0], "cid": p[1]},
            }
        r = rng.random()
        if r < 0.15:
            record["embed"] = self._images()
        elif r < 0.20:
            external: dict[str, Any] = {
                "uri": self.link(),
                "title": self.text(2, 8),
                "description": self.text(0, 20) if rng.random() < 0.8 else "",
            }
            if rng.random() < 0.5:
                external["thumb"] = self.blob()
            record["embed"] = {"$type": "app.bsky.embed.external", "external": external}
        elif r < 0.26:
            record["embed"] = {"$type": "app.bsky.embed.record", "record": self._post_ref()}
        elif r < 0.28:
            record["embed"] = {
                "$type": "app.bsky.embed.recordWithMedia",
                "record": {"$type": "app.bsky.embed.record", "record": self._post_ref()},
                "media": self._images(),
            }
        if rng.random() < 0.9:
            record["langs"] = list(rng.choice(LANGS))
        record["createdAt"] = self.clock.created_at(us - int(rng.random() * 2_000_000))
        return POST, tid(us, self.clock_ids[a]), record

    def _images(self) -> dict[str, Any]:
        rng = self.rng
        images = []
        for _ in range(rng.choice((1, 1, 1, 2, 3, 4))):
            image: dict[str, Any] = {"alt": self.text(0, 8) if rng.random() < 0.6 else ""}
            image["image"] = self.blob(rng.choice(("image/jpeg", "image/jpeg", "image/png")))
            if rng.random() < 0.8:
                image["aspectRatio"] = {
                    "width": 200 + int(rng.random() * 1801),
                    "height": 200 + int(rng.random() * 1801),
                }
            images.append(image)
        return {"$type": "app.bsky.embed.images", "images": images}

    def _commit_done(self, a: int, collection: str, rkey: str, cid: str, record: Any) -> None:
        """Remember what later events may refer to (bounded rings: memory stays flat)."""
        rng = self.rng
        if collection == POST:
            uri = f"at://{self.dids[a]}/{POST}/{rkey}"
            reply = record.get("reply")
            root = reply["root"] if reply else {"uri": uri, "cid": cid}
            self.posts.append((uri, cid, root["uri"], root["cid"], a))
            self._ring_add(self.live, (a, POST, rkey, None), 50_000, rng)
        elif collection == LIST:
            self.lists.append((f"at://{self.dids[a]}/{LIST}/{rkey}", a))
        elif collection in (LIKE, FOLLOW, REPOST):
            subject = record["subject"]
            if collection == REPOST:
                uri = f"at://{self.dids[a]}/{REPOST}/{rkey}"
                self.reposts.append((uri, cid, subject["uri"], subject["cid"]))
            self._ring_add(self.live, (a, collection, rkey, subject), 50_000, rng)

    # --- live --------------------------------------------------------------------------------

    def live_events(self, n_events: int) -> Iterator[dict[str, Any]]:
        rng = self.rng
        kinds = [k for k, _ in MIX]
        cum = []
        total = 0.0
        for _, share in MIX:
            total += share
            cum.append(total)
        builders = {
            "like": self.like,
            "follow": self.follow,
            "post": self.post,
            "repost": self.repost,
            "block": self.block,
            "list": self.graph_list,
            "listblock": self.list_block,
        }
        received = self.clock.received
        random_ = rng.random
        n = self.n
        dids = self.dids
        clock_ids = self.clock_ids
        account_weights = [w for _, _, w in ACCOUNT_STATES]
        for _ in range(n_events):
            self.t += 300 + int(rng.random() * 1401)
            us = self.t
            self.seq += 1 if random_() < 0.97 else 2 + int(rng.random() * 4)
            time = received(us * 1000 + int(rng.random() * 1000))
            r = random_() * total
            i = 0
            while r >= cum[i] and i < len(cum) - 1:
                i += 1
            kind = kinds[i]
            if kind == "account":
                active, status, _ = rng.choices(ACCOUNT_STATES, account_weights)[0]
                if status is not None and random_() < 0.3:
                    status = status.capitalize()
                yield {
                    "type": "account",
                    "seq": self.seq,
                    "time": time,
                    "did": dids[int(rng.random() * n)],
                    "active": active,
                    "status": status,
                }
                continue
            if kind == "identity":
                b = int(rng.random() * n)
                r2 = random_()
                if r2 < 0.05:
                    handle = None
                elif r2 < 0.25:
                    handle = f"{NAMES[b % len(NAMES)]}{b}-{int(rng.random() * 100)}.bsky.social"
                    self.handles[b] = handle
                else:
                    handle = self.handles[b]
                yield {
                    "type": "identity",
                    "seq": self.seq,
                    "time": time,
                    "did": dids[b],
                    "handle": handle,
                }
                continue
            if kind == "delete" and self.live:
                j = int(rng.random() * (len(self.live)))
                self.live[j], self.live[-1] = self.live[-1], self.live[j]
                a, collection, rkey, _ = self.live.pop()
                yield {
                    "type": "delete",
                    "seq": self.seq,
                    "time": time,
                    "did": dids[a],
                    "commit": self.cid(),
                    "rev": tid(us, clock_ids[a]),
                    "collection": collection,
                    "rkey": rkey,
                }
                continue
            op = "create"
            entry = self._dup_candidate() if kind == "dup" else None
            owned = self._owned(kind, us - 250) if kind in OWNED else None
            if owned is not None:
                a, collection, rkey, record = owned
            elif entry is not None:
                # The same creator, the same subject, a new rkey: a duplicate record.
                a, collection, _, subject = entry
                record = {
                    "$type": collection,
                    "subject": dict(subject) if isinstance(subject, dict) else subject,
                    "createdAt": self.clock.created_at(us - int(rng.random() * 2_000_000)),
                }
                rkey = tid(us - 250, clock_ids[a])
            elif kind == "profile":
                # Three in ten profile commits edit an existing profile: updates.
                profiled = self.profiled
                if profiled and random_() < 0.3:
                    a = profiled[int(random_() * len(profiled))]
                else:
                    a = int(random_() * n)
                    if not self.has_profile[a]:
                        self._ring_add(profiled, a, 10_000, rng)
                collection, rkey, record = self.profile(a, us)
                if self.has_profile[a]:
                    op = "update"
                self.has_profile[a] = 1
            else:
                a = int(rng.random() * n)
                collection, rkey, record = builders.get(kind, self.like)(a, us - 250)
            cid = self.cid()
            self._commit_done(a, collection, rkey, cid, record)
            yield {
                "type": op,
                "seq": self.seq,
                "time": time,
                "did": dids[a],
                "commit": self.cid(),
                "rev": tid(us, clock_ids[a]),
                "collection": collection,
                "rkey": rkey,
                "cid": cid,
                "record": record,
            }

    def _dup_candidate(self) -> tuple[int, str, str, Any] | None:
        live = self.live
        for _ in range(4):
            if not live:
                return None
            entry = live[int(self.rng.random() * (len(live)))]
            if entry[1] != POST:
                return entry
        return None

    # --- backfill ----------------------------------------------------------------------------

    def backfill_events(self, n_events: int) -> Iterator[dict[str, Any]]:
        rng = self.rng
        builders = [getattr(self, k) for k, _ in BACKFILL_MIX]
        weights = [w for _, w in BACKFILL_MIX]
        received = self.clock.received
        emitted = 0
        a = -1
        while emitted < n_events:
            a = (a + 1) % self.n
            did = self.dids[a]
            size = min(int(rng.paretovariate(1.2) * 6), 3000)
            # Record times spread over the year before the repo is sent; rkeys from them.
            now = self.t
            year = 365 * 86_400_000_000
            times = sorted(now - 1 - int(rng.random() * year) for _ in range(size))
            made = []
            for us, build in zip(times, rng.choices(builders, weights, k=size), strict=True):
                collection, rkey, record = build(a, us)
                cid = self.cid()
                self._commit_done(a, collection, rkey, cid, record)
                made.append((collection, rkey, cid, record))
            if rng.random() < 0.9:
                collection, rkey, record = self.profile(a, now - 1)
                made.append((collection, rkey, self.cid(), record))
            made.sort(key=lambda m: (m[0], m[1]))
            commit = self.cid()
            rev = tid(now, self.clock_ids[a])
            pending = 0
            for index, (collection, rkey, cid, record) in enumerate(made):
                self.t += 20 + int(rng.random() * 181)
                yield {
                    "type": "create",
                    "seq": -1,
                    "time": received(self.t * 1000 + int(rng.random() * 1000)),
                    "did": did,
                    "commit": commit,
                    "rev": rev,
                    "collection": collection,
                    "rkey": rkey,
                    "cid": cid,
                    "record": record,
                }
                emitted += 1
                pending += 1
                if emitted >= n_events:
                    return
                if pending == 500 or index == len(made) - 1:
                    pending = 0
                    yield self._repo_event(did, commit, rev)
                    emitted += 1
                    if emitted >= n_events:
                        return
            if not made:
                yield self._repo_event(did, commit, rev)
                emitted += 1

    def _repo_event(self, did: str, commit: str, rev: str) -> dict[str, Any]:
        self.t += 20 + int(self.rng.random() * 181)
        time = self.clock.received(self.t * 1000 + int(self.rng.random() * 1000))
        return {"type": "repo", "seq": -1, "time": time, "did": did, "commit": commit, "rev": rev}


def generate(
    n_events: int, n_dids: int = 20000, seed: int = 0, stream_kind: str = "live"
) -> Iterator[dict[str, Any]]:
    """n_events StreamEvents for n_dids accounts; the same events for the same arguments."""
    if n_events < 0:
        raise ValueError("n_events must not be negative")
    gen = _Generator(n_dids, seed, stream_kind)
    if stream_kind == "live":
        return gen.live_events(n_events)
    return gen.backfill_events(n_events)


# --- command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, required=True, help="how many events to write")
    parser.add_argument("--dids", type=int, default=20000, help="distinct accounts (default 20000)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same events")
    parser.add_argument("--kind", choices=KINDS, default="live", help="live mix or backfill repos")
    parser.add_argument("--out", default="-", help="JSONL file to write, - for stdout (default)")


def write_jsonl(events: Iterator[dict[str, Any]], out: IO[bytes]) -> int:
    """Write events one per line; the number written."""
    dumps = orjson.dumps
    buf: list[bytes] = []
    count = 0
    for event in events:
        buf.append(dumps(event))
        count += 1
        if len(buf) == 2000:
            buf.append(b"")
            out.write(b"\n".join(buf))
            buf.clear()
    if buf:
        buf.append(b"")
        out.write(b"\n".join(buf))
    return count


def run(args: argparse.Namespace, settings: Any) -> int:
    if args.events < 0 or args.dids < 2:
        print("bsky-indexer generate: --events must be >= 0 and --dids >= 2", file=sys.stderr)
        return 2
    events = generate(args.events, args.dids, args.seed, args.kind)
    started = _time.perf_counter()
    if args.out == "-":
        count = write_jsonl(events, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        with open(args.out, "wb") as out:
            count = write_jsonl(events, out)
    elapsed = _time.perf_counter() - started
    print(
        f"wrote {count} events ({args.kind}, seed {args.seed}, {args.dids} dids) in {elapsed:.1f}s",
        file=sys.stderr,
    )
    return 0
