"""Cut a batch into segments that set-based SQL can apply as if event by event.

Inside a segment every statement runs once for all its events, so the segment must not contain
two events whose outcome depends on their order: the same record twice, an event that reads a
record another one writes (a reply and its parent, a gate and its post, a reply and the removal
of a follow its threadgate asks about: collections/_keys.py), two records of one creator with
the same duplicate key, or a delete beside a create in a collection with duplicates for the same
creator (the delete may promote a duplicate the create would collide with). A post's thread
walks are not cut for: they see the post table as it stood at the post (collections/_sql.py
posts_seen_at); nor is a record that reads one created or updated before it in the segment (a
module's ``follows``: post.py inserts a reply in a later wave than its parent, and a gate's step
runs after the post step); nor is a create of a record that an earlier event only ``watches``
(only its delete or update would change that event's rows). Each cut runs the segment's
statements again (about 10 ms), not a wrong row; a live batch of unrelated events is one
segment.

Account and identity events ride along: the writer applies a segment's actor events first, in
order (actors.py). Only an account deletion must not come after record operations of the same
segment (it would erase what they wrote, or they would notify an actor already gone), so it
starts a new segment unless the current one holds actor events only; deletions are rare.
"""

from __future__ import annotations

from collections.abc import Iterable

from flows.events import CREATE, DELETE, UPDATE, Event

from .actors import EVENT_TYPES as ACTOR_EVENTS
from .actors import deletes_actor
from .collections import BY_NSID
from .collections._keys import removed_by


class _Segment:
    __slots__ = ("events", "writes", "reads", "watched", "keys", "creating", "deleting", "inserted")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.writes: set[str] = set()
        self.reads: set[str] = set()
        # URIs whose delete or update (not create) later here would change an event's rows.
        self.watched: set[str] = set()
        self.keys: set[tuple] = set()
        self.creating: set[tuple[str, str]] = set()
        self.deleting: set[tuple[str, str]] = set()
        self.inserted: set[str] = set()  # URIs created or updated here

    def add(self, ev: Event) -> bool:
        """Add the event if it is independent of those already here; False if it is not."""
        if ev.type in ACTOR_EVENTS:
            if deletes_actor(ev) and self.writes:
                return False
            self.events.append(ev)
            return True
        module = BY_NSID[ev.collection or ""]
        uri = ev.uri or ""
        owner = (ev.collection or "", ev.did)
        inserts = ev.type in (CREATE, UPDATE)
        removes = ev.type in (DELETE, UPDATE)
        reads = module.reads(ev) if inserts else ()
        # Reads that may follow their record's create or update here (post.py inserts in waves).
        follows = getattr(module, "follows", None)
        after = follows(ev) if inserts and follows else ()
        # URIs whose later delete or update (in this segment) would change this event's rows.
        watches = getattr(module, "watches", None)
        watched = watches(ev) if inserts and watches else ()
        key = None
        if inserts and ev.record is not None:
            dk = module.dedup_key(ev.record)
            key = (ev.collection, ev.did, dk) if dk is not None else None
        # Besides its URI, a delete or update writes its collection's keys (collections/_keys.py).
        written: tuple[str, ...] = (uri,)
        if removes:
            written += (removed_by(ev.collection or "", ev.did), removed_by(ev.collection or ""))
        if uri in self.writes or any(w in self.reads for w in written):
            return False
        if removes and uri in self.watched:
            return False
        if any(r in self.writes and (r not in after or r not in self.inserted) for r in reads):
            return False
        if key is not None and key in self.keys:
            return False
        # A delete may free (or promote into) a key a create of the same creator collides with.
        keyed = module.PROMOTES or getattr(module, "DUPLICATES", False)
        if keyed and ((inserts and owner in self.deleting) or (removes and owner in self.creating)):
            return False
        self.events.append(ev)
        self.writes.update(written)
        self.reads.update(reads)
        self.watched.update(watched)
        if key is not None:
            self.keys.add(key)
        if inserts:
            self.creating.add(owner)
            self.inserted.add(uri)
        if removes:
            self.deleting.add(owner)
        return True


def split(events: Iterable[Event]) -> list[list[Event]]:
    """Consecutive runs of the events (order kept) in which no two depend on each other."""
    out: list[list[Event]] = []
    seg = _Segment()
    for ev in events:
        if not seg.add(ev):
            out.append(seg.events)
            seg = _Segment()
            seg.add(ev)
    if seg.events:
        out.append(seg.events)
    return out
