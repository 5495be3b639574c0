"""Real local identity servers for DID/handle resolution tests and benchmarks.

``IdentityDirectory`` starts, on free loopback ports, in threads:

- an HTTP/1.1 server (keep-alive) that plays the PLC directory (``GET /<did>``) and every host's
  well-known endpoints, routed by the Host header: ``/.well-known/atproto-did`` per handle and
  ``/.well-known/did.json`` per did:web host;
- a DNS server (dnslib, UDP and TCP on one port) answering TXT ``_atproto.<handle>`` from a table,
  NXDOMAIN for any other name.

Its state is mutable while it runs (documents, TXT records, atproto-did files, a delay, an outage)
and it counts the requests it gets, so a test can prove what was fetched and how often. Point a
resolver at it with ``resolver_options()``. No pytest here: the benchmark imports it too.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import orjson
from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.server import DNSLogger, DNSServer

# What set_delay / set_down may target.
PLC, WELL_KNOWN, DNS = "plc", "well-known", "dns"
_ALL = (PLC, WELL_KNOWN, DNS)


def did_document(did: str, handle: str | None) -> dict[str, Any]:
    """A DID document as the PLC directory serves one, claiming ``handle`` (none when None)."""
    return {
        "@context": [
            "https://www.w3.org/ns/did/v1",
            "https://w3id.org/security/multikey/v1",
        ],
        "id": did,
        "alsoKnownAs": [f"at://{handle}"] if handle is not None else [],
        "verificationMethod": [
            {
                "id": f"{did}#atproto",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": "zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF",
            }
        ],
        "service": [
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://pds.example.com",
            }
        ],
    }


class IdentityDirectory:
    """The servers and their state; thread-safe. Use as a context manager or start()/stop()."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self._lock = threading.Lock()
        self._documents: dict[str, bytes] = {}  # DID → document body
        self._statuses: dict[str, int] = {}  # DID → status served instead of its document
        self._txt: dict[str, list[str]] = {}  # handle → TXT records of _atproto.<handle>
        self._well_known: dict[str, bytes] = {}  # handle → atproto-did body
        self._redirects: dict[str, str] = {}  # handle → Location of its atproto-did
        self._delay: dict[str, float] = {}
        self._down: set[str] = set()
        self._plc_authorization: str | None = None  # required Authorization header, if any
        self._stopping = threading.Event()
        self.requests: Counter[str] = Counter()  # "plc:<did>", "http:<handle>", "dns:<handle>"...
        self.connections = 0  # TCP connections accepted by the HTTP server
        self._http: ThreadingHTTPServer | None = None
        self._dns: list[DNSServer] = []

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> IdentityDirectory:
        self._http = _HttpServer((self.host, 0), _Handler, self)
        _serve(self._http, "identity-http")
        self._dns = _start_dns(self.host, _DnsResolver(self))
        return self

    def stop(self) -> None:
        self._stopping.set()
        for server in self._dns:
            server.server.shutdown()
            server.server.server_close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def __enter__(self) -> IdentityDirectory:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- where it listens -----------------------------------------------------------------------

    @property
    def http_port(self) -> int:
        assert self._http is not None, "not started"
        return self._http.server_address[1]

    @property
    def dns_port(self) -> int:
        return self._dns[0].server.server_address[1]

    @property
    def plc_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def http_address(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def dns_server(self) -> str:
        return f"{self.host}:{self.dns_port}"

    def web_did(self) -> str:
        """A did:web this server hosts (localhost:<port>, fetched over plain HTTP)."""
        return f"did:web:localhost%3A{self.http_port}"

    def resolver_options(self) -> dict[str, Any]:
        """Keyword arguments pointing resolution.resolver.Resolver at these servers."""
        return {
            "plc_url": self.plc_url,
            "dns_servers": (self.dns_server,),
            "http_address": self.http_address,
        }

    # -- state ----------------------------------------------------------------------------------

    def set_plc_document(self, did: str, handle_or_doc: str | dict[str, Any] | None) -> None:
        """Serve ``did``'s document (did:plc from the PLC path, did:web from its host's
        did.json): a handle builds a standard document, a dict is served as is, None → 404."""
        with self._lock:
            self._statuses.pop(did, None)
            if handle_or_doc is None:
                self._documents.pop(did, None)
                return
            doc = handle_or_doc
            if isinstance(doc, str):
                doc = did_document(did, doc)
            self._documents[did] = orjson.dumps(doc)

    def set_plc_status(self, did: str, status: int) -> None:
        """Answer requests for ``did``'s document with ``status`` (410 for a tombstone)."""
        with self._lock:
            self._statuses[did] = status

    def require_plc_credentials(self, user: str, password: str) -> None:
        """The PLC paths answer 401 unless a request carries these basic-auth credentials."""
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        with self._lock:
            self._plc_authorization = f"Basic {token}"

    def set_dns(self, handle: str, did_or_dids: str | list[str] | None) -> None:
        """``_atproto.<handle>`` TXT records ``did=<did>`` (several → ambiguous); None removes
        the name (NXDOMAIN)."""
        if did_or_dids is None:
            self.set_txt(handle, None)
            return
        dids = [did_or_dids] if isinstance(did_or_dids, str) else did_or_dids
        self.set_txt(handle, [f"did={d}" for d in dids])

    def set_txt(self, handle: str, records: list[str] | None) -> None:
        """Raw TXT records for ``_atproto.<handle>`` ([] → the name exists with no TXT)."""
        with self._lock:
            if records is None:
                self._txt.pop(handle.lower(), None)
            else:
                self._txt[handle.lower()] = list(records)

    def set_http(self, handle: str, did_or_body: str | bytes | None) -> None:
        """``https://<handle>/.well-known/atproto-did`` serves the DID (bytes: that body);
        None → 404."""
        with self._lock:
            if did_or_body is None:
                self._well_known.pop(handle.lower(), None)
            else:
                body = did_or_body if isinstance(did_or_body, bytes) else did_or_body.encode()
                self._well_known[handle.lower()] = body

    def set_http_redirect(self, handle: str, location: str | None) -> None:
        """``https://<handle>/.well-known/atproto-did`` answers 302 to ``location``."""
        with self._lock:
            if location is None:
                self._redirects.pop(handle.lower(), None)
            else:
                self._redirects[handle.lower()] = location

    def close_connections(self) -> None:
        """Close every kept-alive connection from the server's side (as an idle timeout or a
        restart would)."""
        assert self._http is not None, "not started"
        with self._lock:
            open_now = list(self._http.open_sockets)
        for sock in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def add_identity(self, did: str, handle: str, *, via: str = DNS) -> None:
        """A DID whose document claims ``handle``, which maps back to it by ``via`` (dns, http)."""
        self.set_plc_document(did, handle)
        if via == DNS:
            self.set_dns(handle, did)
        else:
            self.set_http(handle, did)

    def set_delay(self, seconds: float, *targets: str) -> None:
        """Hold each answer of ``targets`` (plc, well-known, dns; all when none) this long."""
        with self._lock:
            for target in targets or _ALL:
                self._delay[target] = seconds

    def set_down(self, down: bool, *targets: str) -> None:
        """While down, HTTP targets answer 503 and DNS answers SERVFAIL."""
        with self._lock:
            for target in targets or _ALL:
                if down:
                    self._down.add(target)
                else:
                    self._down.discard(target)

    def count(self, key: str) -> int:
        with self._lock:
            return self.requests[key]

    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    # -- used by the servers --------------------------------------------------------------------

    def _enter(self, target: str, key: str) -> bool:
        """Counts the request, applies the delay; False when the target is down."""
        with self._lock:
            self.requests[key] += 1
            delay = self._delay.get(target, 0.0)
            down = target in self._down
        if delay > 0:
            self._stopping.wait(delay)
        return not down

    def _http_answer(
        self, host: str, path: str, authorization: str | None
    ) -> tuple[int, bytes, str | None]:
        """Status, body and a Location (for a redirect)."""
        name = host.lower()
        if path == "/.well-known/atproto-did":
            handle = name.partition(":")[0]
            if not self._enter(WELL_KNOWN, f"http:{handle}"):
                return 503, b"down", None
            with self._lock:
                body = self._well_known.get(handle)
                location = self._redirects.get(handle)
            if location is not None:
                return 302, b"", location
            return (200, body, None) if body is not None else (404, b"not found", None)
        if path == "/.well-known/did.json":
            return *self._document("did:web:" + name.replace(":", "%3A"), f"web:{name}"), None
        did = unquote(path[1:])
        if path.startswith("/did:"):
            with self._lock:
                required = self._plc_authorization
            if required is not None and authorization != required:
                return 401, b'{"message":"unauthorized"}', None
            return *self._document(did, f"plc:{did}"), None
        return 404, b"not found", None

    def _document(self, did: str, key: str) -> tuple[int, bytes]:
        if not self._enter(PLC, key):
            return 503, b"down"
        with self._lock:
            status = self._statuses.get(did)
            body = self._documents.get(did)
        if status is not None:
            return status, b"{}"
        return (200, body) if body is not None else (404, b'{"message":"DID not registered"}')

    def _txt_records(self, name: str) -> list[str] | None | bool:
        """TXT records for a queried name; None → NXDOMAIN; False → SERVFAIL (down)."""
        name = name.rstrip(".").lower()
        handle = name[len("_atproto.") :] if name.startswith("_atproto.") else None
        if not self._enter(DNS, f"dns:{handle or name}"):
            return False
        if handle is None:
            return None
        with self._lock:
            records = self._txt.get(handle)
        return list(records) if records is not None else None


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, directory: IdentityDirectory):
        self.directory = directory
        self.open_sockets: set[socket.socket] = set()
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        with self.directory._lock:
            self.directory.connections += 1
            self.open_sockets.add(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self.directory._lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and closed its end: nothing to report


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall
    timeout = 30  # an idle kept-alive connection is closed after this
    server: _HttpServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        host = self.headers.get("Host", "")
        status, body, location = self.server.directory._http_answer(
            host, self.path, self.headers.get("Authorization")
        )
        self.send_response(status)
        if location is not None:
            self.send_header("Location", location)
        ctype = "text/plain" if self.path.endswith("atproto-did") else "application/json"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _DnsResolver:
    def __init__(self, directory: IdentityDirectory):
        self.directory = directory

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        qname = request.q.qname
        records = self.directory._txt_records(str(qname))
        if records is False:
            reply.header.rcode = RCODE.SERVFAIL
        elif records is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.TXT, QTYPE.ANY):
            for record in records:
                data = record.encode()
                chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
                reply.add_answer(RR(qname, QTYPE.TXT, rdata=TXT(chunks), ttl=60))
        return reply


def _start_dns(host: str, resolver: _DnsResolver) -> list[DNSServer]:
    """UDP and TCP servers on one free port (dnspython retries a truncated answer over TCP)."""
    quiet = DNSLogger(log="-recv,-send,-request,-reply,-truncated,-error,-data", prefix=False)
    for _ in range(50):
        udp = DNSServer(resolver, address=host, port=0, logger=quiet)
        port = udp.server.server_address[1]
        try:
            tcp = DNSServer(resolver, address=host, port=port, tcp=True, logger=quiet)
        except OSError:
            udp.server.server_close()
            continue
        _serve(udp.server, "identity-dns-udp")
        _serve(tcp.server, "identity-dns-tcp")
        return [udp, tcp]
    raise RuntimeError("no free port for the DNS server")


def _serve(server: Any, name: str) -> None:
    # A short poll interval: shutdown() waits for one, and every test stops its servers.
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name=name, daemon=True
    ).start()
