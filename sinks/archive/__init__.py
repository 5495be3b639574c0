"""The Parquet archive of indexed events (INDEXER_ARCHIVE_DIR) and its replay into a stream.

* parquet.py: ArchiveWriter, the sink step after the Postgres commit (design and guarantees);
* spool.py: durable per-writer segments, crash recovery, the ledger of unacked entries;
* schema.py: the typed Arrow schema, Event -> rows, rows -> StreamEvents;
* replay.py: ``bsky-indexer replay --parquet DIR --stream S``.
"""
