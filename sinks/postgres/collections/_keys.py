"""Keys a batch cut (segments.py) compares besides record URIs."""

from __future__ import annotations


def removed_by(collection: str, did: str | None = None) -> str:
    """Stands for every delete or update of a ``collection`` record by ``did`` (by anyone when
    None); segments.py lets such events write both keys. A record whose rows depend on rows it
    cannot name by URI (a reply's threadgate check reads follows and list items) lists the key in
    ``reads()``: a create need not cut, the reading SQL sees earlier creates in ``_ev``, but a
    removed row is gone (or promoted) before any insert step runs."""
    return f"{collection} removed by {did or '*'}"
