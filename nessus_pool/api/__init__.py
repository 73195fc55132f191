"""Front ends: admin HTTP API and MCP. They call :mod:`nessus_pool.service` only."""
