"""DID/handle resolution (resolution/) against real local servers: a PLC directory and
well-known endpoints over HTTP, and a DNS server answering TXT records (tests/identity_servers.py).
No Postgres or Redis needed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from resolution.resolver import NOT_FOUND, Resolution, ResolutionUnavailable, Resolver

from .identity_servers import DNS, PLC, WELL_KNOWN, IdentityDirectory, did_document

TIMEOUT = 0.3
ALICE, BOB, EVE = (
    "did:plc:alice7ttxdh2nozkn4yqfkc",
    "did:plc:bob4cqxv2plq5ho3n6vxzwq",
    "did:plc:eve",
)


@pytest.fixture
def directory(identity_directory: IdentityDirectory) -> IdentityDirectory:
    return identity_directory


@pytest.fixture
def resolver(directory: IdentityDirectory) -> Iterator[Resolver]:
    r = Resolver(**directory.resolver_options(), timeout=TIMEOUT)
    yield r
    r.close()


def make_resolver(directory: IdentityDirectory, **kwargs: object) -> Resolver:
    return Resolver(**{**directory.resolver_options(), "timeout": TIMEOUT, **kwargs})


def verified(did: str, handle: str) -> Resolution:
    return Resolution(did, handle, "verified")


def mismatch(did: str) -> Resolution:
    return Resolution(did, None, "mismatch")


# -- verified both ways, or not --------------------------------------------------------------


def test_verified_through_dns(directory: IdentityDirectory, resolver: Resolver) -> None:
    directory.add_identity(ALICE, "alice.test", via=DNS)
    assert resolver.resolve(ALICE) == verified(ALICE, "alice.test")
    assert directory.count(f"plc:{ALICE}") == 1
    assert directory.count("dns:alice.test") == 1
    assert directory.count("http:alice.test") == 0  # DNS answered: no HTTP lookup


def test_verified_through_http(directory: IdentityDirectory, resolver: Resolver) -> None:
    directory.add_identity(ALICE, "alice.test", via=WELL_KNOWN)
    assert resolver.resolve(ALICE) == verified(ALICE, "alice.test")
    assert directory.count("dns:alice.test") == 1  # NXDOMAIN first, then HTTP
    assert directory.count("http:alice.test") == 1


def test_http_redirect_is_followed(directory: IdentityDirectory, resolver: Resolver) -> None:
    directory.set_plc_document(ALICE, "alice.test")
    directory.set_http_redirect("alice.test", "https://host.test/alice/atproto-did")
    directory.set_http("host.test", ALICE)  # served whatever the path: the host answers
    assert resolver.resolve(ALICE) == mismatch(ALICE)  # only /.well-known/atproto-did is served
    directory.set_http_redirect("alice.test", "https://host.test/.well-known/atproto-did")
    assert resolver.resolve(ALICE, fresh=True) == verified(ALICE, "alice.test")
    directory.set_http_redirect("alice.test", "http://host.test/.well-known/atproto-did")
    assert resolver.resolve(ALICE, fresh=True) == mismatch(ALICE)  # no https → http downgrade


def test_handle_claimed_by_the_wrong_did(directory: IdentityDirectory, resolver: Resolver) -> None:
    directory.add_identity(ALICE, "alice.test")
    directory.set_plc_document(EVE, "alice.test")  # Eve's PDS says she is alice.test
    directory.set_plc_document(BOB, "bsky.app")  # a handle nobody here controls
    assert resolver.resolve(EVE) == mismatch(EVE)
    assert resolver.resolve(BOB) == mismatch(BOB)
    assert resolver.resolve(ALICE) == verified(ALICE, "alice.test")


def test_dns_wins_over_http(directory: IdentityDirectory, resolver: Resolver) -> None:
    directory.set_plc_document(ALICE, "both.test")
    directory.set_plc_document(BOB, "both.test")
    directory.set_dns("both.test", ALICE)
    directory.set_http("both.test", BOB)
    assert resolver.resolve(BOB) == mismatch(BOB)
    assert resolver.resolve(ALICE) == verified(ALICE, "both.test")


def test_mixed_case_handle_is_lowered(directory: IdentityDirectory, resolver: Resolver) -> None:
    directory.set_plc_document(ALICE, "Alice.EXAMPLE.Test")
    directory.set_dns("alice.example.test", ALICE)
    assert resolver.resolve(ALICE) == verified(ALICE, "alice.example.test")


def test_ambiguous_txt_records(directory: IdentityDirectory, resolver: Resolver) -> None:
    directory.set_plc_document(ALICE, "alice.test")
    directory.set_dns("alice.test", [ALICE, BOB])
    assert resolver.resolve(ALICE) == mismatch(ALICE)
    # Ambiguous DNS counts as no answer: the HTTP lookup decides.
    directory.set_http("alice.test", ALICE)
    assert resolver.resolve(ALICE, fresh=True) == verified(ALICE, "alice.test")
    # Other TXT records beside exactly one did= record are ignored.
    directory.set_http("alice.test", None)
    directory.set_txt("alice.test", ["v=spf1 -all", f"did={ALICE}", "hello"])
    assert resolver.resolve(ALICE, fresh=True) == verified(ALICE, "alice.test")


def test_well_known_body_rules(directory: IdentityDirectory, resolver: Resolver) -> None:
    directory.set_plc_document(ALICE, "alice.test")
    directory.set_http("alice.test", f"  {ALICE}  \nanything after the first line".encode())
    assert resolver.resolve(ALICE) == verified(ALICE, "alice.test")
    directory.set_http("alice.test", b"<html>not a did</html>")
    assert resolver.resolve(ALICE, fresh=True) == mismatch(ALICE)


# -- documents ---------------------------------------------------------------------------------


def test_document_not_found(directory: IdentityDirectory, resolver: Resolver) -> None:
    assert resolver.resolve(ALICE) == Resolution(ALICE, None, "not_found")
    directory.set_plc_status(BOB, 410)  # tombstoned
    assert resolver.resolve(BOB) == Resolution(BOB, None, "not_found")
    # Methods this indexer cannot resolve: no request at all.
    for did in ("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "not a did"):
        assert resolver.resolve(did) == Resolution(did, None, "not_found")
    assert directory.total_requests() == 2


def test_no_at_handle(directory: IdentityDirectory, resolver: Resolver) -> None:
    directory.set_plc_document(ALICE, {**did_document(ALICE, None), "alsoKnownAs": []})
    assert resolver.resolve(ALICE) == Resolution(ALICE, None, "no_handle")
    doc = did_document(BOB, None)
    del doc["alsoKnownAs"]
    directory.set_plc_document(BOB, doc)
    assert resolver.resolve(BOB) == Resolution(BOB, None, "no_handle")
    # The first at:// entry counts, whatever comes before it.
    doc = {**did_document(EVE, None), "alsoKnownAs": ["https://eve.test", "at://eve.test"]}
    directory.set_plc_document(EVE, doc)
    directory.set_dns("eve.test", EVE)
    assert resolver.resolve(EVE) == verified(EVE, "eve.test")


@pytest.mark.parametrize("handle", ["nodot", "bad_char.test", "-dash.test", "a..test", "x.123"])
def test_invalid_handle_syntax(
    directory: IdentityDirectory, resolver: Resolver, handle: str
) -> None:
    directory.set_plc_document(ALICE, handle)
    directory.set_dns(handle, ALICE)
    assert resolver.resolve(ALICE) == Resolution(ALICE, None, "no_handle")
    assert directory.count(f"dns:{handle}") == 0  # never looked up


def test_first_at_handle_invalid_is_no_handle(
    directory: IdentityDirectory, resolver: Resolver
) -> None:
    doc = {**did_document(ALICE, None), "alsoKnownAs": ["at://not valid", "at://alice.test"]}
    directory.set_plc_document(ALICE, doc)
    directory.set_dns("alice.test", ALICE)
    assert resolver.resolve(ALICE) == Resolution(ALICE, None, "no_handle")


def test_did_web(directory: IdentityDirectory, resolver: Resolver) -> None:
    did = directory.web_did()
    directory.set_plc_document(did, "web.test")  # served at localhost:<port>/.well-known/did.json
    directory.set_dns("web.test", did)
    assert resolver.resolve(did) == verified(did, "web.test")
    assert directory.count(f"web:localhost:{directory.http_port}") == 1
    # A document for another DID is no document of this one.
    directory.set_plc_document(did, did_document("did:web:elsewhere.test", "web.test"))
    assert resolver.resolve(did, fresh=True) == Resolution(did, None, "not_found")
    directory.set_plc_document(did, None)
    assert resolver.resolve(did, fresh=True) == Resolution(did, None, "not_found")
    # did:web with a path is not supported (as upstream): no request.
    before = directory.total_requests()
    path_did = f"{did}:users:alice"
    assert resolver.resolve(path_did) == Resolution(path_did, None, "not_found")
    assert directory.total_requests() == before


def test_did_web_without_http_address(directory: IdentityDirectory) -> None:
    """did:web:localhost%3A<port> is fetched directly over HTTP, as upstream does."""
    did = directory.web_did()
    directory.set_plc_document(did, "web.test")
    directory.set_dns("web.test", did)
    r = Resolver(plc_url=directory.plc_url, dns_servers=(directory.dns_server,), timeout=TIMEOUT)
    try:
        assert r.resolve(did) == verified(did, "web.test")
    finally:
        r.close()


# -- transient failures --------------------------------------------------------------------------


def test_plc_timeout(directory: IdentityDirectory, resolver: Resolver) -> None:
    directory.add_identity(ALICE, "alice.test")
    directory.set_delay(2.0, PLC)
    began = time.monotonic()
    with pytest.raises(ResolutionUnavailable, match="timed out"):
        resolver.resolve(ALICE)
    assert TIMEOUT * 0.9 <= time.monotonic() - began < TIMEOUT * 2
    directory.set_delay(0, PLC)
    assert resolver.resolve(ALICE) == verified(ALICE, "alice.test")  # nothing cached meanwhile


def test_plc_down_then_back(directory: IdentityDirectory, resolver: Resolver) -> None:
    directory.add_identity(ALICE, "alice.test")
    directory.set_down(True, PLC)
    for _ in range(3):
        with pytest.raises(ResolutionUnavailable, match="503"):
            resolver.resolve(ALICE)
    directory.set_down(False, PLC)
    assert resolver.resolve(ALICE) == verified(ALICE, "alice.test")


def test_plc_answering_garbage_is_unavailable(
    directory: IdentityDirectory, resolver: Resolver
) -> None:
    """A directory serving something else than the DID's document is broken, not the DID."""
    directory.set_dns("alice.test", ALICE)
    directory.set_plc_document(ALICE, did_document(BOB, "alice.test"))
    with pytest.raises(ResolutionUnavailable, match="not the DID document"):
        resolver.resolve(ALICE)
    directory.set_plc_document(ALICE, {**did_document(ALICE, None), "alsoKnownAs": "at://x.test"})
    with pytest.raises(ResolutionUnavailable, match="not the DID document"):
        resolver.resolve(ALICE)


def test_plc_refused() -> None:
    from .throwaway_servers import free_port

    r = Resolver(plc_url=f"http://127.0.0.1:{free_port()}", timeout=TIMEOUT)
    try:
        with pytest.raises(ResolutionUnavailable, match="refused"):
            r.resolve(ALICE)
    finally:
        r.close()


def test_did_web_host_down(directory: IdentityDirectory, resolver: Resolver) -> None:
    did = directory.web_did()
    directory.set_plc_document(did, "web.test")
    directory.set_down(True, PLC)  # the did.json endpoint is served like the PLC paths
    with pytest.raises(ResolutionUnavailable, match="503"):
        resolver.resolve(did)


def test_did_web_host_refusing_connections_is_not_found() -> None:
    """Unlike the PLC directory, a did:web host that refuses is an answer, not an outage."""
    from .throwaway_servers import free_port

    r = Resolver(plc_url="http://127.0.0.1:1", timeout=TIMEOUT)
    try:
        did = f"did:web:localhost%3A{free_port()}"
        assert r.resolve(did) == Resolution(did, None, NOT_FOUND)
    finally:
        r.close()


def test_handle_side_unavailable_while_a_lookup_fails_transiently(
    directory: IdentityDirectory, resolver: Resolver
) -> None:
    """Until a DID is found, a lookup that may pass (DNS SERVFAIL/timeout, HTTP 5xx/timeout)
    leaves the answer open: the handle may be behind it (most are served over HTTP only)."""
    directory.set_plc_document(ALICE, "alice.test")
    directory.set_http("alice.test", ALICE)
    # DNS SERVFAIL and HTTP 503: nothing can be told.
    directory.set_down(True, DNS, WELL_KNOWN)
    with pytest.raises(ResolutionUnavailable, match="handle alice.test") as raised:
        resolver.resolve(ALICE)
    assert raised.value.handle_side
    # DNS and HTTP both time out: the same, within about two timeouts.
    directory.set_down(False, DNS, WELL_KNOWN)
    directory.set_delay(2.0, DNS, WELL_KNOWN)
    began = time.monotonic()
    with pytest.raises(ResolutionUnavailable, match="timed out"):
        resolver.resolve(ALICE, fresh=True)
    assert time.monotonic() - began < TIMEOUT * 2 + 0.3
    directory.set_delay(0, DNS, WELL_KNOWN)
    # DNS SERVFAIL but HTTP answers: HTTP decides.
    directory.set_down(True, DNS)
    assert resolver.resolve(ALICE, fresh=True) == verified(ALICE, "alice.test")
    # DNS SERVFAIL and HTTP 404: DNS may hold the record.
    directory.set_http("alice.test", None)
    with pytest.raises(ResolutionUnavailable, match="DNS"):
        resolver.resolve(ALICE, fresh=True)
    # No TXT record (NXDOMAIN) and HTTP 503: the PDS may be down.
    directory.set_down(False, DNS)
    directory.set_down(True, WELL_KNOWN)
    with pytest.raises(ResolutionUnavailable, match="HTTP answered 503"):
        resolver.resolve(ALICE, fresh=True)
    # NXDOMAIN and HTTP 404: definitive.
    directory.set_down(False, WELL_KNOWN)
    assert resolver.resolve(ALICE, fresh=True) == mismatch(ALICE)


def test_handle_host_refusing_connections_is_definitive(directory: IdentityDirectory) -> None:
    from .throwaway_servers import free_port

    directory.set_plc_document(ALICE, "alice.test")
    r = make_resolver(directory, http_address=f"127.0.0.1:{free_port()}")
    try:
        assert r.resolve(ALICE) == mismatch(ALICE)
    finally:
        r.close()


# -- caches ----------------------------------------------------------------------------------


def test_cache_and_fresh(directory: IdentityDirectory, resolver: Resolver) -> None:
    directory.add_identity(ALICE, "alice.test")
    assert resolver.resolve(ALICE) == verified(ALICE, "alice.test")
    assert directory.total_requests() == 2  # the document and the TXT record
    for _ in range(5):
        assert resolver.resolve(ALICE) == verified(ALICE, "alice.test")
    assert directory.total_requests() == 2
    assert resolver.resolve(ALICE, fresh=True) == verified(ALICE, "alice.test")
    assert directory.total_requests() == 4
    # Negative answers are cached too; unavailability is not.
    assert resolver.resolve(BOB).outcome == "not_found"
    assert resolver.resolve(BOB).outcome == "not_found"
    assert directory.count(f"plc:{BOB}") == 1
    directory.set_down(True, PLC)
    with pytest.raises(ResolutionUnavailable):
        resolver.resolve(EVE)
    directory.set_down(False, PLC)
    directory.add_identity(EVE, "eve.test")
    assert resolver.resolve(EVE) == verified(EVE, "eve.test")


def test_handle_cache_is_shared_between_dids(
    directory: IdentityDirectory, resolver: Resolver
) -> None:
    directory.add_identity(ALICE, "alice.test")
    directory.set_plc_document(EVE, "alice.test")
    assert resolver.resolve(ALICE) == verified(ALICE, "alice.test")
    assert resolver.resolve(EVE) == mismatch(EVE)
    assert directory.count("dns:alice.test") == 1


def test_cache_ttl(directory: IdentityDirectory) -> None:
    directory.add_identity(ALICE, "alice.test")
    r = make_resolver(directory, cache_ttl=0.2)
    try:
        r.resolve(ALICE)
        r.resolve(ALICE)
        assert directory.total_requests() == 2
        time.sleep(0.3)
        r.resolve(ALICE)
        assert directory.total_requests() == 4
    finally:
        r.close()


def test_cache_size(directory: IdentityDirectory) -> None:
    dids = [f"did:plc:user{i}" for i in range(4)]
    for i, did in enumerate(dids):
        directory.add_identity(did, f"user{i}.test")
    r = make_resolver(directory, cache_size=2)
    try:
        for did in dids:
            r.resolve(did)
        before = directory.total_requests()
        r.resolve(dids[-1])  # recent: cached
        assert directory.total_requests() == before
        r.resolve(dids[0])  # evicted
        assert directory.total_requests() == before + 2
    finally:
        r.close()
    r = make_resolver(directory, cache_size=0)  # no caching at all
    try:
        r.resolve(dids[0])
        before = directory.total_requests()
        r.resolve(dids[0])
        assert directory.total_requests() == before + 2
    finally:
        r.close()


def test_handle_moves_to_another_did(directory: IdentityDirectory, resolver: Resolver) -> None:
    directory.add_identity(ALICE, "moving.test")
    assert resolver.resolve(ALICE) == verified(ALICE, "moving.test")
    # moving.test now points at Bob, whose document claims it; Alice's still does.
    directory.add_identity(BOB, "moving.test")
    assert resolver.resolve(ALICE) == verified(ALICE, "moving.test")  # cached, as upstream
    assert resolver.resolve(BOB, fresh=True) == verified(BOB, "moving.test")
    assert resolver.resolve(ALICE, fresh=True) == mismatch(ALICE)
    # Once Bob's fresh resolve refilled the handle cache, a cached check of Alice agrees.
    assert resolver.resolve(ALICE) == mismatch(ALICE)


# -- connections, threads, secrets, metrics ----------------------------------------------------


def test_connections_are_kept_alive(directory: IdentityDirectory, resolver: Resolver) -> None:
    directory.add_identity(ALICE, "alice.test", via=WELL_KNOWN)
    for _ in range(20):
        assert resolver.resolve(ALICE, fresh=True) == verified(ALICE, "alice.test")
    assert directory.count(f"plc:{ALICE}") == 20
    assert directory.connections == 2  # one to the PLC directory, one to the well-known host
    # Connections the server closed while idle are replaced without an error.
    directory.close_connections()
    assert resolver.resolve(ALICE, fresh=True) == verified(ALICE, "alice.test")
    assert directory.connections == 4


def test_concurrent_resolves(directory: IdentityDirectory, resolver: Resolver) -> None:
    dids = [f"did:plc:user{i}" for i in range(40)]
    for i, did in enumerate(dids):
        directory.add_identity(did, f"user{i}.test", via=DNS if i % 2 else WELL_KNOWN)
        if i % 5 == 0:
            directory.set_plc_document(did, f"user{i + 1}.test")  # claims another's handle
    expected = {
        did: mismatch(did) if i % 5 == 0 else verified(did, f"user{i}.test")
        for i, did in enumerate(dids)
    }
    results: list[Resolution] = []
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for k in range(len(dids)):
                did = dids[(k + offset) % len(dids)]
                results.append(resolver.resolve(did, fresh=k % 3 == 0))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n * 5,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 8 * len(dids)
    assert all(res == expected[res.did] for res in results)
    assert directory.connections <= 16  # at most one per thread and server


def test_plc_url_credentials(directory: IdentityDirectory, resolver: Resolver) -> None:
    """Credentials in PLC_URL are sent (basic auth) and never appear in an error."""
    directory.add_identity(ALICE, "alice.test")
    directory.require_plc_credentials("indexer", "s3cret")
    with pytest.raises(ResolutionUnavailable, match="401"):
        resolver.resolve(ALICE)
    url = f"http://indexer:s3cret@127.0.0.1:{directory.http_port}"
    r = make_resolver(directory, plc_url=url)
    try:
        assert r.resolve(ALICE) == verified(ALICE, "alice.test")
        directory.set_down(True, PLC)
        with pytest.raises(ResolutionUnavailable) as caught:
            r.resolve(ALICE, fresh=True)
        assert "s3cret" not in str(caught.value)
        assert "indexer" not in str(caught.value)
    finally:
        r.close()


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics(directory: IdentityDirectory, resolver: Resolver) -> None:
    directory.add_identity(ALICE, "alice.test")
    before = {
        "verified": _sample("indexer_handle_resolutions_total", outcome="verified"),
        "unavailable": _sample("indexer_handle_resolutions_total", outcome="unavailable"),
        "timed": _sample("indexer_handle_resolution_seconds_count"),
        "did_hit": _sample("indexer_handle_resolution_cache_total", cache="did", result="hit"),
        "did_miss": _sample("indexer_handle_resolution_cache_total", cache="did", result="miss"),
        "handle_miss": _sample(
            "indexer_handle_resolution_cache_total", cache="handle", result="miss"
        ),
    }
    resolver.resolve(ALICE)  # network: misses on both caches
    resolver.resolve(ALICE)  # cached: a hit, not timed
    directory.set_down(True, PLC)
    with pytest.raises(ResolutionUnavailable):
        resolver.resolve(ALICE, fresh=True)  # fresh: no cache lookup; timed
    assert _sample("indexer_handle_resolutions_total", outcome="verified") == before["verified"] + 2
    assert (
        _sample("indexer_handle_resolutions_total", outcome="unavailable")
        == before["unavailable"] + 1
    )
    assert _sample("indexer_handle_resolution_seconds_count") == before["timed"] + 2
    assert (
        _sample("indexer_handle_resolution_cache_total", cache="did", result="hit")
        == before["did_hit"] + 1
    )
    assert (
        _sample("indexer_handle_resolution_cache_total", cache="did", result="miss")
        == before["did_miss"] + 1
    )
    assert (
        _sample("indexer_handle_resolution_cache_total", cache="handle", result="miss")
        == before["handle_miss"] + 1
    )
