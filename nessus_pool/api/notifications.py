"""Admin routes of notifications: the failed deliveries, and retrying one."""

from __future__ import annotations

from aiohttp import web

from nessus_pool.api.admin import AUTH, json_response
from nessus_pool.api.query import LIST_NOTIFICATIONS, NO_QUERY, parse_query
from nessus_pool.service.notifications import Notifications

NOTIFICATIONS: web.AppKey[Notifications] = web.AppKey("notifications", Notifications)


async def failed_deliveries(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "read")
    q = parse_query(request, LIST_NOTIFICATIONS)
    return json_response(await request.app[NOTIFICATIONS].failed(**q))


async def retry_delivery(request: web.Request) -> web.Response:
    request.app[AUTH].require(request, "admin")
    parse_query(request, NO_QUERY)
    return json_response(await request.app[NOTIFICATIONS].retry(request.match_info["delivery_id"]))


def add_notification_routes(app: web.Application, notifications: Notifications) -> None:
    app[NOTIFICATIONS] = notifications
    app.router.add_get("/api/v1/notifications/failed", failed_deliveries)
    app.router.add_post("/api/v1/notifications/{delivery_id}/retry", retry_delivery)
