"""The physical limit: COPY the indexer's final rows into the same empty tables, same indexes.

Every AppView table the indexer wrote is read back with binary COPY (into memory, untimed), then
written into a second fresh database made by the same DDL, in one transaction with one COPY per
table; the time from the first COPY to the COMMIT is the limit for those rows on this machine.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from sinks.postgres.schema import TABLES

from .services import fresh_database


def dump_tables(db_url: str) -> dict[str, tuple[int, bytes]]:
    """Every non-empty table as (rows, binary COPY data)."""
    out: dict[str, tuple[int, bytes]] = {}
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        for table in TABLES:
            (rows,) = cur.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            if not rows:
                continue
            buf = bytearray()
            with cur.copy(f'COPY "{table}" TO STDOUT (FORMAT binary)') as copy:
                for chunk in copy:
                    buf += chunk
            out[table] = (rows, bytes(buf))
    return out


def copy_limit(admin_url: str, db_url: str) -> dict[str, Any]:
    data = dump_tables(db_url)
    with fresh_database(admin_url, "bskybench_copy") as target:
        with psycopg.connect(target) as conn, conn.cursor() as cur:
            started = time.perf_counter()
            with conn.transaction():
                for table, (_rows, payload) in data.items():
                    with cur.copy(f'COPY "{table}" FROM STDIN (FORMAT binary)') as copy:
                        copy.write(payload)
            seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows": sum(rows for rows, _ in data.values()),
        "bytes": sum(len(payload) for _, payload in data.values()),
        "tables": {table: rows for table, (rows, _) in data.items()},
    }


def row_counts(db_url: str) -> dict[str, int]:
    """Rows per non-empty table."""
    with psycopg.connect(db_url) as conn:
        counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in TABLES}
    return {t: n for t, n in counts.items() if n}
