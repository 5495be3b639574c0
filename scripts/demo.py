"""`just demo`: the real indexer on an embedded default, with nothing to configure.

Loads the real repositories in ../shared/atproto-fixtures (as the backfiller sends them) into a
backfill stream and synthetic firehose-mix events into a live stream, indexes them with the real
dataflow (`python -m bytewax.run flows.index`, stopping when idle) into a fresh database, and
reports what was indexed and how fast. The database is kept for you to look at; the streams are
private to this run and removed at the end. DID resolution is off (no network needed): the
identity events' handles are stored as they come.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.replay import car_events, load_events  # noqa: E402
from connectors.synthetic import generate  # noqa: E402
from sinks.postgres.schema import init_db  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "atproto-fixtures"
CARS = [
    "indigo/atproto/repo/testdata/bnewbold.robocracy.org.20250310005405.car",
    "indigo/testing/testdata/fakermaker.repo.car",
    "indigo/testing/testdata/paul_staging.repo.car",
    "indigo/testing/testdata/greenground.repo.car",
]
TABLES = [
    "record",
    "post",
    "like",
    "repost",
    "follow",
    "actor_block",
    "profile",
    "feed_item",
    "post_embed_image",
    "post_embed_external",
    "post_embed_record",
    "quote",
    "notification",
    "duplicate_record",
    "post_agg",
    "profile_agg",
    "actor_sync",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="synthetic live events")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    redis_url = os.environ.get("DEMO_REDIS_URL", "redis://127.0.0.1:6379/0")
    admin = os.environ.get("DEMO_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    dbname = "bsky_demo"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    params = conninfo_to_dict(admin)
    params["dbname"] = dbname
    db_url = make_conninfo(**params)
    init_db(db_url)

    prefix = f"demo-{uuid.uuid4().hex[:8]}"
    live, backfill = f"{prefix}:firehose_live", f"{prefix}:firehose_backfill"
    client = redis.Redis.from_url(redis_url)
    loaded = 0
    for rel in CARS:
        path = FIXTURES / rel
        if path.exists():
            loaded += load_events(client, backfill, car_events(path.read_bytes()))
        else:
            print(f"(fixture {rel} not found beside the project; skipped)")
    loaded += load_events(client, live, generate(args.events, n_dids=2_000, seed=1))
    print(f"loaded {loaded} entries into {live} and {backfill}")

    env = dict(os.environ)
    env.update(
        {
            "REDIS_URL": redis_url,
            "DATABASE_URL": db_url,
            "INDEXER_STREAMS": f"{live},{backfill}",
            "INDEXER_LABEL_STREAM": f"{prefix}:label_live",  # mode all reads labels too
            "INDEXER_GROUP": f"{prefix}:group",
            "INDEXER_CONSUMER": f"{prefix}:demo",
            "INDEXER_DEAD_LETTER_STREAM": f"{prefix}:dead_letter",
            "INDEXER_CONCURRENCY": "2000",
            "INDEXER_STOP_WHEN_IDLE": "1",
            # Event handles are stored as sent: the demo must work with no internet to reach the
            # PLC directory and the handles' hosts (README: Handles and DID resolution).
            "ENABLE_DID_RESOLUTION": "false",
        }
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "flows.index", "-w", str(args.workers)],
        cwd=ROOT,
        env=env,
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        print(f"indexer exited with {proc.returncode}", file=sys.stderr)
        return proc.returncode

    dead = client.xlen(f"{prefix}:dead_letter")
    left = sum(client.xlen(s) for s in (live, backfill))
    print(
        f"\nindexed {loaded} entries in {elapsed:.1f}s "
        f"({loaded / elapsed:,.0f} entries/s including start-up and the idle wait), "
        f"{dead} dead-lettered, {left} left in the streams"
    )
    with psycopg.connect(db_url) as conn:
        for table in TABLES:
            (n,) = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            print(f"  {table:<22} {n:>8}")
        top = conn.execute(
            'SELECT uri, "likeCount", "repostCount", "replyCount" FROM post_agg '
            'ORDER BY "likeCount" DESC LIMIT 3'
        ).fetchall()
    print(
        "most liked:",
        *(f"  {u}  likes={lk} reposts={rp} replies={rc}" for u, lk, rp, rc in top),
        sep="\n",
    )
    if dead:
        for _id, fields in client.xrange(f"{prefix}:dead_letter", count=5):
            print(f"  dead letter: {fields[b'reason'].decode()[:120]}")
    client.delete(live, backfill, f"{prefix}:label_live", f"{prefix}:dead_letter")
    print(f"\nthe database is kept: psql '{db_url}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
