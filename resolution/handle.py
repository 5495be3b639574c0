"""Handle → DID, as @atproto/identity's handle resolver does: DNS TXT ``_atproto.<handle>`` first
(exactly one ``did=`` record), then ``https://<handle>/.well-known/atproto-did``; DNS wins.

``HandleResolver.resolve`` answers a DID, none (definitive: no record or NXDOMAIN, and HTTP 404,
connection refused...), or unavailable: neither lookup gave a DID and one of them failed in a way
that may pass (DNS timed out or SERVFAIL, HTTP timed out or answered 5xx/429), since the DID may
be behind it: a handle served over HTTP only (most are) must not lose its handle to a PDS
outage; the worker gives up on such a handle after a while (resolution/worker.py). One dnspython
resolver, configured once. Touches nothing but the network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

import dns.exception
import dns.nameserver
import dns.resolver

from .transport import HttpClient, HttpFailure

_TXT_PREFIX = "did="


@dataclass(frozen=True)
class HandleAnswer:
    did: str | None
    unavailable: str | None = None  # set when no lookup gave a DID and one failed transiently


@dataclass(frozen=True)
class _Lookup:
    did: str | None
    transient: str | None = None  # the lookup failed in a way that may pass: why


def did_from_txt(records: Iterable[str]) -> str | None:
    """The DID of exactly one ``did=`` record; several are ambiguous, so none."""
    found = [r[len(_TXT_PREFIX) :] for r in records if r.startswith(_TXT_PREFIX)]
    return found[0] if len(found) == 1 else None


def did_from_well_known(body: bytes) -> str | None:
    """The first line of an atproto-did file, trimmed, when it is a DID."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None
    line = text.split("\n", 1)[0].strip()
    return line if line.startswith("did:") else None


def nameserver(spec: str) -> dns.nameserver.Do53Nameserver:
    """``ip``, ``ip:port`` or ``[v6]:port`` → a nameserver; ValueError when it is not one."""
    host, port = spec.strip(), 53
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"not a DNS server address: {spec!r}")
            port = int(rest[1:])
    elif host.count(":") == 1:
        host, _, text = host.partition(":")
        if not text.isdigit():
            raise ValueError(f"not a DNS server address: {spec!r}")
        port = int(text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"not a DNS server address (an IP is needed): {spec!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"not a DNS server port: {spec!r}")
    return dns.nameserver.Do53Nameserver(host, port)


class HandleResolver:
    """Thread-safe (dnspython's resolver keeps no per-query state; the HTTP client pools)."""

    def __init__(self, http: HttpClient, *, timeout: float, dns_servers: tuple[str, ...] = ()):
        self.http = http
        if dns_servers:
            self.dns = dns.resolver.Resolver(configure=False)
            self.dns.nameservers = [nameserver(s) for s in dns_servers]
        else:
            self.dns = dns.resolver.Resolver()  # /etc/resolv.conf
        self.dns.timeout = timeout
        self.dns.lifetime = timeout

    def resolve(self, handle: str) -> HandleAnswer:
        by_dns = self._dns(handle)
        if by_dns.did is not None:
            return HandleAnswer(by_dns.did)
        by_http = self._http(handle)
        if by_http.did is not None:
            return HandleAnswer(by_http.did)
        if by_dns.transient or by_http.transient:
            failed = [
                f"{name} {why}"
                for name, why in (("DNS", by_dns.transient), ("HTTP", by_http.transient))
                if why
            ]
            return HandleAnswer(None, "; ".join(failed))
        return HandleAnswer(None)

    def _dns(self, handle: str) -> _Lookup:
        try:
            answer = self.dns.resolve(f"_atproto.{handle}.", "TXT", raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
            return _Lookup(None)
        except dns.exception.Timeout:
            return _Lookup(None, "timed out")
        except dns.resolver.NoNameservers:  # every server answered SERVFAIL or refused
            return _Lookup(None, "no server answered")
        except dns.exception.DNSException as exc:
            return _Lookup(None, type(exc).__name__)
        records = (b"".join(rdata.strings).decode(errors="replace") for rdata in answer.rrset or ())
        return _Lookup(did_from_txt(records))

    def _http(self, handle: str) -> _Lookup:
        try:
            response = self.http.get(f"https://{handle}/.well-known/atproto-did")
        except HttpFailure as exc:
            return _Lookup(None, str(exc) if exc.transient else None)
        if response.status == 429 or response.status >= 500:
            return _Lookup(None, f"answered {response.status}")
        if response.status != 200:
            return _Lookup(None)
        return _Lookup(did_from_well_known(response.body))
