"""`bsky-indexer status` and `bsky-indexer dlq list|requeue|drop` against the real Redis."""

from __future__ import annotations

import json
import subprocess
import sys

import orjson
import pytest
from bytewax.testing import run_main

from cli import main
from config.settings import Settings
from connectors.redis_streams import StreamAcker, StreamReader
from connectors.replay import load_events
from flows.events import Event
from flows.index import build_flow

from . import factory as f
from .indexing import rows
from .test_flow import ROOT, indexer_env, settings_for
from .test_labels import event_entry, label

ALICE, BOB = f.did("alice"), f.did("bob")


@pytest.fixture
def env(monkeypatch, names, redis_url):
    """The operator's environment: this test's private streams, group and dead-letter stream."""
    variables = {
        "REDIS_URL": redis_url,
        "INDEXER_STREAMS": f"{names.live},{names.backfill}",
        "INDEXER_LABEL_STREAM": names.labels,
        "INDEXER_GROUP": names.group,
        "INDEXER_LABEL_GROUP": f"{names.group}:labels",
        "INDEXER_DEAD_LETTER_STREAM": names.dead_letter,
    }
    for k, v in variables.items():
        monkeypatch.setenv(k, v)
    return variables


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def dead_letter(rds, names, stream: str, payload: bytes, reason: str, entry_id: str = "1-0"):
    """A dead letter written the way the indexer writes them."""
    acker = StreamAcker(rds, names.group, Settings(dead_letter_stream=names.dead_letter))
    acker.finish([Event(stream, entry_id, error=reason, payload=payload, deliveries=2)])
    return rds.xrange(names.dead_letter)[-1][0].decode()


# -- status -----------------------------------------------------------------------------------


def test_status_shows_length_lag_pending_per_consumer_and_dead_letters(rds, names, env, capsys):
    ids = [i.decode() for i in (rds.xadd(names.live, {"event": b"{}"}) for _ in range(6))]
    for consumer, count in (("host-0", 2), ("host-1", 1)):
        reader = StreamReader(rds, [names.live], names.group, consumer)
        reader.ensure_groups()
        reader.read(count)
    rds.xadd(names.labels, event_entry(label()))
    dead_letter(rds, names, names.live, b"{oops", "invalid JSON")
    dead_letter(rds, names, names.live, b"{", "invalid JSON", "2-0")
    dead_letter(rds, names, names.labels, b"{}", "missing field 'labels' or 'event'")

    code, out, _ = cli(capsys, "status", "--json")
    assert code == 0
    report = json.loads(out)
    by_stream = {s["stream"]: s for s in report["streams"]}
    assert list(by_stream) == [names.live, names.backfill, names.labels]
    live = by_stream[names.live]
    assert (live["length"], live["lag"], live["pending"]) == (6, 3, 3)
    assert {c["name"]: c["pending"] for c in live["consumers"]} == {"host-0": 2, "host-1": 1}
    assert live["oldest_pending_id"] == ids[0]
    assert live["oldest_pending_age_s"] >= 0 and live["oldest_pending_deliveries"] == 1
    assert live["dead_letters"] == 2 and live["dead_letters_at_least"] is False
    labels = by_stream[names.labels]
    # The label group is not there yet: everything in the stream is still to be read.
    assert labels["group"] == f"{names.group}:labels" and labels["group_exists"] is False
    assert (labels["length"], labels["lag"], labels["dead_letters"]) == (1, 1, 1)
    assert by_stream[names.backfill]["length"] == 0
    assert report["dead_letter_length"] == 3

    code, out, _ = cli(capsys, "status")
    assert code == 0
    table = out.splitlines()
    assert table[0].split() == [
        "stream", "group", "length", "lag", "pending", "oldest", "pending", "dead", "letters"
    ]  # fmt: skip
    assert table[2].split()[:5] == [names.live, names.group, "6", "3", "3"]
    assert table[2].split()[-1] == "2"
    assert any(line.split()[:3] == ["host-0", "pending", "2"] for line in table)
    assert f"dead-letter stream {names.dead_letter}: 3 entries" in out


def test_status_follows_the_mode(rds, names, env, capsys, monkeypatch):
    monkeypatch.setenv("INDEXER_MODE", "label")
    _, out, _ = cli(capsys, "status", "--json")
    assert [s["stream"] for s in json.loads(out)["streams"]] == [names.labels]
    monkeypatch.setenv("INDEXER_MODE", "stream")
    _, out, _ = cli(capsys, "status", "--json")
    assert [s["stream"] for s in json.loads(out)["streams"]] == [names.live, names.backfill]


def test_status_counts_the_lag_when_redis_cannot_tell_it(rds, names, env, capsys):
    """Deleting an entry the group has not read yet leaves Redis without a lag: then it is
    counted, exactly up to --scan entries and as a lower bound beyond."""
    ids = [rds.xadd(names.live, {"event": b"{}"}) for _ in range(5)]
    reader = StreamReader(rds, [names.live], names.group, "host-0")
    reader.ensure_groups()
    reader.read(1)
    rds.xdel(names.live, ids[3])
    assert rds.xinfo_groups(names.live)[0]["lag"] is None  # the case this is for

    _, out, _ = cli(capsys, "status", "--json")
    live = json.loads(out)["streams"][0]
    assert (live["lag"], live["lag_at_least"]) == (3, False)
    _, out, _ = cli(capsys, "status", "--json", "--scan", "2")
    live = json.loads(out)["streams"][0]
    assert (live["lag"], live["lag_at_least"]) == (2, True)
    _, out, _ = cli(capsys, "status", "--scan", "2")
    assert "≥2" in out


def test_status_reports_an_unreachable_redis_without_a_traceback(names):
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "status"],
        cwd=ROOT,
        env=indexer_env(names, "redis://127.0.0.1:1", "postgresql://x/y"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "bsky-indexer status: redis:" in proc.stderr and "Traceback" not in proc.stderr


# -- dlq list ---------------------------------------------------------------------------------


def test_dlq_list_shows_reason_stream_id_and_time_and_filters(rds, names, env, capsys):
    a = dead_letter(rds, names, names.live, b'{"type":"teleport"}', "unknown type 'teleport'")
    b = dead_letter(rds, names, names.labels, b'{"labels":1}', "invalid labels 1", "5-0")
    c = dead_letter(rds, names, names.live, b"\xff\xfe", "invalid UTF-8 at byte 0", "7-0")

    code, out, _ = cli(capsys, "dlq", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [d["id"] for d in listed] == [a, b, c]
    assert listed[1] == {
        "id": b,
        "stream": names.labels,
        "entry_id": "5-0",
        "reason": "invalid labels 1",
        "deliveries": 2,
        "time": listed[1]["time"],
        "payload": '{"labels":1}',
    }
    assert listed[1]["time"].endswith("Z")
    assert listed[2]["payload_base64"] == "//4="  # not UTF-8: kept exact

    def ids(*args: str) -> list[str]:
        _, out, _ = cli(capsys, "dlq", "list", "--json", *args)
        return [d["id"] for d in json.loads(out)]

    assert ids("--reason", "TYPE") == [a]
    assert ids("--stream", names.live) == [a, c]
    assert ids("--count", "2") == [a, b]
    assert ids("--after", a) == [b, c]
    assert ids(c, a) == [c, a]

    code, out, _ = cli(capsys, "dlq", "list")
    lines = out.splitlines()
    assert lines[0].split() == [
        "dead",
        "letter",
        "time",
        "stream",
        "entry",
        "id",
        "deliveries",
        "reason",
    ]
    assert lines[2].split()[2:5] == [names.live, "1-0", "2"]
    assert lines[2].endswith("unknown type 'teleport'")
    _, out, _ = cli(capsys, "dlq", "list", "--reason", "nothing like it")
    assert out.strip() == f"no matching dead letters in {names.dead_letter}"


def test_dlq_bad_arguments_are_clear_errors(rds, names, env, capsys):
    code, _, err = cli(capsys, "dlq", "drop")
    assert code == 2 and "--all" in err
    code, _, err = cli(capsys, "dlq", "list", "not-an-id")
    assert code == 2 and "bsky-indexer dlq:" in err
    code, _, err = cli(capsys, "dlq", "list", "--count", "0")
    assert code == 2


# -- dlq requeue / drop -----------------------------------------------------------------------


def test_requeued_dead_letters_are_indexed_like_new_entries(db, rds, names, env, capsys, db_url):
    """A record and a label batch that failed for a cause since fixed: requeued onto their streams
    under the producers' fields, they are indexed and leave the dead-letter stream."""
    p = f.post(ALICE)
    like = orjson.dumps(f.like(BOB, p))
    labels = orjson.dumps({"seq": 9, "labels": [label(uri=f.event_uri(p), cid=None)]})
    load_events(rds, names.live, [p])
    dl_like = dead_letter(rds, names, names.live, like, "database rejected the event: timeout")
    dl_labels = dead_letter(rds, names, names.labels, labels, "database rejected the event: x")
    keep = dead_letter(rds, names, names.live, b"{nope", "invalid JSON")

    code, out, _ = cli(capsys, "dlq", "requeue", "--reason", "database rejected", "--json")
    assert code == 0
    report = json.loads(out)
    assert [r["id"] for r in report["requeued"]] == [dl_like, dl_labels]
    assert report["skipped"] == []
    assert [i.decode() for i, _ in rds.xrange(names.dead_letter)] == [keep]
    (_, fields), *_ = rds.xrange(names.labels)
    assert fields == {b"labels": labels}
    assert rds.xrange(names.live)[-1][1] == {b"event": like}

    settings = settings_for(
        names,
        env["REDIS_URL"],
        db_url,
        mode="all",
        label_stream=names.labels,
        label_group=env["INDEXER_LABEL_GROUP"],
    )
    run_main(build_flow(settings))
    assert rows(db, 'SELECT "likeCount" FROM post_agg') == [(1,)]
    assert rows(db, "SELECT uri, val FROM label") == [(f.event_uri(p), "spam")]
    assert rds.xlen(names.dead_letter) == 1


def test_a_dead_letter_is_requeued_once_and_one_without_payload_not_at_all(rds, names, env, capsys):
    dl = dead_letter(rds, names, names.live, b'{"type":"x"}', "unknown type 'x'")
    empty = dead_letter(rds, names, names.live, b"", "entry was deleted from the stream", "3-0")
    code, out, _ = cli(capsys, "dlq", "requeue", dl, empty)
    assert code == 0 and out.strip() == "requeued 1, skipped 1"
    assert rds.xlen(names.live) == 1
    # Someone else got there first: nothing is added twice.
    from connectors.dead_letters import DeadLetter, requeue

    gone = DeadLetter(dl, names.live, "1-0", "unknown type 'x'", 1, "", b'{"type":"x"}')
    outcome = requeue(rds, names.dead_letter, [gone])
    assert outcome.done == [] and "already gone" in outcome.skipped[0][1]
    assert rds.xlen(names.live) == 1
    assert [i.decode() for i, _ in rds.xrange(names.dead_letter)] == [empty]


def test_dlq_drop_removes_what_is_selected_and_nothing_else(rds, names, env, capsys):
    a = dead_letter(rds, names, names.live, b"{", "invalid JSON")
    b = dead_letter(rds, names, names.labels, b"{", "invalid JSON")
    c = dead_letter(rds, names, names.live, b"{}", "missing field 'type'")
    code, out, _ = cli(capsys, "dlq", "drop", "--stream", names.live, "--reason", "json")
    assert code == 0 and out.strip() == "dropped 1, skipped 0"
    assert [i.decode() for i, _ in rds.xrange(names.dead_letter)] == [b, c]
    code, out, _ = cli(capsys, "dlq", "drop", "--all", "--count", "1")
    assert [i.decode() for i, _ in rds.xrange(names.dead_letter)] == [c]
    code, out, _ = cli(capsys, "dlq", "drop", c, a)
    assert code == 0 and rds.xlen(names.dead_letter) == 0
    assert rds.xlen(names.live) == 0 and rds.xlen(names.labels) == 0


def test_status_and_dlq_through_the_installed_command(rds, names, redis_url):
    """The `python -m cli` entry point, as an operator runs it."""
    dead_letter(rds, names, names.live, b"{", "invalid JSON")
    env = indexer_env(names, redis_url, "postgresql://unused/x")
    for argv, expect in ((["status"], names.live), (["dlq", "list"], "invalid JSON")):
        proc = subprocess.run(
            [sys.executable, "-m", "cli", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert expect in proc.stdout
