"""DID and handle resolution (issue 8): which handle a DID really controls, checked both ways.

Off the hot path: the batch transaction only queues a check (sinks/postgres/handle_checks.py);
a background worker resolves and records the outcome.
"""
