"""Notifications: webhook deliveries of task events through a durable outbox.

- ``signing``: the ``X-Nessus-Pool-Signature`` header (HMAC-SHA256 over ``t.body``)
- ``payload``: the versioned JSON payload, the events a final task raises, Slack text
- ``ssrf``: which webhook URLs and resolved addresses may be called
- ``outbox``: the rows written in the same commit as a task's final transition
- ``worker``: the supervised delivery loop (retries with backoff, then ``failed``)

This ``__init__`` imports nothing: ``config`` uses ``ssrf`` (pure) without pulling in the
worker and the store.
"""
