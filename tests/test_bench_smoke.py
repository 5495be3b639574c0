"""`just bench` end to end at a tiny size: every number of the report is there (none is judged)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PG_ADMIN_URL, REDIS_URL

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(180)
def test_bench_reports_every_field(tmp_path: Path) -> None:
    env = dict(os.environ, DEMO_PG_URL=PG_ADMIN_URL, DEMO_REDIS_URL=REDIS_URL)
    args = ["--events", "2000", "--dids", "500", "--no-scaling", "--live-seconds", "3"]
    args.append("--resolution")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), *args, "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "targets:" in proc.stdout

    results = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"cores", "ram_gb", "postgres", "redis"} <= set(results["machine"])
    assert results["mix"]["create app.bsky.feed.like"] > 0.3

    main = results["runs"]["backfill -w 1"]
    assert main["loaded"] == 2000 and main["left_in_stream"] == 0 and main["dead_letters"] == 0
    assert main["rows"]["like"] > 0 and main["rows"]["post"] > 0
    derived = main["derived"]
    assert derived["ok"] and derived["events"] == 2000
    assert {"read", "decode", "write", "ack"} <= set(derived["stages"])
    assert derived["stages"]["ack"]["items"] == 2000
    assert derived["latency_ms"]["read_to_commit"]["count"] == 2000

    # With resolution on: every DID was checked against the local servers before the exit.
    resolving = results["runs"]["backfill -w 1 resolving"]
    assert resolving["derived"]["ok"] and resolving["rows"]["like"] == main["rows"]["like"]
    handles = resolving["handles"]
    assert handles["checks_left"] == 0 and handles["actors"] > 400
    assert handles["with_handle"] > 0.9 * handles["actors"]

    live = results["runs"]["live 1,000 ev/s"]
    assert live["offered"]["events"] == 3000 and live["left_in_stream"] == 0
    assert live["derived"]["latency_ms"]["xadd_to_commit"]["count"] == 3000

    s = results["summary"]
    for key in (
        "events_per_s",
        "copy_limit_events_per_s",
        "fraction_of_copy_limit",
        "peak_rss_mb",
        "max_pg_connections",
        "live_p50_ms",
        "live_p99_ms",
        "backfill_xadd_to_commit_p99_ms",
        "backfill_read_to_commit_p99_ms",
        "one_process_events_per_s",
        "resolution_ratio",
    ):
        assert isinstance(s[key], int | float) and s[key] > 0, key
    assert s["postgres"]["write_share_of_worker_time"] > 0
    assert set(s["targets"]) == {
        "one_process_events_per_s",
        "fraction_of_copy_limit",
        "peak_rss_mb",
        "live_p99_ms",
        "resolution_ratio",
    }
    assert all(t["met"] in (True, False) for t in s["targets"].values())
    assert results["copy_limit"]["rows"] == sum(main["rows"].values())
