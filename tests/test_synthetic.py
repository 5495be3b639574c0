"""connectors/synthetic.py: deterministic, well-formed, lexicon-valid firehose events."""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

import libipld
import orjson
import pytest

import cli
from connectors.synthetic import generate

DID = re.compile(r"^did:plc:[a-z2-7]{24}$")
TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6,9}\+00:00$")
CREATED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
AT_URI = re.compile(r"^at://(did:plc:[a-z2-7]{24})/([a-z]+(?:\.[a-zA-Z]+)+)/([a-z2-7]{13})$")
HANDLE = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]+$")

FIELDS = {
    "create": {
        "type",
        "seq",
        "time",
        "did",
        "commit",
        "rev",
        "collection",
        "rkey",
        "cid",
        "record",
    },
    "update": {
        "type",
        "seq",
        "time",
        "did",
        "commit",
        "rev",
        "collection",
        "rkey",
        "cid",
        "record",
    },
    "delete": {"type", "seq", "time", "did", "commit", "rev", "collection", "rkey"},
    "repo": {"type", "seq", "time", "did", "commit", "rev"},
    "account": {"type", "seq", "time", "did", "active", "status"},
    "identity": {"type", "seq", "time", "did", "handle"},
}
FOLLOW = "app.bsky.graph.follow"
LIST_PURPOSES = {"app.bsky.graph.defs#curatelist", "app.bsky.graph.defs#modlist"}
OTHER_COLLECTIONS = {
    "app.bsky.graph.list",
    "app.bsky.graph.listitem",
    "app.bsky.graph.listblock",
    "app.bsky.graph.starterpack",
    "app.bsky.feed.threadgate",
    "app.bsky.feed.postgate",
}
STATUSES = {"takendown", "suspended", "deleted", "deactivated", "desynchronized", "throttled"}


@pytest.fixture(scope="module")
def live() -> list[dict[str, Any]]:
    return list(generate(60_000, n_dids=3_000, seed=11))


@pytest.fixture(scope="module")
def backfill() -> list[dict[str, Any]]:
    return list(generate(30_000, n_dids=400, seed=5, stream_kind="backfill"))


# --- a small lexicon checker for the records the generator makes -------------------------------


def check_cid(value: Any, codec: int = 0x71) -> None:
    assert isinstance(value, str)
    decoded = libipld.decode_cid(value)
    assert decoded["version"] == 1 and decoded["codec"] == codec
    assert decoded["hash"]["code"] == 0x12 and len(decoded["hash"]["digest"]) == 32


def check_strong_ref(ref: Any, collection: str | None = None) -> None:
    assert set(ref) == {"uri", "cid"}
    match = AT_URI.match(ref["uri"])
    assert match, ref
    if collection:
        assert match.group(2) == collection
    check_cid(ref["cid"])


def check_blob(blob: Any, accept: tuple[str, ...]) -> None:
    assert set(blob) == {"$type", "ref", "mimeType", "size"}
    assert blob["$type"] == "blob" and blob["mimeType"] in accept
    assert set(blob["ref"]) == {"$link"}
    check_cid(blob["ref"]["$link"], codec=0x55)
    assert isinstance(blob["size"], int) and 0 < blob["size"] <= 1_000_000


def check_string(value: Any, graphemes: int, max_bytes: int) -> None:
    # A grapheme is at least one code point, so len() bounds the grapheme count from above.
    assert isinstance(value, str) and len(value) <= graphemes
    assert len(value.encode()) <= max_bytes


def check_images(embed: dict[str, Any]) -> None:
    assert 1 <= len(embed["images"]) <= 4
    for image in embed["images"]:
        assert isinstance(image["alt"], str)
        check_blob(image["image"], ("image/jpeg", "image/png"))
        if "aspectRatio" in image:
            ratio = image["aspectRatio"]
            assert set(ratio) == {"width", "height"} and min(ratio.values()) >= 1


def check_embed(embed: dict[str, Any]) -> None:
    kind = embed["$type"]
    if kind == "app.bsky.embed.images":
        check_images(embed)
    elif kind == "app.bsky.embed.external":
        ext = embed["external"]
        assert ext["uri"].startswith("https://")
        assert isinstance(ext["title"], str) and isinstance(ext["description"], str)
        if "thumb" in ext:
            check_blob(ext["thumb"], ("image/jpeg", "image/png"))
    elif kind == "app.bsky.embed.record":
        check_strong_ref(embed["record"])
    elif kind == "app.bsky.embed.recordWithMedia":
        assert embed["record"]["$type"] == "app.bsky.embed.record"
        check_strong_ref(embed["record"]["record"])
        assert embed["media"]["$type"] == "app.bsky.embed.images"
        check_images(embed["media"])
    else:
        raise AssertionError(f"unexpected embed {kind}")


def check_record(collection: str, record: dict[str, Any]) -> None:
    assert record["$type"] == collection
    if collection != "app.bsky.actor.profile" or "createdAt" in record:
        assert CREATED_AT.match(record["createdAt"]), record
    if collection in ("app.bsky.feed.like", "app.bsky.feed.repost"):
        assert set(record) <= {"$type", "subject", "createdAt", "via"}
        check_strong_ref(record["subject"])
        if "via" in record:
            check_strong_ref(record["via"], "app.bsky.feed.repost")
    elif collection in ("app.bsky.graph.follow", "app.bsky.graph.block"):
        assert set(record) == {"$type", "subject", "createdAt"}
        assert DID.match(record["subject"])
    elif collection == "app.bsky.graph.list":
        assert set(record) <= {"$type", "purpose", "name", "description", "createdAt"}
        assert record["purpose"] in LIST_PURPOSES
        check_string(record["name"], 64, 64)
        assert record["name"]
    elif collection in ("app.bsky.graph.listitem", "app.bsky.graph.starterpack"):
        assert AT_URI.match(record["list"]).group(2) == "app.bsky.graph.list"
        if collection == "app.bsky.graph.listitem":
            assert set(record) == {"$type", "subject", "list", "createdAt"}
            assert DID.match(record["subject"])
        else:
            assert set(record) == {"$type", "name", "list", "createdAt"}
            check_string(record["name"], 50, 500)
    elif collection == "app.bsky.graph.listblock":
        assert set(record) == {"$type", "subject", "createdAt"}
        assert AT_URI.match(record["subject"]).group(2) == "app.bsky.graph.list"
    elif collection in ("app.bsky.feed.threadgate", "app.bsky.feed.postgate"):
        assert AT_URI.match(record["post"]).group(2) == "app.bsky.feed.post"
        rules = record["allow"] if "allow" in record else record["embeddingRules"]
        assert set(record) == {
            "$type",
            "post",
            "createdAt",
            "allow" if "allow" in record else "embeddingRules",
        }
        for rule in rules:
            assert rule["$type"].startswith(collection + "#")
            if rule["$type"].endswith("#listRule"):
                assert AT_URI.match(rule["list"]).group(2) == "app.bsky.graph.list"
    elif collection == "app.bsky.actor.profile":
        check_string(record["displayName"], 64, 640)
        check_string(record["description"], 256, 2560)
        for key in ("avatar", "banner"):
            if key in record:
                check_blob(record[key], ("image/png", "image/jpeg"))
    elif collection == "app.bsky.feed.post":
        text = record["text"]
        check_string(text, 300, 3000)
        data = text.encode()
        for facet in record.get("facets", []):
            start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
            assert 0 <= start < end <= len(data)
            piece = data[start:end].decode()
            (feature,) = facet["features"]
            kind = feature["$type"]
            if kind == "app.bsky.richtext.facet#mention":
                assert DID.match(feature["did"]) and piece.startswith("@")
                assert HANDLE.match(piece[1:])
            elif kind == "app.bsky.richtext.facet#link":
                assert piece == feature["uri"] and piece.startswith("https://")
            elif kind == "app.bsky.richtext.facet#tag":
                assert piece == "#" + feature["tag"]
            else:
                raise AssertionError(kind)
        if "reply" in record:
            check_strong_ref(record["reply"]["root"], "app.bsky.feed.post")
            check_strong_ref(record["reply"]["parent"], "app.bsky.feed.post")
        if "embed" in record:
            check_embed(record["embed"])
        if "langs" in record:
            assert 1 <= len(record["langs"]) <= 3
            assert all(re.match(r"^[a-z]{2,3}$", lang) for lang in record["langs"])
    else:
        raise AssertionError(f"unexpected collection {collection}")


def check_event(event: dict[str, Any]) -> None:
    assert orjson.loads(orjson.dumps(event)) == event
    assert set(event) == FIELDS[event["type"]], event
    assert isinstance(event["seq"], int)
    assert TIME.match(event["time"]), event["time"]
    assert DID.match(event["did"])
    if event["type"] in ("create", "update", "delete", "repo"):
        check_cid(event["commit"])
        assert TID.match(event["rev"])
    if event["type"] in ("create", "update", "delete"):
        if event["collection"] == "app.bsky.actor.profile":
            assert event["rkey"] == "self"
        else:
            assert TID.match(event["rkey"]) and event["rkey"] < event["rev"]
    if event["type"] in ("create", "update"):
        check_cid(event["cid"])
        check_record(event["collection"], event["record"])
    if event["type"] == "account":
        assert isinstance(event["active"], bool)
        assert (event["status"] is None) == event["active"]
        assert event["active"] or event["status"].lower() in STATUSES
    if event["type"] == "identity":
        assert event["handle"] is None or HANDLE.match(event["handle"])


# --- live -------------------------------------------------------------------------------------


def test_same_seed_same_events() -> None:
    a = [orjson.dumps(e) for e in generate(3_000, n_dids=300, seed=42)]
    b = [orjson.dumps(e) for e in generate(3_000, n_dids=300, seed=42)]
    c = [orjson.dumps(e) for e in generate(3_000, n_dids=300, seed=43)]
    assert a == b
    assert a != c
    # A prefix is the start of a longer run.
    assert [orjson.dumps(e) for e in generate(1_000, n_dids=300, seed=42)] == a[:1_000]
    back = [orjson.dumps(e) for e in generate(2_000, 300, 42, "backfill")]
    assert back == [orjson.dumps(e) for e in generate(2_000, 300, 42, "backfill")]


def test_every_live_event_is_well_formed(live) -> None:
    assert len(live) == 60_000
    for event in live:
        check_event(event)


def test_live_mix(live) -> None:
    n = len(live)
    kinds = Counter((e["type"], e.get("collection", "").rsplit(".", 1)[-1] or None) for e in live)
    share = {k: v / n for k, v in kinds.items()}
    assert share[("create", "like")] == pytest.approx(0.45, abs=0.012)
    assert share[("create", "follow")] == pytest.approx(0.36, abs=0.012)
    assert share[("create", "post")] == pytest.approx(0.09, abs=0.006)
    assert share[("create", "repost")] == pytest.approx(0.06, abs=0.005)
    rest = 1 - sum(share[("create", k)] for k in ("like", "follow", "post", "repost"))
    assert 0.025 < rest < 0.05
    assert share[("create", "block")] > 0.003
    assert share[("create", "profile")] > 0.003 and share[("update", "profile")] > 0.001
    assert share[("create", "listitem")] > 0.003
    others = {e["collection"] for e in live if e["type"] == "create"} - {
        f"app.bsky.feed.{c}" for c in ("like", "post", "repost")
    }
    assert others >= OTHER_COLLECTIONS
    deletes = {k[1] for k in kinds if k[0] == "delete"}
    assert deletes == {"like", "follow", "post", "repost"}
    assert 0.01 < sum(v for k, v in share.items() if k[0] == "delete") < 0.025
    assert 0.001 < share[("account", None)] < 0.005
    assert 0.001 < share[("identity", None)] < 0.005
    statuses = {e["status"] for e in live if e["type"] == "account"}
    assert None in statuses and any(s and s[0].isupper() for s in statuses)


def test_live_order_and_clocks(live) -> None:
    seqs = [e["seq"] for e in live]
    assert all(b > a for a, b in zip(seqs, seqs[1:], strict=False))
    assert [e["time"] for e in live] == sorted(e["time"] for e in live)
    revs: dict[str, str] = {}
    rkeys: dict[tuple[str, str], str] = {}
    for e in live:
        if "rev" in e:
            assert e["rev"] > revs.get(e["did"], ""), "revs increase per DID"
            revs[e["did"]] = e["rev"]
        if e["type"] == "create" and e["rkey"] != "self":
            key = (e["did"], e["collection"])
            assert e["rkey"] > rkeys.get(key, ""), "rkeys increase per DID and collection"
            rkeys[key] = e["rkey"]


def test_live_references(live) -> None:
    posts: dict[str, tuple[str, dict[str, Any]]] = {}  # uri -> (cid, record)
    alive: set[tuple[str, str, str]] = set()
    created: set[tuple[str, str, str]] = set()
    subjects = earlier = replies = nested = quotes = dups = via = 0
    pairs: Counter[tuple[str, str, str]] = Counter()
    for e in live:
        key = (e["did"], e.get("collection", ""), e.get("rkey", ""))
        if e["type"] == "delete":
            assert key in alive, "a delete removes a record created earlier, once"
            alive.discard(key)
            continue
        if e["type"] != "create":
            continue
        alive.add(key)
        created.add(key)
        record = e["record"]
        if e["collection"] in ("app.bsky.feed.like", "app.bsky.feed.repost"):
            subjects += 1
            earlier += record["subject"]["uri"] in posts
            if record["subject"]["uri"] in posts:
                assert record["subject"]["cid"] == posts[record["subject"]["uri"]][0]
            via += "via" in record
        if e["collection"] in ("app.bsky.feed.like", "app.bsky.feed.repost", FOLLOW):
            subject = record["subject"]
            pairs[(e["did"], e["collection"], orjson.dumps(subject).decode())] += 1
        if e["collection"] == "app.bsky.feed.post":
            reply = record.get("reply")
            if reply:
                replies += 1
                parent = posts[reply["parent"]["uri"]]
                assert parent[0] == reply["parent"]["cid"]
                parent_reply = parent[1].get("reply")
                root = parent_reply["root"] if parent_reply else reply["parent"]
                assert reply["root"] == root, "the root is the parent's root"
                nested += parent_reply is not None
            embed = record.get("embed", {})
            quotes += embed.get("$type", "").startswith("app.bsky.embed.record")
            posts[f"at://{e['did']}/{e['collection']}/{e['rkey']}"] = (e["cid"], record)
    dups = sum(1 for n in pairs.values() if n > 1)
    assert earlier / subjects > 0.8, "likes and reposts mostly refer to generated posts"
    assert replies > 0.25 * len(posts) and nested > 0.1 * replies
    assert quotes > 0.05 * len(posts)
    assert dups > 100 and via > 10


def test_owned_references(live) -> None:
    """A list item or starter pack names its author's own list, and a gate its author's post
    with the gate's rkey, created earlier: what the decoder's cross-checks demand."""
    created: set[str] = set()
    checked = 0
    for e in live:
        if e["type"] != "create":
            continue
        record = e["record"]
        ref = None
        if e["collection"] in ("app.bsky.graph.listitem", "app.bsky.graph.starterpack"):
            ref = record["list"]
        elif e["collection"] in ("app.bsky.feed.threadgate", "app.bsky.feed.postgate"):
            ref = record["post"]
            assert ref.rsplit("/", 1)[1] == e["rkey"]
        if ref is not None:
            assert ref.split("/")[2] == e["did"] and ref in created
            checked += 1
        created.add(f"at://{e['did']}/{e['collection']}/{e['rkey']}")
    assert checked > 200


def test_post_features_appear(live) -> None:
    posts = [
        e["record"]
        for e in live
        if e["type"] == "create" and e["collection"] == "app.bsky.feed.post"
    ]
    facets = [facet for p in posts for facet in p.get("facets", [])]
    features = Counter(f["$type"] for facet in facets for f in facet["features"])
    assert {"mention", "link", "tag"} == {k.rsplit("#", 1)[1] for k in features}
    embeds = Counter(p.get("embed", {}).get("$type") for p in posts)
    for kind in ("images", "external", "record", "recordWithMedia"):
        assert embeds[f"app.bsky.embed.{kind}"] > 20
    assert sum("langs" in p for p in posts) > 0.8 * len(posts)
    assert any(len(p["text"].encode()) > len(p["text"]) for p in posts), "some non-ASCII text"


# --- backfill ---------------------------------------------------------------------------------


def test_backfill_events(backfill) -> None:
    assert len(backfill) == 30_000
    assert {e["type"] for e in backfill} == {"create", "repo"}
    # Repos come one after another: split the stream into runs of one DID.
    runs: list[list[dict[str, Any]]] = []
    for e in backfill:
        check_event(e)
        assert e["seq"] == -1
        if not runs or runs[-1][0]["did"] != e["did"]:
            runs.append([])
        runs[-1].append(e)
    assert len({run[0]["did"] for run in runs}) == 400, "every DID's repo, then round again"
    big = 0
    for events in runs[:-1]:  # the last repo may be cut short by n_events
        assert events[-1]["type"] == "repo"
        creates = [e for e in events if e["type"] == "create"]
        keys = [(e["collection"], e["rkey"]) for e in creates]
        assert keys == sorted(keys), "MST order"
        assert len({(e["commit"], e["rev"]) for e in events}) == 1
        repos = [i for i, e in enumerate(events) if e["type"] == "repo"]
        expected = [min(500 * (k + 1) + k, len(events) - 1) for k in range(len(repos))]
        assert repos == expected, "a repo event after each 500 records and at the end"
        big += len(creates) > 500
    assert big >= 1


def test_backfill_mix(backfill) -> None:
    creates = Counter(e["collection"] for e in backfill if e["type"] == "create")
    n = sum(creates.values())
    assert creates["app.bsky.feed.like"] / n == pytest.approx(0.44, abs=0.04)
    assert creates["app.bsky.graph.follow"] / n == pytest.approx(0.35, abs=0.04)
    assert creates["app.bsky.actor.profile"] > 0


# --- command line and speed -------------------------------------------------------------------


def test_generate_cli_writes_jsonl(tmp_path, capsys) -> None:
    out = tmp_path / "events.jsonl"
    args = ["generate", "--events", "2000", "--dids", "100", "--seed", "3", "--out", str(out)]
    assert cli.main(args) == 0
    assert "wrote 2000 events" in capsys.readouterr().err
    lines = out.read_bytes().splitlines()
    assert lines == [orjson.dumps(e) for e in generate(2000, 100, 3)]
    assert cli.main(["generate", "--events", "5", "--dids", "100", "--seed", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == [line.decode() for line in lines[:5]]


def test_generated_file_replays_into_a_stream(tmp_path, names, rds, redis_url, capsys) -> None:
    out = tmp_path / "events.jsonl"
    assert cli.main(["generate", "--events", "1500", "--seed", "9", "--out", str(out)]) == 0
    rc = cli.main(["replay", str(out), "--stream", names.live, "--redis-url", redis_url])
    assert rc == 0
    entries = rds.xrange(names.live)
    assert [fields[b"event"] for _, fields in entries] == out.read_bytes().splitlines()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        next(generate(1, stream_kind="firehose"))
    with pytest.raises(ValueError):
        next(generate(1, n_dids=1))


def test_fast_enough() -> None:
    started = time.perf_counter()
    count = sum(1 for _ in generate(100_000, seed=1))
    elapsed = time.perf_counter() - started
    assert count == 100_000
    assert elapsed < 10, f"100k events took {elapsed:.1f}s (1M must stay well under a minute)"
