"""The AppView tables the indexer writes or reads, and our own DDL for them.

`schema.sql` (next to this module) reproduces those tables exactly as the genuine
`@atproto/bsky` 0.0.280 migrations create them; tests/test_schema_upstream.py checks that with
`describe()` against a database migrated by the real package. The AppView owns these tables:
`init_db` only creates what is missing and never alters an existing table. The indexer's own
state lives in the separate schema `bsky_indexer`.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

#: Our private schema (cursors, dead letters, ...); never one of the AppView's.
PRIVATE_SCHEMA = "bsky_indexer"

#: Every AppView table the indexer writes or reads, in schema.sql order.
TABLES: tuple[str, ...] = (
    "record",
    "duplicate_record",
    "actor",
    "actor_sync",
    "post",
    "feed_item",
    "post_embed_image",
    "post_embed_external",
    "post_embed_record",
    "post_embed_video",
    "post_embed_gallery_image",
    "quote",
    "op_thread_reply",
    "like",
    "repost",
    "follow",
    "actor_block",
    "profile",
    "notification",
    "post_agg",
    "profile_agg",
    "thread_gate",
    "post_gate",
    "thread_mute",
    "list",
    "list_item",
    "list_block",
    "reference_list_opt_out",
    "feed_generator",
    "starter_pack",
    "labeler",
    "verification",
    "label",
)

# Serialises concurrent init_db runs on one cluster (CREATE ... IF NOT EXISTS is not race-free).
_INIT_LOCK_KEY = 0x6273_6B79_6964_78  # "bskyidx"

#: Our own tables in PRIVATE_SCHEMA: made by init_db, and by the indexer itself when missing.
PRIVATE_TABLES: tuple[str, ...] = ("record_rev", "actor_event", "handle_check")
PRIVATE_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {PRIVATE_SCHEMA};
-- The last repo revision applied per record URI, deletes included (sinks/postgres/ordering.py).
CREATE TABLE IF NOT EXISTS {PRIVATE_SCHEMA}.record_rev (uri text PRIMARY KEY, rev text NOT NULL);
-- The (time, seq) of the last account/identity event applied per DID (sinks/postgres/actors.py).
CREATE TABLE IF NOT EXISTS {PRIVATE_SCHEMA}.actor_event (
  did text PRIMARY KEY, time text COLLATE "C" NOT NULL, seq bigint NOT NULL
);
-- Handles waiting for DID resolution, one row per DID (sinks/postgres/handle_checks.py).
CREATE TABLE IF NOT EXISTS {PRIVATE_SCHEMA}.handle_check (
  did text PRIMARY KEY,
  ts text COLLATE "C" NOT NULL,
  forced boolean NOT NULL,
  due timestamptz NOT NULL DEFAULT now(),
  attempts int NOT NULL DEFAULT 0,
  last_error text
);
CREATE INDEX IF NOT EXISTS handle_check_due ON {PRIVATE_SCHEMA}.handle_check (due);
"""


def create_private(conn: psycopg.Connection) -> None:
    """PRIVATE_DDL under the init lock, in the caller's transaction."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK_KEY,))
    conn.execute(PRIVATE_DDL)


def schema_sql() -> str:
    """The text of schema.sql."""
    return resources.files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")


def init_db(conninfo: str) -> tuple[str, ...]:
    """Create whatever of TABLES (and their indexes) is missing, plus our private schema.

    One transaction; safe to run any number of times, and against a database the AppView has
    already migrated (nothing existing is changed). Returns TABLES.
    """
    ddl = schema_sql()
    with psycopg.connect(conninfo) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK_KEY,))
            conn.execute(ddl)  # no parameters: several statements in one simple query
            create_private(conn)
    return TABLES


def truncate_all(conninfo: str) -> None:
    """Empty every table in TABLES and our own, restarting notification.id, in one statement."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = [sql.Identifier(t) for t in TABLES]
        for t in PRIVATE_TABLES:
            if conn.execute("SELECT to_regclass(%s)", (f"{PRIVATE_SCHEMA}.{t}",)).fetchone()[0]:
                tables.append(sql.Identifier(PRIVATE_SCHEMA, t))
        conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(sql.SQL(", ").join(tables)))


# ---------------------------------------------------------------------------------------------
# Catalog description, for comparing our DDL with the genuine schema
# ---------------------------------------------------------------------------------------------

_COLUMNS = """
SELECT a.attname,
       format_type(a.atttypid, a.atttypmod),
       a.attnotnull,
       a.attgenerated,
       pg_get_expr(d.adbin, d.adrelid),
       seq.seqtype
FROM pg_attribute a
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN LATERAL (
    SELECT format_type(s.seqtypid, NULL) AS seqtype
    FROM pg_depend dep
    JOIN pg_sequence s ON s.seqrelid = dep.objid
    WHERE dep.refobjid = a.attrelid AND dep.refobjsubid = a.attnum
      AND dep.classid = 'pg_class'::regclass AND dep.deptype IN ('a', 'i')
    LIMIT 1
) seq ON true
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_CONSTRAINTS = """
SELECT conname, contype, pg_get_constraintdef(oid)
FROM pg_constraint
WHERE conrelid = %s
ORDER BY conname
"""

_INDEXES = """
SELECT c.relname,
       i.indisprimary,
       i.indisunique,
       pg_get_indexdef(i.indexrelid),
       pg_get_expr(i.indpred, i.indrelid),
       ARRAY(
           SELECT pg_get_indexdef(i.indexrelid, k, true)
           FROM generate_series(1, i.indnkeyatts) AS k
           ORDER BY k
       )
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = %s
ORDER BY c.relname
"""

_NEXTVAL = re.compile(r"nextval\('(?:[^'.]+\.)?\"?([^'\"]+)\"?'::regclass\)")


def _norm_default(expr: str | None, seqtype: str | None) -> str | None:
    if expr is None:
        return None
    expr = " ".join(expr.split())
    # The sequence's schema depends on search_path; its name and type are what matter.
    return _NEXTVAL.sub(lambda m: f"nextval({m.group(1)} AS {seqtype or '?'})", expr)


def _unquote(col: str) -> str:
    return col[1:-1].replace('""', '"') if col.startswith('"') and col.endswith('"') else col


def describe(conn: psycopg.Connection, tables: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """A normalised, comparable description of `tables` as the catalogs see them.

    Tables are resolved through the connection's search_path. A missing table maps to None.
    Otherwise, per table:
      - ``columns``: {name: {type, not_null, default, generated}} (type includes any length;
        default has nextval's schema stripped and the sequence type added; generated is the
        STORED expression or None);
      - ``column_order``: the column names in order;
      - ``primary_key``: tuple of column names, or None;
      - ``unique``: sorted list of the column tuples of every unique constraint or unique index
        (primary key included), in index column order, with `` WHERE ...`` appended for a
        partial index;
      - ``constraints``: {name: definition} for every constraint;
      - ``indexes``: {name: definition} with the table's schema qualifier removed.
    """
    out: dict[str, Any] = {}
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(
                "SELECT c.oid, quote_ident(n.nspname) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.oid = to_regclass(quote_ident(%s)) AND c.relkind IN ('r', 'p')",
                (table,),
            )
            row = cur.fetchone()
            if row is None:
                out[table] = None
                continue
            oid, schema = row

            columns: dict[str, dict[str, Any]] = {}
            order: list[str] = []
            cur.execute(_COLUMNS, (oid,))
            for name, typ, not_null, attgenerated, expr, seqtype in cur.fetchall():
                generated = expr if attgenerated == "s" else None
                default = None if attgenerated else _norm_default(expr, seqtype)
                columns[name] = {
                    "type": typ,
                    "not_null": bool(not_null),
                    "default": default,
                    "generated": generated,
                }
                order.append(name)

            cur.execute(_CONSTRAINTS, (oid,))
            constraints = {name: f"{contype}: {defn}" for name, contype, defn in cur.fetchall()}

            primary_key: tuple[str, ...] | None = None
            unique: list[tuple[str, ...]] = []
            indexes: dict[str, str] = {}
            schema_prefix = f" ON {schema}."
            cur.execute(_INDEXES, (oid,))
            for name, is_pk, is_unique, indexdef, pred, keys in cur.fetchall():
                indexes[name] = indexdef.replace(schema_prefix, " ON ", 1)
                cols = tuple(_unquote(k) for k in keys)
                if is_pk:
                    primary_key = cols
                if is_unique:
                    unique.append(cols + ((f"WHERE {pred}",) if pred else ()))

            out[table] = {
                "columns": columns,
                "column_order": order,
                "primary_key": primary_key,
                "unique": sorted(unique),
                "constraints": constraints,
                "indexes": indexes,
            }
    return out
