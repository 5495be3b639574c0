"""Our DDL (sinks/postgres/schema.sql) against the genuine @atproto/bsky 0.0.280 schema.

The genuine schema is built by the package's own Kysely migrations (tests/upstream/migrate.mjs)
in one fresh database, ours by init_db in another, and the catalogs of the two are compared
table by table with describe(). Needs node (skipped, saying so, when it is not on PATH) and,
the first time, the npm registry: `npm install` runs in tests/upstream when the package is
missing, and a failure fails the test.
"""

from __future__ import annotations

import difflib
import pprint
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from sinks.postgres.schema import PRIVATE_SCHEMA, TABLES, describe, init_db, truncate_all

from .upstream_node import migrate_upstream

# npm install (first run only) can take a minute on a slow network.
pytestmark = pytest.mark.timeout(900)

_TABLES_IN_PUBLIC = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
"""


@pytest.fixture
def upstream_url(upstream_package: Path, fresh_db: Callable[[], str]) -> str:
    url = fresh_db()
    migrate_upstream(url)
    return url


def _describe(url: str, tables: tuple[str, ...] | list[str]) -> dict:
    with psycopg.connect(url) as conn:
        return describe(conn, tables)


def _public_tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute(_TABLES_IN_PUBLIC)}


def _diff(ours: dict, theirs: dict) -> str:
    """Per table that differs, a unified diff of the two descriptions."""
    parts = []
    for table in sorted(set(ours) | set(theirs)):
        a, b = ours.get(table), theirs.get(table)
        if a == b:
            continue
        lines = difflib.unified_diff(
            pprint.pformat(b, width=100).splitlines(),
            pprint.pformat(a, width=100).splitlines(),
            fromfile=f"upstream {table}",
            tofile=f"ours {table}",
            lineterm="",
        )
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def test_schema_matches_upstream(upstream_url: str, fresh_db: Callable[[], str]) -> None:
    ours_url = fresh_db()
    assert init_db(ours_url) == TABLES

    ours, theirs = _describe(ours_url, TABLES), _describe(upstream_url, TABLES)
    missing_upstream = [t for t in TABLES if theirs[t] is None]
    assert not missing_upstream, f"not in the genuine schema: {missing_upstream}"
    assert ours == theirs, "our DDL differs from @atproto/bsky 0.0.280:\n" + _diff(ours, theirs)

    ours_tables, upstream_tables = _public_tables(ours_url), _public_tables(upstream_url)
    assert ours_tables - upstream_tables == set(), "tables only we create"
    assert ours_tables == set(TABLES), "schema.sql and TABLES disagree"

    with psycopg.connect(ours_url) as conn:
        assert conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (PRIVATE_SCHEMA,)
        ).fetchone()
        assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").fetchone()


def test_init_db_on_upstream_database_changes_nothing(upstream_url: str) -> None:
    """Pointed at a database the AppView migrated, init_db only adds our private schema."""
    tables = sorted(_public_tables(upstream_url))
    before = _describe(upstream_url, tables)
    init_db(upstream_url)
    assert sorted(_public_tables(upstream_url)) == tables
    after = _describe(upstream_url, tables)
    assert after == before, _diff(after, before)


def test_init_db_twice(fresh_db: Callable[[], str]) -> None:
    url = fresh_db()
    init_db(url)
    first = _describe(url, TABLES)
    with psycopg.connect(url) as conn:
        conn.execute(
            'INSERT INTO notification (did, "recordUri", "recordCid", author, reason, "sortAt")'
            " VALUES ('did:plc:a', 'at://did:plc:b/app.bsky.graph.follow/1', 'bafy', 'did:plc:b',"
            " 'follow', '2024-01-01T00:00:00.000Z')"
        )
    assert init_db(url) == TABLES
    assert _describe(url, TABLES) == first
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT id FROM notification").fetchall() == [(1,)]


def test_truncate_all_restarts_identity(fresh_db: Callable[[], str]) -> None:
    url = fresh_db()
    init_db(url)
    insert = (
        'INSERT INTO notification (did, "recordUri", "recordCid", author, reason, "sortAt")'
        " VALUES ('did:plc:a', 'at://x', 'c', 'did:plc:b', 'like', 's') RETURNING id"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(insert)
        conn.execute(
            'INSERT INTO "like" (uri, cid, creator, subject, "subjectCid", "createdAt",'
            " \"indexedAt\") VALUES ('at://l', 'c', 'did:plc:b', 'at://p', 'c', 'b', 'a')"
        )
        assert conn.execute('SELECT "sortAt" FROM "like"').fetchone() == ("a",)
    truncate_all(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for table in TABLES:
            count = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            assert count == (0,), table
        assert conn.execute(insert).fetchone() == (1,)


def test_indexing_into_upstream_migrated_database(upstream_url: str) -> None:
    """Events go into a database built by the genuine migrations, not only into our DDL."""
    from sinks.postgres.pool import shared_pool
    from sinks.postgres.writer import PostgresWriter

    from . import factory as f
    from .indexing import index

    alice, bob = f.did("alice"), f.did("bob")
    p = f.post(
        alice,
        "hi",
        langs=["en"],
        embed={"$type": "app.bsky.embed.images", "images": [{"image": f.blob("img"), "alt": "a"}]},
    )
    events = [
        p,
        f.reply(bob, p, p),
        f.like(bob, p),
        f.repost(bob, p),
        f.follow(bob, alice),
        f.block(alice, f.did("carol")),
        f.profile(bob, displayName="Bob"),
    ]
    index(PostgresWriter(shared_pool(upstream_url, 2, 0)), events)
    with psycopg.connect(upstream_url) as conn:
        agg = conn.execute(
            'SELECT "likeCount", "repostCount", "replyCount" FROM post_agg WHERE uri = %s',
            (f.event_uri(p),),
        ).fetchall()
        assert agg == [(1, 1, 1)]
        counts = {
            t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
            for t in (
                "post",
                "like",
                "repost",
                "follow",
                "actor_block",
                "profile",
                "feed_item",
                "post_embed_image",
                "notification",
                "record",
            )
        }
    assert counts == {
        "post": 2,
        "like": 1,
        "repost": 1,
        "follow": 1,
        "actor_block": 1,
        "profile": 1,
        "feed_item": 3,
        "post_embed_image": 1,
        "notification": 4,
        "record": 7,
    }


def test_cli_db_init(fresh_db: Callable[[], str], capsys: pytest.CaptureFixture[str]) -> None:
    import cli

    url = fresh_db()
    assert cli.main(["db", "init", "--database-url", url]) == 0
    assert "tables" in capsys.readouterr().out
    assert set(TABLES) <= _public_tables(url)
