"""The MCP server: JSON-RPC 2.0 on msgspec (no MCP SDK at run time), tools that call the
service, and two transports: stdio (``nessus-pool mcp``) and Streamable HTTP at ``/mcp``."""

from __future__ import annotations

from aiohttp import web

from nessus_pool.api.guard import TokenAuth
from nessus_pool.api.mcp.protocol import Dispatcher
from nessus_pool.api.mcp.tools import Toolbox
from nessus_pool.config import Config
from nessus_pool.service import Service

__all__ = ["build_dispatcher", "mount_mcp"]


def build_dispatcher(service: Service) -> Dispatcher:
    """Tool definitions, resource templates and static replies are built here, once."""
    from nessus_pool.api.mcp.features import Features
    from nessus_pool.api.mcp.handlers import TOOLS
    from nessus_pool.api.mcp.prompts import Prompts
    from nessus_pool.api.mcp.resources import ScanResources
    from nessus_pool.api.mcp.tasks import TaskModel

    toolbox = Toolbox(service, TOOLS)
    resources = ScanResources(service)
    features = Features(service, TaskModel(service, toolbox), Prompts(service, resources))
    return Dispatcher(toolbox, resources, features)


def mount_mcp(
    app: web.Application,
    service: Service,
    config: Config,
    auth: TokenAuth,
    max_connections: int | None = None,
) -> None:
    """Add ``POST/GET/DELETE /mcp`` to the daemon's app; ``max_connections`` is the
    listener's cap, which its streams and waits take a share of."""
    from nessus_pool.api.mcp.http import McpHttp

    McpHttp(build_dispatcher(service), config, auth, max_connections=max_connections).add_routes(
        app
    )
