"""Helpers for tests that index events straight through the writer (no bytewax, real Postgres)."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg

from flows.decode import decode_entry
from flows.events import Event
from sinks.postgres.schema import TABLES
from sinks.postgres.writer import PostgresWriter


def decode(events: list[dict[str, Any]], stream: str = "firehose_live") -> list[Event]:
    out = []
    for n, ev in enumerate(events):
        decoded = decode_entry(stream, f"{n + 1}-0", {b"event": orjson.dumps(ev)})
        assert decoded.ok, decoded.error
        out.append(decoded)
    return out


def index(writer: PostgresWriter, events: list[dict[str, Any]], one_by_one: bool = False) -> None:
    decoded = decode(events)
    if one_by_one:
        for ev in decoded:
            writer.write([ev])
    else:
        writer.write(decoded)


# Columns filled from a sequence; everything else must match exactly.
MASKED = {"notification": {"id"}}


def snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """Every indexer table's rows, sorted, without sequence-filled columns."""
    out: dict[str, list[tuple]] = {}
    for table in TABLES:
        cur = conn.execute(f'SELECT * FROM "{table}" LIMIT 0')
        cols = [d.name for d in cur.description or [] if d.name not in MASKED.get(table, set())]
        col_list = ", ".join(f'"{c}"' for c in cols)
        rows = conn.execute(f'SELECT {col_list} FROM "{table}"').fetchall()
        out[table] = sorted(rows, key=repr)
    return out


def rows(conn: psycopg.Connection, sql: str, *params: Any) -> list[tuple]:
    return conn.execute(sql, params).fetchall()
