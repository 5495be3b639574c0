"""Keys a batch cut (segments.py) compares besides record URIs."""

from __future__ import annotations


def written_by(collection: str, did: str | None = None) -> str:
    """Stands for every write to ``collection`` by ``did`` (by anyone when None). Every record
    event writes both keys of its collection; a record whose rows depend on rows it cannot name
    by URI (a reply checks follows and list items) lists the key in ``reads()``."""
    return f"{collection} {did or '*'}"
