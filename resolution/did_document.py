"""DID → DID document → the handle it claims (did:plc through the PLC directory, did:web through
``/.well-known/did.json``), as @atproto/identity's DID resolvers do.

``DocumentFetcher.fetch`` answers found (with the claimed handle, or None), not found, or
unavailable (a transient failure, with its reason). Reasons never hold the PLC URL, which may
carry credentials. Touches nothing but the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import orjson

from flows.datamodel import is_did, is_handle

from .transport import HttpClient, HttpFailure

# did:web identifies a host (a port encoded as %3A); upstream does not resolve did:web paths.
_WEB_HOST_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]{1,5})?")


@dataclass(frozen=True)
class DocumentAnswer:
    found: bool
    handle: str | None = None  # the claimed handle, lower-cased; None when none is valid
    unavailable: str | None = None  # set when no answer could be had (transient): why


NOT_FOUND = DocumentAnswer(found=False)


def document_url(did: str, plc_url: str) -> str | None:
    """Where ``did``'s document lives; None for a DID this indexer cannot resolve (another
    method, a did:web with a path)."""
    if not is_did(did):
        return None
    if did.startswith("did:plc:"):
        return f"{plc_url.rstrip('/')}/{quote(did, safe=':')}"
    if did.startswith("did:web:"):
        encoded = did[len("did:web:") :]
        if ":" in encoded:  # a path
            return None
        host = unquote(encoded)
        if _WEB_HOST_RE.fullmatch(host) is None:
            return None
        # Upstream fetches localhost over plain HTTP (local development).
        scheme = "http" if host.partition(":")[0].lower() == "localhost" else "https"
        return f"{scheme}://{host}/.well-known/did.json"
    return None


def parse_document(did: str, body: bytes) -> dict[str, Any] | None:
    """The document in ``body`` when it is one for ``did`` (an object whose ``id`` is the DID and
    whose ``alsoKnownAs``, when present, is a list of strings); None otherwise."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or doc.get("id") != did:
        return None
    aka = doc.get("alsoKnownAs")
    if aka is not None and (type(aka) is not list or any(type(a) is not str for a in aka)):
        return None
    return doc


def document_handle(doc: dict[str, Any]) -> str | None:
    """The first ``at://`` alsoKnownAs entry, lower-cased, when it is a valid handle."""
    for aka in doc.get("alsoKnownAs") or ():
        if aka.startswith("at://"):
            handle = aka[len("at://") :]
            return handle.lower() if is_handle(handle) else None
    return None


class DocumentFetcher:
    """Thread-safe. ``plc`` talks to the PLC directory only; ``web`` to did:web hosts."""

    def __init__(self, plc_url: str, plc: HttpClient, web: HttpClient):
        self.plc_url = plc_url
        self.plc = plc
        self.web = web

    def fetch(self, did: str) -> DocumentAnswer:
        url = document_url(did, self.plc_url)
        if url is None:
            return NOT_FOUND
        if did.startswith("did:plc:"):
            return self._fetch_plc(did, url)
        return self._fetch_web(did, url)

    def _fetch_plc(self, did: str, url: str) -> DocumentAnswer:
        try:
            response = self.plc.get(url)
        except HttpFailure as exc:
            return _unavailable(f"PLC directory: {exc}")
        if response.status in (404, 410):  # 410: tombstoned
            return NOT_FOUND
        if response.status != 200:
            return _unavailable(f"PLC directory answered HTTP {response.status}")
        doc = parse_document(did, response.body)
        if doc is None:  # the directory itself is broken (or a proxy in front of it): retry
            return _unavailable("PLC directory answered something that is not the DID document")
        return DocumentAnswer(found=True, handle=document_handle(doc))

    def _fetch_web(self, did: str, url: str) -> DocumentAnswer:
        try:
            response = self.web.get(url)
        except HttpFailure as exc:
            # A host that does not exist or refuses is an answer (unlike the PLC directory,
            # which is always there): retrying a dead domain forever would gain nothing.
            return _unavailable(f"did:web host: {exc}") if exc.transient else NOT_FOUND
        if response.status == 429 or response.status >= 500:
            return _unavailable(f"did:web host answered HTTP {response.status}")
        if response.status != 200:
            return NOT_FOUND
        doc = parse_document(did, response.body)
        if doc is None:  # the host serves no valid document for this DID
            return NOT_FOUND
        return DocumentAnswer(found=True, handle=document_handle(doc))


def _unavailable(reason: str) -> DocumentAnswer:
    return DocumentAnswer(found=False, unavailable=reason)
