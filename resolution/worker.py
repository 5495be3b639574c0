"""The handle-check worker: one per indexer process, resolving the queued checks in the background.

A thread leases due checks from ``bsky_indexer.handle_check`` (sinks/postgres/handle_checks.py,
which owns the SQL), hands each to a pool of DID_RESOLUTION_CONCURRENCY resolver threads, and
records the outcomes, many per transaction. Only that thread touches Postgres, one pooled
connection at a time, so the worker adds at most one connection to the writers'
(DB_POOL_MAX_SIZE bounds them all). While the readers find a backlog, only an eighth of the
threads are used: resolution costs CPU (and the GIL) that indexing needs more, and the checks
wait durably. Several processes share the queue (SKIP LOCKED); a crashed one's leases run out and
its checks come back.

A resolution that is unavailable (timeout, server down) is deferred with exponential backoff and
jitter, capped at DID_RESOLUTION_RETRY_MAX: the check stays in the table, durable across restarts.
When only the handle's side keeps failing (its domain times out or its host answers 5xx) the
check ends after GIVE_UP_ATTEMPTS tries, about an hour with the default cap, with a NULL handle:
a dead domain is not retried forever, and no handle is stored unverified. A PLC outage is
retried for as long as it lasts.
Deferrals are logged once per DID (its first failure), summed into one line per interval.

``acquire``/``release`` give the process's worker to the record sinks (sinks/postgres/sink.py),
which start it with the first partition and stop it with the last: the stop hands back leased
checks not yet resolved. While checks are due, the worker keeps an INDEXER_STOP_WHEN_IDLE run
from ending (connectors/redis_streams.py BUSY).

Touches: the handle_check table and ``actor`` through handle_checks.py, the network through
resolver.py, metrics (the queue gauge).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from config.settings import Settings
from connectors import redis_streams
from connectors.redis_streams import Backlog
from observability import metrics
from sinks.postgres import handle_checks, ordering
from sinks.postgres.handle_checks import Check
from sinks.postgres.sink import backoff, is_transient

from .resolver import Resolution, ResolutionUnavailable, Resolver

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5  # seconds between looks at the queue when nothing is due
RECORD_DELAY = 0.2  # seconds a finished resolution may wait to be recorded with others
# While the indexer catches up on a backlog, resolutions share its CPU (and the GIL): an eighth
# of them in flight, until reads have come back short for this long.
BACKLOG_SHARE = 8
BACKLOG_QUIET = 2.0
FAILURE_LOG_INTERVAL = 10.0
# Tries before a handle that never answers counts as not resolving (2 s doubling to the cap:
# 2 + 4 + ... + 2048 s, about 50 minutes with jitter at the default DID_RESOLUTION_RETRY_MAX).
GIVE_UP_ATTEMPTS = 12


def resolver_from(settings: Settings) -> Resolver:
    """The Resolver the settings describe."""
    return Resolver(
        plc_url=settings.plc_url,
        timeout=settings.did_resolution_timeout,
        cache_size=settings.did_cache_size,
        cache_ttl=settings.did_cache_ttl,
        dns_servers=settings.did_resolution_dns_servers,
        http_address=settings.did_resolution_http_address,
    )


def lease_for(timeout: float) -> float:
    """How long a claimed check is ours: a resolution makes up to three requests in a row (DID
    document, DNS, HTTPS), each within ``timeout``, and is then recorded."""
    return 4 * timeout + 5.0


def retry_delay(attempts: int, cap: float) -> float:
    """Seconds until the next try after ``attempts`` failures in a row: 2, 4, 8... up to
    ``cap``, each between half and all of that (jitter, so a recovered server is not hit at once
    by every DID that failed together)."""
    return min(2.0**attempts, cap) * random.uniform(0.5, 1.0)


class _FailureLog:
    """One warning line per interval summing the DIDs whose resolution failed for the first
    time, with one of them as an example; retries of a DID are not logged again."""

    def __init__(self, retry_max: float, interval: float = FAILURE_LOG_INTERVAL):
        self.retry_max = retry_max
        self.interval = interval
        self._count = 0
        self._example = ""
        self._last: float | None = None

    def add(self, did: str, reason: str) -> None:
        self._count += 1
        self._example = self._example or f"{did}: {reason}"
        self.flush(force=False)

    def flush(self, force: bool = True) -> None:
        now = time.monotonic()
        if not self._count or (
            not force and self._last is not None and now - self._last < self.interval
        ):
            return
        log.warning(
            "handle checks deferred for %d DIDs, resolution unavailable (e.g. %s); retried with "
            "backoff up to %.0fs",
            self._count,
            self._example[:300],
            self.retry_max,
        )
        self._count, self._example, self._last = 0, "", now


class HandleWorker:
    """Claims due checks, resolves them on ``concurrency`` threads, records the outcomes; one
    thread (``handle-checks``) does all the database work. ``start``/``stop``."""

    def __init__(
        self,
        pool: ConnectionPool,
        resolver: Resolver,
        *,
        concurrency: int = 16,
        retry_max: float = 3600.0,
        lease: float = 17.0,
        poll_interval: float = POLL_INTERVAL,
        give_up_attempts: int = GIVE_UP_ATTEMPTS,
    ):
        self.pool = pool
        self.resolver = resolver
        self.concurrency = concurrency
        self.retry_max = retry_max
        self.give_up_attempts = give_up_attempts
        self.lease = lease
        self.poll_interval = poll_interval
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="resolve")
        self._results: queue.SimpleQueue[tuple[Check, Resolution | BaseException]] = (
            queue.SimpleQueue()
        )
        self._unrecorded: list[tuple[Check, Resolution | BaseException]] = []
        self._unrecorded_since = 0.0
        self._in_flight: dict[str, Check] = {}  # claimed, until recorded (or handed back)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failures = _FailureLog(retry_max)
        self._db_failures = 0
        self._busy_until = 0.0
        self._thread = threading.Thread(target=self._run, name="handle-checks", daemon=True)

    @classmethod
    def from_settings(cls, settings: Settings, pool: ConnectionPool) -> HandleWorker:
        return cls(
            pool,
            resolver_from(settings),
            concurrency=settings.did_resolution_concurrency,
            retry_max=settings.did_resolution_retry_max,
            lease=lease_for(settings.did_resolution_timeout),
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop claiming; record what finishes within the lease, hand back the rest."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.resolver.close()

    def busy(self) -> bool:
        """Checks in flight, or queued checks due now or not yet failed (not those backing off).
        A database that cannot be asked counts as busy."""
        with self._lock:
            if self._in_flight:
                return True
        if time.monotonic() < self._busy_until:  # asked a moment ago: spare the database
            return True
        try:
            with self.pool.connection() as conn:
                found = handle_checks.outstanding(conn)
        except (psycopg.Error, PoolTimeout):
            found = True
        if found:
            self._busy_until = time.monotonic() + self.poll_interval
        return found

    def sample(self) -> None:
        """Set the queue gauge (called by the metrics sampler)."""
        try:
            with self.pool.connection() as conn:
                due, leased, retrying = handle_checks.counts(conn)
        except (psycopg.Error, PoolTimeout):
            return  # the writers log database trouble; a gauge skips a beat
        metrics.handle_checks_queued(due, leased, retrying)

    # ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
                self._db_failures = 0
            except (psycopg.Error, PoolTimeout) as exc:
                self._database_failed(exc)
            except Exception:  # noqa: BLE001 - the worker must outlive any one bad answer
                log.exception("handle-check worker step failed; going on")
                self._stop.wait(self.poll_interval)
        self._finish()

    def _step(self) -> None:
        limit = self.concurrency
        if time.monotonic() - Backlog.seen_at < BACKLOG_QUIET:
            limit = max(limit // BACKLOG_SHARE, 1)
        room = limit - len(self._in_flight)
        # Claim in bunches (half the pool free, or idle), not one query per finished check.
        if room > 0 and (room * 2 >= limit or not self._in_flight):
            ordering.ensure_table(self.pool)
            with self.pool.connection() as conn:
                claimed = handle_checks.claim(conn, room, self.lease)
            for check in claimed:
                with self._lock:
                    self._in_flight[check.did] = check
                self._executor.submit(self._resolve, check)
        # Outcomes are recorded together (one transaction for many) unless none are coming.
        waiting = bool(self._unrecorded)
        deadline = self._unrecorded_since + RECORD_DELAY
        self._collect(max(deadline - time.monotonic(), 0.0) if waiting else self.poll_interval)
        if not self._unrecorded:
            return
        if not waiting:
            self._unrecorded_since = time.monotonic()
        if (
            len(self._unrecorded) >= len(self._in_flight)  # nothing else is coming
            or len(self._unrecorded) * 2 >= self.concurrency
            or time.monotonic() >= self._unrecorded_since + RECORD_DELAY
        ):
            self._record()

    def _resolve(self, check: Check) -> None:
        try:
            outcome: Resolution | BaseException = self.resolver.resolve(
                check.did, fresh=check.forced
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the recording thread
            outcome = exc
        self._results.put((check, outcome))

    def _collect(self, wait: float) -> None:
        """Move finished resolutions to ``_unrecorded``, waiting up to ``wait`` for the first."""
        try:
            self._unrecorded.append(self._noted(self._results.get(timeout=wait)))
        except queue.Empty:
            return
        while True:
            try:
                self._unrecorded.append(self._noted(self._results.get_nowait()))
            except queue.Empty:
                return

    def _noted(
        self, result: tuple[Check, Resolution | BaseException]
    ) -> tuple[Check, Resolution | BaseException]:
        """The result, its failure (if any) logged: a DID's first one, or any unexpected one."""
        check, outcome = result
        if isinstance(outcome, ResolutionUnavailable):
            if check.attempts == 0:
                self._failures.add(check.did, str(outcome))
        elif not isinstance(outcome, Resolution):
            log.error("resolving %s failed: %r; retried with backoff", check.did, outcome)
        return result

    def _record(self) -> None:
        """Record the finished resolutions on one connection: the outcomes in one transaction,
        the deferrals in another. Kept for the next step while the database is unavailable (a
        check whose lease ran out meanwhile is simply not ours any more)."""
        if not self._unrecorded:
            return
        batch = self._unrecorded
        with self.pool.connection() as conn:
            try:
                self._write(conn, batch)
            except psycopg.Error as exc:
                if is_transient(exc):
                    raise
                # Say, a handle another process stored at the same moment: one by one, so only
                # the check at fault is left (its lease runs out and it is resolved again).
                for item in batch:
                    try:
                        self._write(conn, [item])
                    except psycopg.Error as exc:
                        if is_transient(exc):
                            raise
                        log.warning("handle check of %s not recorded (%s)", item[0].did, exc)
        self._unrecorded = []
        with self._lock:
            for check, _ in batch:
                self._in_flight.pop(check.did, None)
        self._failures.flush(force=False)

    def _write(
        self, conn: psycopg.Connection, batch: list[tuple[Check, Resolution | BaseException]]
    ) -> None:
        resolved = [(c, o.handle) for c, o in batch if isinstance(o, Resolution)]
        resolved += [(c, None) for c, o in batch if self._given_up(c, o)]
        failed = [
            (c, retry_delay(c.attempts + 1, self.retry_max), str(o) or type(o).__name__)
            for c, o in batch
            if not isinstance(o, Resolution) and not self._given_up(c, o)
        ]
        lost = len(resolved) - handle_checks.record(conn, resolved)
        lost += len(failed) - handle_checks.defer(conn, failed)
        if lost:
            log.info("%d handle checks outlived their lease; left to their new owner", lost)

    def _given_up(self, check: Check, outcome: Resolution | BaseException) -> bool:
        return (
            isinstance(outcome, ResolutionUnavailable)
            and outcome.handle_side
            and check.attempts + 1 >= self.give_up_attempts
        )

    def _database_failed(self, exc: BaseException) -> None:
        metrics.retried("postgres", "handle_check")
        delay = backoff(self._db_failures)
        self._db_failures += 1
        log.warning(
            "database unavailable for handle checks (%s); retry %d in %.1fs",
            type(exc).__name__,
            self._db_failures,
            delay,
        )
        self._stop.wait(delay)

    def _finish(self) -> None:
        """Stopping: record what finishes within the lease, then hand back what is left."""
        deadline = time.monotonic() + self.lease
        try:
            while self._in_flight and time.monotonic() < deadline:
                self._collect(min(0.2, max(deadline - time.monotonic(), 0.01)))
                self._record()
            with self._lock:
                left = list(self._in_flight.values())
            if left:
                with self.pool.connection() as conn:
                    handle_checks.release(conn, left)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("handle checks not handed back at stop (%s); their leases run out", exc)
        self._failures.flush()


_worker: HandleWorker | None = None
_users = 0
_lock = threading.Lock()


def acquire(settings: Settings, pool: ConnectionPool) -> HandleWorker:
    """The process's worker, started on the first call; each call needs a ``release``."""
    global _worker, _users
    with _lock:
        if _worker is None:
            _worker = HandleWorker.from_settings(settings, pool)
            _worker.start()
            redis_streams.BUSY.append(_worker.busy)
            metrics.SAMPLED.append(_worker.sample)
            log.info("handle checks: resolving with up to %d threads", _worker.concurrency)
        _users += 1
        return _worker


def release() -> None:
    """The last user gone: stop the worker (blocks while it records or hands back its checks)."""
    global _worker, _users
    with _lock:
        _users -= 1
        if _users > 0 or _worker is None:
            return
        worker, _worker = _worker, None
        redis_streams.BUSY.remove(worker.busy)
        metrics.SAMPLED.remove(worker.sample)
    worker.stop()
