"""Which handle a DID really controls: its DID document's handle, kept only when the handle
resolves back to the same DID (as the AppView's indexer's ``indexHandle`` does).

``Resolver.resolve`` is called from a pool of threads. Two caches, each bounded in size and time:
DID → the handle its document claims, and handle → the DID it resolves to; definitive answers
(not found, no handle, a handle resolving to nothing) are cached too, transient failures never.
``fresh=True`` skips both caches and refills them. Records the resolution metrics. Touches
nothing but the network; the PLC URL (which may carry credentials) is never logged or put in an
error message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cachetools import TTLCache

from observability import metrics

from .did_document import DocumentAnswer, DocumentFetcher
from .handle import HandleResolver
from .transport import HttpClient

VERIFIED = "verified"
MISMATCH = "mismatch"
NO_HANDLE = "no_handle"
NOT_FOUND = "not_found"
UNAVAILABLE = "unavailable"  # metrics only: resolve() raised ResolutionUnavailable


class ResolutionUnavailable(Exception):
    """Transient failure (timeout, connection reset, HTTP 5xx/429, DNS server timeout/SERVFAIL):
    the caller retries later with backoff. ``handle_side``: the DID document was found and only
    its handle could not be resolved (a dead domain may never answer: callers give up on it
    eventually; a PLC outage, by contrast, passes)."""

    def __init__(self, message: str, *, handle_side: bool = False):
        super().__init__(message)
        self.handle_side = handle_side


@dataclass(frozen=True)
class Resolution:
    did: str
    handle: str | None  # lower-cased, verified both ways; None otherwise
    # "verified" | "mismatch" (the handle maps to another DID or to none) | "no_handle" (the
    # document has no valid at:// alsoKnownAs handle) | "not_found" (no DID document)
    outcome: str


K = TypeVar("K")
V = TypeVar("V")
_MISSING = object()


class _Cache(Generic[K, V]):
    """A locked TTL LRU; size 0 caches nothing."""

    def __init__(self, size: int, ttl: float):
        self._data: TTLCache | None = (
            TTLCache(maxsize=size, ttl=ttl, timer=time.monotonic) if size > 0 and ttl > 0 else None
        )
        self._lock = threading.Lock()

    def get(self, key: K) -> V | object:
        if self._data is None:
            return _MISSING
        with self._lock:
            return self._data.get(key, _MISSING)

    def put(self, key: K, value: V) -> None:
        if self._data is not None:
            with self._lock:
                self._data[key] = value


class Resolver:
    def __init__(
        self,
        *,
        plc_url: str = "https://plc.directory",
        timeout: float = 3.0,
        cache_size: int = 100_000,
        cache_ttl: float = 3600.0,
        dns_servers: tuple[str, ...] = (),  # "ip" or "ip:port"; () = the system's resolver
        http_address: str | None = None,  # "host:port": every handle/did:web HTTP(S) request
        # goes here over plain HTTP, Host header kept (tests, benchmarks)
    ):
        self._plc_http = HttpClient(timeout)
        self._web_http = HttpClient(timeout, via=http_address)
        self._documents = DocumentFetcher(plc_url, self._plc_http, self._web_http)
        self._handles = HandleResolver(self._web_http, timeout=timeout, dns_servers=dns_servers)
        self._did_cache: _Cache[str, DocumentAnswer] = _Cache(cache_size, cache_ttl)
        self._handle_cache: _Cache[str, str | None] = _Cache(cache_size, cache_ttl)

    def resolve(self, did: str, *, fresh: bool = False) -> Resolution:
        """Thread-safe. ``fresh=True`` bypasses both caches (identity events force a refresh,
        as upstream's indexHandle(force) does) but refills them."""
        began = time.perf_counter()
        trip = _Trip()
        try:
            result = self._resolve(did, fresh, trip)
        except ResolutionUnavailable:
            metrics.handle_resolution(UNAVAILABLE, time.perf_counter() - began)
            raise
        metrics.handle_resolution(
            result.outcome, time.perf_counter() - began if trip.network else None
        )
        return result

    def close(self) -> None:
        self._plc_http.close()
        self._web_http.close()

    # ----------------------------------------------------------------------------------------

    def _resolve(self, did: str, fresh: bool, trip: _Trip) -> Resolution:
        doc = self._document(did, fresh, trip)
        if not doc.found:
            return Resolution(did, None, NOT_FOUND)
        if doc.handle is None:
            return Resolution(did, None, NO_HANDLE)
        if self._handle_did(doc.handle, fresh, trip) == did:
            return Resolution(did, doc.handle, VERIFIED)
        return Resolution(did, None, MISMATCH)

    def _document(self, did: str, fresh: bool, trip: _Trip) -> DocumentAnswer:
        return self._cached(self._did_cache, "did", did, fresh, trip, self._fetch_document)

    def _handle_did(self, handle: str, fresh: bool, trip: _Trip) -> str | None:
        return self._cached(self._handle_cache, "handle", handle, fresh, trip, self._fetch_did)

    def _cached(
        self,
        cache: _Cache[str, V],
        kind: str,
        key: str,
        fresh: bool,
        trip: _Trip,
        fetch: Callable[[str], V],
    ) -> V:
        """The cached answer for ``key`` unless ``fresh``; else fetched (raising
        ResolutionUnavailable, never cached) and cached."""
        if not fresh:
            cached = cache.get(key)
            metrics.handle_resolution_cache(kind, cached is not _MISSING)
            if cached is not _MISSING:
                return cached  # type: ignore[return-value]
        trip.network = True
        value = fetch(key)
        cache.put(key, value)
        return value

    def _fetch_document(self, did: str) -> DocumentAnswer:
        doc = self._documents.fetch(did)
        if doc.unavailable is not None:
            raise ResolutionUnavailable(f"{did}: {doc.unavailable}")
        return doc

    def _fetch_did(self, handle: str) -> str | None:
        answer = self._handles.resolve(handle)
        if answer.unavailable is not None:
            raise ResolutionUnavailable(f"handle {handle}: {answer.unavailable}", handle_side=True)
        return answer.did


class _Trip:
    """Whether one resolve() went to the network (only those are timed)."""

    __slots__ = ("network",)

    def __init__(self) -> None:
        self.network = False
