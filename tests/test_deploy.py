"""Dockerfile and deploy/: what can be checked without a Docker engine.

The images are not built here (no engine on these machines); these tests hold the files to what
the indexer reads: every indexer's environment must pass Settings.from_env, and every variable
must be one the README documents.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from config.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose.yaml"
_SUBST = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def substituted(value: object) -> str:
    """Compose's ${VAR:-default}, with every variable unset."""
    return _SUBST.sub(lambda m: m.group(2) or "", str(value))


def indexers(c: dict) -> dict[str, dict[str, str]]:
    """Indexer services (those naming a consumer) and their environments."""
    out = {}
    for name, svc in c["services"].items():
        env = {k: substituted(v) for k, v in (svc.get("environment") or {}).items()}
        if "INDEXER_CONSUMER" in env:
            out[name] = env
    return out


def test_two_indexers_share_one_group_through_pgbouncer():
    c = compose()
    envs = indexers(c)
    assert len(envs) == 2
    settings = [Settings.from_env(env) for env in envs.values()]  # ConfigError fails the test
    assert len({s.group for s in settings}) == 1
    assert len({s.consumer for s in settings}) == 2
    for s in settings:
        assert s.mode == "all"
        url = urlsplit(s.database_url)
        assert (url.hostname, url.port) == ("pgbouncer", 6432)
        assert urlsplit(s.redis_url).hostname == "redis"
    for name in envs:
        svc = c["services"][name]
        assert svc["stop_grace_period"]  # time to finish the batches in flight on SIGTERM
        assert svc["depends_on"]["db-init"]["condition"] == "service_completed_successfully"
    assert {"redis", "postgres", "pgbouncer", "db-init"} <= set(c["services"])


def test_every_indexer_variable_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, re.M))
    for env in indexers(compose()).values():
        assert set(env) <= documented, set(env) - documented


def test_pgbouncer_pools_by_transaction_for_the_indexers_database():
    ini = configparser.ConfigParser()
    ini.read(ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini")
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    env = next(iter(indexers(compose()).values()))
    dbname = urlsplit(env["DATABASE_URL"]).path.lstrip("/")
    target = dict(kv.split("=", 1) for kv in ini["databases"][dbname].split())
    assert target["host"] == "postgres" and target["dbname"] == "bsky"
    # Enough client slots for both indexers' pools.
    assert int(ini["pgbouncer"]["max_client_conn"]) >= sum(
        int(e["DB_POOL_MAX_SIZE"]) for e in indexers(compose()).values()
    )


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = path.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runs_the_dataflow_as_a_non_root_user():
    steps = _instructions(ROOT / "Dockerfile")
    froms = [rest for word, rest in steps if word == "FROM"]
    assert froms[-1] == "python:3.11-slim"
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    (entry,) = [rest for word, rest in steps if word == "ENTRYPOINT"]
    assert yaml.safe_load(entry) == ["python", "-m", "bytewax.run", "flows.index"]
    # The package is installed, not run from a source tree.
    assert any(word == "RUN" and "pip install" in rest for word, rest in steps)
