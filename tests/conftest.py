"""Shared fixtures: a fresh database and private stream names for every test run.

Every run creates its own database (dropped at the end) on the Postgres at TEST_PG_URL and uses
stream and group names no one else uses on the Redis at TEST_REDIS_URL, so the machine's shared
servers are used but nobody's data is touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
import redis
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .names import Names

if TYPE_CHECKING:
    from .identity_servers import IdentityDirectory

PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# No /metrics endpoint in the test process (importing flows.index sets the indexer up) nor in the
# indexers it starts, unless a test asks for one: parallel runs would fight over port 9090.
os.environ.setdefault("METRICS_PORT", "0")


def database_url(name: str) -> str:
    """The admin URL pointed at another database."""
    params = conninfo_to_dict(PG_ADMIN_URL)
    params["dbname"] = name
    return make_conninfo(**params)


def create_database(prefix: str = "bskyidx_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def db_url() -> Iterator[str]:
    """A fresh database with our DDL, for this whole test run."""
    from sinks.postgres.schema import init_db

    name = create_database()
    url = database_url(name)
    init_db(url)
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test database, every indexer table emptied first."""
    from sinks.postgres.schema import truncate_all

    truncate_all(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def fresh_db() -> Iterator[Callable[[], str]]:
    """Makes fresh, empty databases on the shared Postgres (URLs); drops them all afterwards."""
    names: list[str] = []

    def make() -> str:
        names.append(create_database("bskyidx_up"))
        return database_url(names[-1])

    yield make
    for name in names:
        drop_database(name)


@pytest.fixture(scope="session")
def upstream_package() -> Path:
    """tests/upstream with @atproto/bsky 0.0.280 installed (skips when node is missing)."""
    from .upstream_node import install_upstream

    return install_upstream()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def names(redis_url: str) -> Iterator[Names]:
    names = Names.new("test")
    yield names
    client = redis.Redis.from_url(redis_url)
    names.delete(client)
    client.close()


@pytest.fixture
def rds(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def identity_directory() -> Iterator[IdentityDirectory]:
    """A PLC directory, well-known endpoints and a DNS server on free local ports
    (tests/identity_servers.py); ``resolver_options()`` points a resolver at them."""
    from .identity_servers import IdentityDirectory

    with IdentityDirectory() as directory:
        yield directory
