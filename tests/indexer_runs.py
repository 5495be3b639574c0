"""Running the real indexer as a process, and the tables a clean run leaves, for comparison."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import psycopg

from sinks.postgres.pool import shared_pool
from sinks.postgres.schema import truncate_all
from sinks.postgres.writer import PostgresWriter

from .indexing import decode, snapshot

ROOT = Path(__file__).resolve().parents[1]


class IndexerProcess:
    """``python -m bytewax.run flows.index -w N`` with its log in a file (a full pipe would stall
    it)."""

    def __init__(self, env: dict[str, str], workers: int = 1):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "flows.index", "-w", str(workers)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=self.log,
            text=True,
        )

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()


def exit_of(env: dict[str, str], workers: int = 1, timeout: float = 120) -> tuple[int, str]:
    """Run until it stops by itself (INDEXER_STOP_WHEN_IDLE, or a bad setting): exit code, log."""
    proc = IndexerProcess(env, workers)
    code = proc.wait(timeout)
    return code, proc.output()


def run_indexer(env: dict[str, str], workers: int = 1, timeout: float = 120) -> str:
    """Run until it stops by itself (INDEXER_STOP_WHEN_IDLE); its log. Fails on a non-zero exit."""
    code, out = exit_of(env, workers, timeout)
    assert code == 0, out[-3000:]
    return out


def clean_snapshot(db_url: str, events: list[dict[str, Any]], batch: int = 500) -> dict:
    """The tables after indexing the events in stream order through the writer, one batch after
    the other (the database is emptied before and after)."""
    truncate_all(db_url)
    writer = PostgresWriter(shared_pool(db_url, 2, 0))
    decoded = decode(events)
    for n in range(0, len(decoded), batch):
        writer.write(decoded[n : n + batch])
    with psycopg.connect(db_url) as conn:
        out = snapshot(conn)
    truncate_all(db_url)
    return out


def tables(db_url: str) -> dict:
    with psycopg.connect(db_url) as conn:
        return snapshot(conn)


# A gate changes the posts that reply to or quote its post later, from other accounts too.
GATES = ("app.bsky.feed.threadgate", "app.bsky.feed.postgate")


def order_free(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events without those whose outcome depends on the order across records (replies,
    deletes, gates, second likes/follows of one subject by one creator, account status), so that
    several consumers must leave exactly the tables one consumer does. What is left of one record (a
    profile and its updates) still depends on the order, and the repo-revision guard settles it."""
    out: list[dict[str, Any]] = []
    keys: set[tuple] = set()
    for ev in events:
        if ev["type"] in ("delete", "account") or ev.get("collection") in GATES:
            continue
        record = ev.get("record")
        if isinstance(record, dict):
            record = {k: v for k, v in record.items() if k != "reply"}
            subject = record.get("subject")
            if subject is not None:
                key = (ev["did"], ev["collection"], orjson.dumps(subject))
                if key in keys:
                    continue
                keys.add(key)
            ev = {**ev, "record": record}
        out.append(ev)
    return out
