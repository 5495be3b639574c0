"""`bsky-indexer`: what operators do by hand around the main job.

    bsky-indexer run [-w N]            the dataflow (same as python -m bytewax.run flows.index)
    bsky-indexer db init               our DDL for a development database
    bsky-indexer replay FILE --stream S    JSONL of StreamEvents or a repo CAR into a stream
    bsky-indexer replay --parquet DIR --stream S   an archive (INDEXER_ARCHIVE_DIR) into a stream
    bsky-indexer generate --events N   synthetic firehose-mix events as JSONL
    bsky-indexer status [--json]       per stream: length, lag, pending, dead letters
    bsky-indexer dlq list|requeue|drop     the dead-letter stream

Every command reads the same environment as the indexer (REDIS_URL, DATABASE_URL, ...).
"""

from __future__ import annotations

import argparse
import sys

from config.settings import ConfigError, Settings


def _db_init(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.postgres.schema import init_db

    url = args.database_url or settings.database_url
    tables = init_db(url)
    print(f"created or kept {len(tables)} tables")
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from bytewax.run import cli_main

    from flows.index import flow  # built from the environment, exactly as bytewax.run does

    cli_main(flow, workers_per_process=args.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from connectors import dead_letters, replay, stream_status, synthetic

    parser = argparse.ArgumentParser(prog="bsky-indexer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the indexer dataflow")
    run.add_argument("-w", "--workers", type=int, default=1, help="worker threads")
    run.set_defaults(func=_run)

    db = sub.add_parser("db", help="database commands")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    init = db_sub.add_parser("init", help="create the tables the indexer writes (development)")
    init.add_argument("--database-url", help="defaults to DATABASE_URL")
    init.set_defaults(func=_db_init)

    rp = sub.add_parser(
        "replay", help="load StreamEvents (JSONL), a repo CAR or a Parquet archive into a stream"
    )
    replay.add_arguments(rp)
    rp.set_defaults(func=replay.run)

    gen = sub.add_parser("generate", help="write synthetic firehose events as JSONL")
    synthetic.add_arguments(gen)
    gen.set_defaults(func=synthetic.run)

    st = sub.add_parser("status", help="how far behind the consumer group is, per stream")
    stream_status.add_arguments(st)
    st.set_defaults(func=stream_status.run)

    dlq = sub.add_parser("dlq", help="list, requeue or drop dead letters")
    dead_letters.add_arguments(dlq)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"bsky-indexer: configuration error: {exc}", file=sys.stderr)
        return 2
    return int(args.func(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
