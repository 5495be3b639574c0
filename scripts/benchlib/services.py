"""Fresh databases and private stream names on the local servers, and what the machine is."""

from __future__ import annotations

import os
import platform
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any

import psutil
import psycopg
import redis
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sinks.postgres.schema import init_db

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def redis_url_from_env() -> str:
    return os.environ.get("DEMO_REDIS_URL") or os.environ.get("TEST_REDIS_URL") or DEFAULT_REDIS_URL


def pg_url_from_env() -> str:
    return os.environ.get("DEMO_PG_URL") or os.environ.get("TEST_PG_URL") or DEFAULT_PG_URL


def database_url(admin_url: str, name: str) -> str:
    """The admin URL pointed at another database."""
    params = conninfo_to_dict(admin_url)
    params["dbname"] = name
    return make_conninfo(**params)


@contextmanager
def fresh_database(admin_url: str, prefix: str = "bskybench") -> Iterator[str]:
    """A new database with our DDL (tables and indexes), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = database_url(admin_url, name)
        init_db(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(admin_url: str, client: redis.Redis) -> dict[str, Any]:
    """What the numbers were measured on."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
        pg_settings = dict(
            conn.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                (
                    [
                        "shared_buffers",
                        "synchronous_commit",
                        "fsync",
                        "wal_level",
                        "max_wal_size",
                        "autovacuum",
                        "jit",
                        "shared_preload_libraries",
                    ],
                ),
            ).fetchall()
        )
    info = client.info("server")
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "bytewax": version("bytewax"),
        "postgres": pg_version,
        "postgres_settings": pg_settings,
        "redis": info.get("redis_version"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
