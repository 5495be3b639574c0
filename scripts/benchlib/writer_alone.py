"""The Postgres write path alone: ``PostgresWriter.write`` over the bench mix, no bytewax, no Redis.

    .venv/bin/python scripts/benchlib/writer_alone.py --events 20000 --batch 500 [--top 20]

The cleanest A/B for a change to sinks/postgres: the same decoded events, written in batches
into a fresh database (made by our DDL, dropped at the end), timed from the first write to the
last commit. Prints events/s, the writer's own CPU, its Postgres backend's CPU (``/proc``, so the
server must be on this machine), segments per batch, and, when the server preloads
``pg_stat_statements`` (docs/benchmarks.md, "Seeing inside Postgres"), statements sent, the
server's planning and execution time and the costliest statements. Touches only its database.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("METRICS_PORT", "0")

from benchlib.pgstat import _shape, enable  # noqa: E402
from benchlib.services import fresh_database, pg_url_from_env  # noqa: E402
from connectors.synthetic import generate  # noqa: E402
from flows.decode import decode_entry  # noqa: E402
from sinks.postgres.pool import close_all, shared_pool  # noqa: E402
from sinks.postgres.writer import PostgresWriter  # noqa: E402


def backend_cpu(url: str) -> float:
    """CPU seconds of the database's other backends (the writer's pool), from /proc."""
    with psycopg.connect(url, autocommit=True) as conn:
        pids = conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    ticks = 0
    for (pid,) in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def statements(url: str) -> dict[str, list[float]]:
    """(calls, exec s, plan s) per statement shape in this database."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT query, calls, total_exec_time, total_plan_time FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND query NOT LIKE '%pg_stat_statements%'"
        ).fetchall()
    shapes: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for query, calls, exec_ms, plan_ms in rows:
        s = shapes[_shape(query)]
        s[0] += calls
        s[1] += exec_ms / 1000
        s[2] += plan_ms / 1000
    return shapes


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--dids", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=500, help="events per write (transaction)")
    p.add_argument("--top", type=int, default=0, help="print the N costliest statements")
    p.add_argument("--pg-url", default=pg_url_from_env(), help="admin URL; a database is made")
    args = p.parse_args(argv)

    events = [
        decode_entry("bench", f"{n + 1}-0", {b"event": orjson.dumps(ev)})
        for n, ev in enumerate(generate(args.events, args.dids, args.seed, "live"))
    ]
    with fresh_database(args.pg_url, "bskywriter") as url:
        stats = enable(url)
        try:
            writer = PostgresWriter(shared_pool(url, 2, 0))
            segments = 0
            started, cpu = time.perf_counter(), time.process_time()
            for i in range(0, len(events), args.batch):
                segments += writer.write(events[i : i + args.batch]).segments
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu
            server = backend_cpu(url)
        finally:
            close_all()
        batches = -(-len(events) // args.batch)
        print(
            f"{len(events) / wall:,.0f} events/s ({wall:.2f} s); writer CPU {cpu:.2f} s,"
            f" its Postgres backend {server:.2f} s; {segments / batches:.2f} segments a batch"
        )
        if not stats:
            return
        shapes = statements(url)
        calls = sum(s[0] for s in shapes.values())
        print(
            f"{calls:,} statements; server planning {sum(s[2] for s in shapes.values()):.2f} s,"
            f" execution {sum(s[1] for s in shapes.values()):.2f} s"
        )
        for query, (n, exec_s, plan_s) in sorted(shapes.items(), key=lambda kv: -kv[1][1])[
            : args.top
        ]:
            print(f"  exec {exec_s:6.3f} s  plan {plan_s:6.3f} s  {int(n):5d} calls  {query[:90]}")


if __name__ == "__main__":
    main()
