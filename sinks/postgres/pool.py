"""One psycopg pool per process, shared by every worker thread.

Each worker holds at most one connection at a time (a batch never takes a second), so the pool's
``max_size`` (DB_POOL_MAX_SIZE) bounds the process's connections whatever the worker count.
Prepared statements are off so the indexer works through pgbouncer in transaction mode.
"""

from __future__ import annotations

import threading

from psycopg_pool import ConnectionPool

_pools: dict[tuple[str, int, int], ConnectionPool] = {}
_lock = threading.Lock()


def shared_pool(conninfo: str, max_size: int, min_idle: int) -> ConnectionPool:
    key = (conninfo, max_size, min_idle)
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            pool = ConnectionPool(
                conninfo,
                min_size=min(min_idle, max_size),
                max_size=max_size,
                kwargs={"prepare_threshold": None, "application_name": "bsky-indexer"},
                timeout=30,
                open=False,
                name="bsky-indexer",
            )
            pool.open(wait=False)
            _pools[key] = pool
        return pool


def pools() -> list[ConnectionPool]:
    """The pools this process has opened (for the metrics)."""
    with _lock:
        return list(_pools.values())


def close_all() -> None:
    with _lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()
