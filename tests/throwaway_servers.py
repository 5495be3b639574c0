"""Servers a test may stop, crash and restart: never the shared ones.

Each runs on a free port with its files in a temporary folder. PostgreSQL and pgbouncer refuse to
run as root, so as root they run as the ``postgres`` user (which Debian's packages create).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def _pg_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin with initdb (Debian's layout)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


PG_BIN = _pg_bin()
MISSING_PG = (
    "PostgreSQL server binaries are not installed (scripts/services.sh installs them as root)"
    if PG_BIN is None
    else None
)
MISSING_REDIS = (
    None
    if shutil.which("redis-server")
    else "redis-server is not installed (scripts/services.sh installs it as root)"
)
MISSING_PGBOUNCER = (
    None
    if shutil.which("pgbouncer") or os.path.exists("/usr/sbin/pgbouncer")
    else "pgbouncer is not installed (scripts/services.sh installs Debian's package as root)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(ready, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not come up in {timeout}s")


def _as_pg_user() -> dict:
    """Popen arguments that run a command as the postgres user when we are root (initdb,
    postgres and pgbouncer refuse root), with no wrapper process between us and it."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": [], "cwd": "/tmp"}


def _private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


class ThrowawayRedis:
    """redis-server with an append-only file synced on every write, so a crash (SIGKILL) and a
    restart keep every acknowledged write, as a production Redis with AOF does."""

    def __init__(self, password: str | None = None):
        self.port = free_port()
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="bskyidx-redis-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)]
        if self.password:
            cmd += ["--requirepass", self.password]
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        _wait(lambda: self.client().ping(), "redis-server")

    def crash(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        self.crash()
        shutil.rmtree(self.dir, ignore_errors=True)


class ThrowawayPostgres:
    """A PostgreSQL 15 cluster of our own (initdb), trust authentication on 127.0.0.1."""

    def __init__(self) -> None:
        assert PG_BIN is not None, MISSING_PG
        self.port = free_port()
        self.dir = _private_dir("bskyidx-pg-")
        self.data = self.dir / "data"
        self._run(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"]
            + ["-E", "UTF8", "--locale=C.UTF-8"]
        )

    def url(self, dbname: str = "postgres", password: str | None = None) -> str:
        params = {"host": "127.0.0.1", "port": self.port, "user": "postgres", "dbname": dbname}
        if password:
            params["password"] = password
        return make_conninfo(**params)

    def _run(self, cmd: list[str]) -> None:
        subprocess.run(cmd, check=True, capture_output=True, timeout=120, **_as_pg_user())

    def _ctl(self, *args: str) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w"]
            + ["-t", "60", *args, "-o", opts]
        )

    def start(self) -> None:
        self._ctl("start")
        _wait(lambda: psycopg.connect(self.url(), connect_timeout=2).close() or True, "postgres")

    def restart(self) -> None:
        """Stop at once, as a crash would (recovery from the WAL on start), and start again."""
        self._ctl("restart", "-m", "immediate")
        _wait(lambda: psycopg.connect(self.url(), connect_timeout=2).close() or True, "postgres")

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Pgbouncer:
    """Debian's pgbouncer in transaction pooling mode in front of ``target`` (a libpq URL)."""

    def __init__(self, target: str, pool_size: int = 4):
        assert MISSING_PGBOUNCER is None, MISSING_PGBOUNCER
        self.binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        params = conninfo_to_dict(target)
        self.user = params.get("user", "postgres")
        self.port = free_port()
        self.dir = _private_dir("bskyidx-pgbouncer-")
        (self.dir / "userlist.txt").write_text(f'"{self.user}" ""\n')
        host, port = params.get("host", "127.0.0.1"), params.get("port", "5432")
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.dir / 'userlist.txt'}\n"
            f"pool_mode = transaction\ndefault_pool_size = {pool_size}\n"
            "max_client_conn = 200\n"
        )
        for f in self.dir.iterdir():
            f.chmod(0o644)
        self.proc: subprocess.Popen | None = None

    def url(self, dbname: str) -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, user=self.user, dbname=dbname)

    def start(self) -> None:
        log = open(self.dir / "pgbouncer.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            [self.binary, str(self.dir / "pgbouncer.ini")], stdout=log, stderr=log, **_as_pg_user()
        )
        _wait(
            lambda: psycopg.connect(self.url("postgres"), connect_timeout=2).close() or True,
            "pgbouncer",
        )

    def log(self) -> str:
        return (self.dir / "pgbouncer.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
