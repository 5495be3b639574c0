"""Postgres' own account of its time, when the server has pg_stat_statements preloaded.

The shared development server usually does not; a throwaway one started with
``-c shared_preload_libraries=pg_stat_statements`` does (docs/benchmarks.md says how).
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import psycopg


def enable(db_url: str) -> bool:
    """Create the extension in the bench database and clear its counters; False if unavailable."""
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            (libs,) = conn.execute("SHOW shared_preload_libraries").fetchone()
            if "pg_stat_statements" not in libs:
                return False
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute(
                "SELECT pg_stat_statements_reset(0, "
                "(SELECT oid FROM pg_database WHERE datname = current_database()), 0)"
            )
            return True
    except psycopg.Error:
        return False


def _shape(query: str) -> str:
    # Temp tables get new OIDs per connection, so one statement has one entry per connection.
    return re.sub(r"\s+", " ", re.sub(r"--[^\n]*", "", query)).strip()


def top_statements(db_url: str, limit: int = 15) -> dict[str, Any]:
    """Execution time per statement shape in this database, the largest first."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT query, calls, total_exec_time, rows FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
    shapes: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])
    for query, calls, ms, nrows in rows:
        if "pg_stat_statements" in query:
            continue
        s = shapes[_shape(query)]
        s[0] += calls
        s[1] += ms
        s[2] += nrows
    total = sum(s[1] for s in shapes.values())
    top = sorted(shapes.items(), key=lambda kv: -kv[1][1])[:limit]
    return {
        "total_exec_s": round(total / 1000, 3),
        "top": [
            {
                "statement": q[:160],
                "calls": int(c),
                "exec_s": round(ms / 1000, 3),
                "share": round(ms / total, 3) if total else None,
                "rows": int(n),
            }
            for q, (c, ms, n) in top
        ],
    }
