"""`--resolution`: the run with DID resolution on, against local identity servers.

The bench cannot reach the PLC directory or the handles' hosts, so it starts the servers the tests
use (tests/identity_servers.py: an HTTP server playing PLC and the well-known endpoints, a DNS
server answering TXT records) in its own process, and registers every DID of the events with a
handle that maps back to it, half by DNS and half by HTTP, as on the network (most handles are
served over HTTP only, a custom domain answers DNS). Identity events in the mix keep their own
handles: the directory names the handle of the DID's last identity event, as a PDS would.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.identity_servers import DNS, WELL_KNOWN, IdentityDirectory

from .events import lines

# What the resolving run adds to the indexer's environment, beside the servers' addresses.
RESOLVING = {"ENABLE_DID_RESOLUTION": "true"}


def handles_of(events_file: Path) -> dict[str, str]:
    """DID → the handle its document names: its last identity event's, else one made up."""
    handles: dict[str, str] = {}
    for line in lines(events_file):
        ev = orjson.loads(line)
        did = ev.get("did")
        if not isinstance(did, str):
            continue
        if ev.get("type") == "identity" and isinstance(ev.get("handle"), str):
            handles[did] = ev["handle"].lower()
        else:
            handles.setdefault(did, f"{did.rsplit(':', 1)[-1][:40]}.bench.test")
    return handles


def start_directory(events_file: Path, latency: float) -> IdentityDirectory:
    """Answers after ``latency`` seconds, as servers across the internet do: answering at once,
    the servers (in the bench's process) and the resolver would spend this 2-core machine's CPU
    at a rate no real directory allows, and measure that instead of the indexer."""
    directory = IdentityDirectory().start()
    directory.set_delay(latency)
    for n, (did, handle) in enumerate(sorted(handles_of(events_file).items())):
        directory.add_identity(did, handle, via=DNS if n % 2 else WELL_KNOWN)
    return directory


def resolution_env(directory: IdentityDirectory) -> dict[str, str]:
    return RESOLVING | {
        "PLC_URL": directory.plc_url,
        "DID_RESOLUTION_DNS_SERVERS": directory.dns_server,
        "DID_RESOLUTION_HTTP_ADDRESS": directory.http_address,
    }
