"""HTTP GETs for DID and handle resolution: kept-alive connections, a deadline per request.

http.client with a shared pool of idle connections per (scheme, host, port), so a pool of
resolver threads keeps one warm connection each to the PLC directory instead of a TCP (and TLS)
handshake per DID. With ``via`` every request goes to that one address over plain HTTP with the
original Host header (tests and benchmarks point handles and did:web hosts at a local server).
Failures are reduced to ``HttpFailure(transient=...)``: the caller decides what each one means.
Touches nothing but the network.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit

MAX_BODY = 256 * 1024  # a DID document or an atproto-did file is a few hundred bytes
MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A kept-alive connection the server has meanwhile closed fails like this on its next request.
_STALE = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)
_NAME_GONE = frozenset(
    {getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, n)}
)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    location: str | None = None  # the Location header, when there is one


class HttpFailure(Exception):
    """No HTTP answer. ``transient``: a timeout, reset or the like that may pass; otherwise the
    host cannot be reached as it stands (connection refused, unknown name, bad certificate)."""

    def __init__(self, reason: str, *, transient: bool):
        super().__init__(reason)
        self.transient = transient


_Key = tuple[str, str, int]


class _Conn:
    __slots__ = ("http", "used")

    def __init__(self, conn: http.client.HTTPConnection):
        self.http = conn
        self.used = False  # has answered a request: may have gone stale while idle


class HttpClient:
    """Thread-safe; connections are taken from the idle pool for one request and put back."""

    def __init__(
        self,
        timeout: float,
        *,
        via: str | None = None,
        max_idle: int = 128,
        user_agent: str = "bsky-indexer",
    ):
        self.timeout = timeout
        self.via = _split_address(via) if via else None
        self.max_idle = max_idle
        self.user_agent = user_agent
        self._tls = ssl.create_default_context()
        self._idle: OrderedDict[_Key, list[_Conn]] = OrderedDict()
        self._idle_count = 0
        self._lock = threading.Lock()
        self._closed = False

    def get(self, url: str) -> Response:
        """GET ``url``, following up to MAX_REDIRECTS redirects (never from https to http)."""
        deadline = time.monotonic() + self.timeout
        for _ in range(MAX_REDIRECTS + 1):
            response = self._get_once(url, deadline)
            if response.status not in _REDIRECTS or response.location is None:
                return response
            target = urljoin(url, response.location)
            if urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
                raise HttpFailure("redirected from https to another scheme", transient=False)
            url = target
        raise HttpFailure("too many redirects", transient=False)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
            self._idle_count = 0
        for conn in idle:
            conn.http.close()

    # ----------------------------------------------------------------------------------------

    def _get_once(self, url: str, deadline: float) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpFailure("not an http(s) URL", transient=False)
        scheme = parts.scheme
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise HttpFailure("bad port", transient=False) from None
        host_header = parts.netloc.rpartition("@")[2]
        headers = {"Host": host_header, "User-Agent": self.user_agent, "Accept": "*/*"}
        if parts.username is not None:
            raw = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        key: _Key = ("http", *self.via) if self.via else (scheme, parts.hostname, port)

        conn = self._take(key)
        try:
            try:
                response = self._exchange(conn, path, headers, deadline)
            except _STALE:
                if not conn.used:
                    raise
                conn.http.close()  # went stale while idle: once more on a new connection
                conn = self._new(key)
                response = self._exchange(conn, path, headers, deadline)
        except TimeoutError:
            conn.http.close()
            raise HttpFailure("timed out", transient=True) from None
        except socket.gaierror as exc:
            conn.http.close()
            raise HttpFailure(
                f"name not resolved ({exc.strerror})", transient=exc.errno not in _NAME_GONE
            ) from None
        except ConnectionRefusedError:
            conn.http.close()
            raise HttpFailure("connection refused", transient=False) from None
        except ssl.SSLError as exc:
            conn.http.close()
            raise HttpFailure(f"TLS: {exc.reason or type(exc).__name__}", transient=False) from None
        except (OSError, http.client.HTTPException) as exc:
            conn.http.close()
            raise HttpFailure(type(exc).__name__, transient=True) from None
        except BaseException:
            conn.http.close()
            raise
        self._put(key, conn)
        return response

    def _exchange(
        self, conn: _Conn, path: str, headers: dict[str, str], deadline: float
    ) -> Response:
        h = conn.http
        if h.sock is None:
            h.timeout = _left(deadline)
            h.connect()
        h.sock.settimeout(_left(deadline))
        h.request("GET", path, headers=headers)
        h.sock.settimeout(_left(deadline))
        resp = h.getresponse()
        if h.sock is not None:
            h.sock.settimeout(_left(deadline))
        body = resp.read(MAX_BODY + 1)
        conn.used = True
        if len(body) > MAX_BODY:
            raise HttpFailure("response too large", transient=False)
        if not resp.isclosed():  # unread rest (a chunked body longer than read): not reusable
            h.close()
        return Response(resp.status, body, resp.getheader("Location"))

    def _take(self, key: _Key) -> _Conn:
        with self._lock:
            conns = self._idle.get(key)
            if conns:
                self._idle_count -= 1
                conn = conns.pop()
                if not conns:
                    del self._idle[key]
                return conn
        return self._new(key)

    def _new(self, key: _Key) -> _Conn:
        scheme, host, port = key
        if scheme == "https":
            return _Conn(
                http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._tls)
            )
        return _Conn(http.client.HTTPConnection(host, port, timeout=self.timeout))

    def _put(self, key: _Key, conn: _Conn) -> None:
        evicted: list[_Conn] = []
        with self._lock:
            if self._closed:
                evicted.append(conn)
            else:
                self._idle.setdefault(key, []).append(conn)
                self._idle.move_to_end(key)
                self._idle_count += 1
                while self._idle_count > self.max_idle:  # the least recently used host goes
                    oldest_key, oldest = next(iter(self._idle.items()))
                    evicted.append(oldest.pop(0))
                    self._idle_count -= 1
                    if not oldest:
                        del self._idle[oldest_key]
        for c in evicted:
            c.http.close()


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)
