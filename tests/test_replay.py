"""connectors/replay.py against the shared Redis: JSONL and repo CAR files into a stream."""

from __future__ import annotations

import base64
import io
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import libipld
import orjson
import pytest

import cli
from connectors.replay import (
    StreamLoader,
    car_events,
    is_cid_bytes,
    load_events,
    looks_like_car,
    read_car,
    tid_from_micros,
    to_lex_json,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = SHARED / "atproto-fixtures"
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason=f"the real atproto fixtures ({FIXTURES}) are not on this machine: "
    "the CAR and data-model tests need them and they are never copied into the repository",
)

TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")

# The current tree of each fixture repo (the CARs may also hold blocks of older commits: the
# paul_staging export has 252 record blocks, of which 185 are in the tree its root commit names).
CARS: dict[str, dict[str, Any]] = {
    "indigo/atproto/repo/testdata/bnewbold.robocracy.org.20250310005405.car": {
        "version": 3,
        "records": 38,
        "collections": {
            "app.bsky.actor.profile": 1,
            "app.bsky.feed.like": 2,
            "app.bsky.feed.post": 23,
            "app.bsky.feed.repost": 1,
            "app.bsky.graph.follow": 3,
            "blue.linkat.board": 1,
            "com.atproto.lexicon.record": 1,
            "com.atproto.lexicon.schema": 5,
            "net.bnewbold.demo.mushroom": 1,
        },
        "missing": 0,
    },
    "indigo/testing/testdata/paul_staging.repo.car": {
        "version": 2,
        "records": 185,
        "collections": {
            "app.bsky.actor.profile": 1,
            "app.bsky.feed.like": 60,
            "app.bsky.feed.post": 101,
            "app.bsky.feed.repost": 15,
            "app.bsky.graph.follow": 8,
        },
        "missing": 0,
    },
    "indigo/testing/testdata/fakermaker.repo.car": {
        "version": 2,
        "records": 142,
        "collections": {
            "app.bsky.actor.profile": 1,
            "app.bsky.feed.like": 22,
            "app.bsky.feed.post": 26,
            "app.bsky.feed.repost": 15,
            "app.bsky.graph.follow": 78,
        },
        "missing": 0,
    },
    "indigo/testing/testdata/greenground.repo.car": {
        "version": 3,
        "records": 2,
        "collections": {"app.bsky.graph.follow": 2},
        "missing": 0,
    },
    # A slice: the path to one post; the other 4 entries' blocks (and one subtree) are absent.
    "indigo/testing/testdata/repo_slice.car": {
        "version": 2,
        "records": 1,
        "collections": {"app.bsky.feed.post": 1},
        "missing": 4,
    },
}
CARS_BY_NAME = {Path(p).name.split(".")[0]: p for p in CARS}


def _entries(path: str) -> list[tuple[str, bytes]]:
    """An independent count: every MST entry (key, value CID) under the root commit."""
    header, blocks = libipld.decode_car((FIXTURES / path).read_bytes())
    out: list[tuple[str, bytes]] = []

    def walk(cid: bytes | None) -> None:
        node = blocks.get(cid) if cid else None
        if node is None:
            return
        walk(node.get("l"))
        key = b""
        for e in node["e"]:
            key = key[: e["p"]] + e["k"]
            out.append((key.decode(), e["v"]))
            walk(e.get("t"))

    walk(blocks[header["roots"][0]]["data"])
    return out


def _no_bytes(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_no_bytes(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_bytes(v) for v in value)
    return not isinstance(value, bytes | bytearray)


def _blobs(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        found = [value] if value.get("$type") == "blob" else []
        for v in value.values():
            found += _blobs(v)
        return found
    if isinstance(value, list):
        return [b for v in value for b in _blobs(v)]
    return []


def _entries_of(rds: Any, stream: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in rds.xrange(stream)]


# --- the JSON data model --------------------------------------------------------------------


@needs_fixtures
def test_lex_json_matches_interop_data_model_fixtures() -> None:
    cases = orjson.loads(
        (FIXTURES / "atproto-interop-tests/data-model/data-model-fixtures.json").read_bytes()
    )
    assert cases
    for case in cases:
        raw = base64.b64decode(case["cbor_base64"] + "=" * (-len(case["cbor_base64"]) % 4))
        assert to_lex_json(libipld.decode_dag_cbor(raw)) == case["json"]


def test_cid_bytes_are_recognised_strictly() -> None:
    cid = libipld.decode_multibase("bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a")[1]
    assert is_cid_bytes(cid)
    assert not is_cid_bytes(cid + b"\x00")  # trailing bytes
    assert not is_cid_bytes(cid[:-1])  # truncated digest
    assert not is_cid_bytes(b"\x00" + cid)
    assert not is_cid_bytes(b"")
    assert to_lex_json({"a": [cid, b"\x01\x02"]}) == {
        "a": [
            {"$link": "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"},
            {"$bytes": "AQI"},
        ]
    }


def test_tid_and_car_detection() -> None:
    assert tid_from_micros(0) == "2222222222222"
    assert TID.match(tid_from_micros(1_761_825_600_000_000, 7))
    assert tid_from_micros(1_761_825_600_000_001) > tid_from_micros(1_761_825_600_000_000)
    assert not looks_like_car(b'{"type":"create"}')
    assert not looks_like_car(b"")


# --- JSONL ------------------------------------------------------------------------------------


def _jsonl_events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "identity",
            "seq": i,
            "time": "2025-10-30T12:00:00.123456789+00:00",
            "did": f"did:plc:{'a' * 23}{'bc'[i % 2]}",
            "handle": f"u{i}.example.com",
        }
        for i in range(n)
    ]


def test_jsonl_replay_loads_every_line_in_order(tmp_path, names, rds, redis_url, capsys) -> None:
    events = _jsonl_events(1203)  # more than two pipeline chunks
    lines = [orjson.dumps(e).decode() for e in events]
    lines.insert(10, "")
    lines.insert(700, "   ")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    rc = cli.main(["replay", str(path), "--stream", names.live, "--redis-url", redis_url])

    assert rc == 0
    assert "loaded 1203 events" in capsys.readouterr().out
    entries = _entries_of(rds, names.live)
    assert len(entries) == 1203
    assert all(list(fields) == [b"event"] for fields in entries)
    assert [orjson.loads(f[b"event"]) for f in entries] == events
    # The line text is sent as it is, not re-serialised.
    assert entries[0][b"event"] == lines[0].encode()


def test_jsonl_bad_line_is_reported_with_its_number(tmp_path, names, rds, redis_url, capsys):
    good = [orjson.dumps(e).decode() for e in _jsonl_events(3)]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([good[0], "", good[1], good[2], '{"type": "create", oops', "{}"]))

    rc = cli.main(["replay", str(path), "--stream", names.live, "--redis-url", redis_url])

    assert rc == 1
    err = capsys.readouterr().err
    assert "line 5" in err and "not valid JSON" in err
    assert "the 3 events before it were loaded" in err
    assert [f[b"event"].decode() for f in _entries_of(rds, names.live)] == good


def test_jsonl_line_that_is_not_an_object(tmp_path, names, rds, redis_url, capsys) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text("[1, 2]\n")
    rc = cli.main(["replay", str(path), "--stream", names.live, "--redis-url", redis_url])
    assert rc == 1
    err = capsys.readouterr().err
    assert "line 1: not a JSON object" in err and "nothing was loaded" in err
    assert rds.xlen(names.live) == 0


def test_jsonl_from_stdin_with_did_filter(names, rds, redis_url, monkeypatch, capsys) -> None:
    events = _jsonl_events(10)
    data = b"\n".join(orjson.dumps(e) for e in events) + b"\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))
    did = events[1]["did"]

    rc = cli.main(["replay", "-", "--stream", names.live, "--redis-url", redis_url, "--did", did])

    assert rc == 0
    loaded = [orjson.loads(f[b"event"]) for f in _entries_of(rds, names.live)]
    assert loaded == [e for e in events if e["did"] == did] and len(loaded) == 5


def test_missing_file_is_an_error(tmp_path, names, redis_url, capsys) -> None:
    rc = cli.main(
        ["replay", str(tmp_path / "nope.jsonl"), "--stream", names.live, "--redis-url", redis_url]
    )
    assert rc == 1
    assert "nope.jsonl" in capsys.readouterr().err


def test_load_events_api(names, rds) -> None:
    events = _jsonl_events(1001)
    assert load_events(rds, names.live, events, chunk=500) == 1001
    assert load_events(rds, names.live, [b'{"type":"raw"}', '{"type":"text"}'], chunk=7) == 2
    entries = _entries_of(rds, names.live)
    assert len(entries) == 1003
    assert orjson.loads(entries[1000][b"event"]) == events[1000]
    assert entries[-2][b"event"] == b'{"type":"raw"}'


def test_load_events_loads_what_came_before_an_error(names, rds) -> None:
    def events():
        yield from _jsonl_events(7)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        load_events(rds, names.live, events(), chunk=5)
    assert rds.xlen(names.live) == 7


def test_loader_counts_only_what_redis_accepted(names, rds) -> None:
    loader = StreamLoader(rds, names.live, chunk=4)
    for event in _jsonl_events(6):
        loader.add(event)
    assert loader.loaded == 4 and rds.xlen(names.live) == 4
    loader.flush()
    assert loader.loaded == 6 and rds.xlen(names.live) == 6


# --- repo CAR files ---------------------------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize("path", sorted(CARS))
def test_car_events_match_the_repo(path: str) -> None:
    expected = CARS[path]
    data = (FIXTURES / path).read_bytes()
    entries = _entries(path)
    repo = read_car(data)

    assert repo.version == expected["version"]
    assert len(entries) == expected["records"] + expected["missing"]
    assert len(repo.records) == expected["records"]
    assert repo.missing_records == expected["missing"]
    header, blocks = libipld.decode_car(data)
    root = libipld.encode_cid(header["roots"][0])

    events = list(car_events(data, time="2025-10-30T12:00:00.123456+00:00"))
    creates = [e for e in events if e["type"] == "create"]
    assert len(creates) == expected["records"]
    assert Counter(e["collection"] for e in creates) == expected["collections"]
    assert [e["type"] for e in events[-1:]] == ["repo"]
    assert len(events) == len(creates) + 1  # all fixtures are below one chunk of 500
    # Same entries, same order (MST key order), same record CIDs.
    present = [(k, libipld.encode_cid(v)) for k, v in entries if v in blocks]
    assert [(f"{e['collection']}/{e['rkey']}", e["cid"]) for e in creates] == present

    for event in events:
        assert event["seq"] == -1
        assert event["did"] == repo.did and event["did"].startswith("did:plc:")
        assert event["commit"] == root
        assert TID.match(event["rev"])
        assert event["time"] == "2025-10-30T12:00:00.123456+00:00"
    if expected["version"] == 3:
        assert all(e["rev"] == repo.rev for e in events)
    for event in creates:
        record = event["record"]
        assert _no_bytes(record)
        orjson.dumps(record)
        assert libipld.decode_cid(event["cid"])["version"] == 1
        for blob in _blobs(record):
            assert set(blob["ref"]) == {"$link"} and blob["ref"]["$link"].startswith("bafkrei")
            assert isinstance(blob["size"], int) and blob["mimeType"]
        if event["collection"].startswith("app.bsky."):
            assert record["$type"] == event["collection"]


@needs_fixtures
def test_car_records_in_json_data_model() -> None:
    data = (FIXTURES / CARS_BY_NAME["bnewbold"]).read_bytes()
    post = next(
        e for e in car_events(data) if e["type"] == "create" and e["rkey"] == "3kly7jzzyuk2v"
    )
    image = post["record"]["embed"]["images"][0]
    assert image["image"] == {
        "$type": "blob",
        "ref": {"$link": "bafkreievrsvjpdddx35bfpcnlggfeau3pychkxrdruo4f35u66n3q6wavi"},
        "mimeType": "image/jpeg",
        "size": 661891,
    }
    assert image["aspectRatio"] == {"width": 2000, "height": 1500}

    # The AppView's own JSON for the repo_slice post equals ours (legacy blob shape included).
    reference = orjson.loads(
        (FIXTURES / "indigo/testing/testdata/repo_slice_record.json").read_bytes()
    )
    slice_data = (FIXTURES / CARS_BY_NAME["repo_slice"]).read_bytes()
    (create,) = [e for e in car_events(slice_data) if e["type"] == "create"]
    assert f"at://{create['did']}/{create['collection']}/{create['rkey']}" == reference["uri"]
    assert create["cid"] == reference["cid"]
    assert create["record"] == reference["value"]


@needs_fixtures
def test_car_repo_event_after_each_chunk() -> None:
    data = (FIXTURES / CARS_BY_NAME["fakermaker"]).read_bytes()
    events = list(car_events(data, chunk=10))
    kinds = "".join("r" if e["type"] == "repo" else "c" for e in events)
    assert kinds == ("c" * 10 + "r") * 14 + "c" * 2 + "r"  # 142 records
    events = list(car_events(data, chunk=71))
    assert [i for i, e in enumerate(events) if e["type"] == "repo"] == [71, 143]


@needs_fixtures
def test_commit_v2_rev_is_a_tid_of_the_time() -> None:
    data = (FIXTURES / CARS_BY_NAME["paul_staging"]).read_bytes()
    (first, *_) = car_events(data, time="2025-10-30T12:00:00.000001Z")
    assert first["rev"] == tid_from_micros(1_761_825_600_000_001)
    now = list(car_events(data))
    assert TIME.match(now[0]["time"]) and len({e["rev"] for e in now}) == 1


@needs_fixtures
@pytest.mark.parametrize("name", ["bnewbold", "paul_staging", "repo_slice"])
def test_car_replay_through_the_cli(name, tmp_path, names, rds, redis_url, capsys) -> None:
    source = FIXTURES / CARS_BY_NAME[name]
    expected = CARS[CARS_BY_NAME[name]]
    # Content decides, not the name: the same bytes without a .car suffix.
    copy = tmp_path / "repo.bin"
    copy.write_bytes(source.read_bytes())

    rc = cli.main(["replay", str(copy), "--stream", names.backfill, "--redis-url", redis_url])

    assert rc == 0
    captured = capsys.readouterr()
    assert f"{expected['records']} records" in captured.out
    if expected["missing"]:
        assert "partial export" in captured.err
    events = [orjson.loads(f[b"event"]) for f in _entries_of(rds, names.backfill)]
    assert len(events) == expected["records"] + 1
    assert [e["type"] for e in events] == ["create"] * expected["records"] + ["repo"]
    assert all(e["seq"] == -1 and TIME.match(e["time"]) for e in events)


@needs_fixtures
def test_car_replay_refuses_another_did(names, rds, redis_url, capsys) -> None:
    path = FIXTURES / CARS_BY_NAME["greenground"]
    args = ["replay", str(path), "--stream", names.backfill, "--redis-url", redis_url]
    assert cli.main([*args, "--did", "did:plc:someoneelse234567abcdefg"]) == 1
    assert "belongs to did:plc:kzcqyc3unb33eh5sxzsfs25z" in capsys.readouterr().err
    assert rds.xlen(names.backfill) == 0
    assert cli.main([*args, "--did", "did:plc:kzcqyc3unb33eh5sxzsfs25z"]) == 0
    assert rds.xlen(names.backfill) == 3


def test_unreadable_car_is_an_error(tmp_path, names, rds, redis_url, capsys) -> None:
    path = tmp_path / "broken.car"
    path.write_bytes(b"\x3a\xa2eroots\x81" + b"\x00" * 20)
    rc = cli.main(["replay", str(path), "--stream", names.backfill, "--redis-url", redis_url])
    assert rc == 1
    assert "not a readable CAR file" in capsys.readouterr().err
    assert rds.xlen(names.backfill) == 0


def test_loader_waits_below_the_high_water_mark(names, rds) -> None:
    for _ in range(5):
        rds.xadd(names.live, {"event": b"{}"})
    timer = threading.Timer(0.3, lambda: rds.xtrim(names.live, maxlen=0))
    timer.start()
    started = time.monotonic()
    loader = StreamLoader(rds, names.live, chunk=2, high_water=5)
    for event in _jsonl_events(3):
        loader.add(event)
    loader.flush()
    timer.join()
    assert time.monotonic() - started >= 0.25
    assert loader.loaded == 3 and rds.xlen(names.live) == 3
