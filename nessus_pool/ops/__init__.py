"""Operator commands that talk to a running daemon's admin API: ``scan``, ``tasks``, ``pools``,
``scanners``, ``dlq`` and ``reload``.

Synchronous on purpose: one request at a time with stdlib ``urllib``, so the commands start
fast and need no event loop. Exit codes follow ``cli``: 0 ok; 1 the operation failed (HTTP
error, daemon unreachable, a waited-for scan did not complete); 2 usage or validation error
(HTTP 400/422, printed with the offending field).

- ``client``: the HTTP client, its errors, the daemon URL and token;
- ``output``: what the commands print (tables and JSON from :mod:`nessus_pool.render`);
- ``scan``: ``scan`` and ``tasks``; ``fleet``: ``pools``, ``scanners``, ``reload``;
  ``deadletters``: ``dlq``;
- ``parser``: the argument tree (``add_ops_parsers``, called by ``cli``).
"""
