"""Running the genuine @atproto/bsky 0.0.280 (tests/upstream, node) from tests.

``install_upstream`` installs the npm package once, under a lock, in tests/upstream/node_modules
(conftest.py's ``upstream_package`` fixture calls it); the other helpers run the node scripts
there: migrate.mjs builds the genuine schema, apply.mjs indexes events with the genuine
IndexingService.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

UPSTREAM_DIR = Path(__file__).parent / "upstream"
UPSTREAM_DB_JS = (
    UPSTREAM_DIR / "node_modules/@atproto/bsky/dist/data-plane/server/db/db.js"
)  # what migrate.mjs imports
NPM_INSTALL = ["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund"]


def run_node(cmd: list[str], timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run cmd in tests/upstream; the finished process and the seconds it took."""
    start = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=UPSTREAM_DIR, capture_output=True, text=True, timeout=timeout, check=False
    )
    return proc, time.monotonic() - start


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def install_upstream() -> Path:
    """tests/upstream with @atproto/bsky installed; runs `npm install` if it is missing.

    Skips the test when node is not on PATH; fails it when the install fails.
    """
    if shutil.which("node") is None:
        pytest.skip("node is not on PATH: cannot run @atproto/bsky")
    # One install at a time, even across concurrent pytest runs on this checkout.
    key = hashlib.sha256(str(UPSTREAM_DIR.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"bsky-indexer-npm-{key}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not UPSTREAM_DB_JS.is_file():
            if shutil.which("npm") is None:
                pytest.fail("node is on PATH but npm is not: cannot install @atproto/bsky")
            proc, took = run_node(NPM_INSTALL, timeout=840)
            print(f"\nnpm install in {UPSTREAM_DIR}: {took:.1f}s")
            if proc.returncode != 0 or not UPSTREAM_DB_JS.is_file():
                pytest.fail(f"npm install failed in {UPSTREAM_DIR}:\n{output(proc)}")
    return UPSTREAM_DIR


def postgres_url(conninfo: str) -> str:
    """A postgresql:// URL for a libpq conninfo, for node-postgres (which takes only URLs)."""
    if "://" in conninfo:
        return conninfo
    params = conninfo_to_dict(conninfo)
    user = quote(str(params.pop("user", "")), safe="")
    password = params.pop("password", None)
    auth = f"{user}:{quote(str(password), safe='')}@" if password else (f"{user}@" if user else "")
    host = str(params.pop("host", "localhost"))
    if host.startswith("/"):  # a Unix socket directory goes in the query string
        params["host"], host = host, ""
    port = params.pop("port", None)
    dbname = quote(str(params.pop("dbname", "")), safe="")
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{auth}{host}{f':{port}' if port else ''}/{dbname}{query}"


def migrate_upstream(conninfo: str) -> float:
    """Apply the genuine migrations to the database at conninfo; returns the seconds it took."""
    proc, took = run_node(["node", "migrate.mjs", postgres_url(conninfo)], timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"node migrate.mjs failed:\n{output(proc)}")
    print(f"\nupstream migrations: {took:.2f}s ({proc.stdout.strip().splitlines()[-1]})")
    return took


def apply_upstream(conninfo: str, jobs: list[tuple[str, Path]]) -> list[dict[str, Any]]:
    """In the database at conninfo, for each (pg schema, JSONL file of StreamEvents): build the
    genuine schema in that pg schema and index the events with the genuine IndexingService, event
    by event; all in one node process.

    Returns apply.mjs's summary per job: {"schema", "events", "applied", "skipped": [{"line",
    "uri", "error"}]}.
    """
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Else upstream's first migration creates it in the first pg schema, out of others' reach.
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
    args = [a for schema, path in jobs for a in (schema, str(path))]
    proc, took = run_node(["node", "apply.mjs", postgres_url(conninfo), *args], timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"node apply.mjs failed:\n{output(proc)}")
    summaries = [json.loads(line) for line in proc.stdout.strip().splitlines()[-len(jobs) :]]
    print(f"\nupstream applied {sum(s['events'] for s in summaries)} events in {took:.2f}s")
    return summaries
