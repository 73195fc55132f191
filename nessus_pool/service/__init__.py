"""The one application API. The admin HTTP API and the MCP server both call these functions,
so a feature is written once and shows up in both. No HTTP or JSON-RPC here.

``Service`` (facade.py) composes the parts: submit.py (request Structs, checks, idempotency),
scoping.py (pool choice, scope recheck at launch), reads.py (get, list, wait, results,
export, compare), views.py (TaskView, ScannerView, PoolView and their builders) and
deadletters.py."""

from nessus_pool.service.deadletters import MAX_PURGE_AGE_S
from nessus_pool.service.facade import TERMINAL_STATUSES, ReloadOutcome, Service
from nessus_pool.service.ids import TASK_ID_PATTERN, check_task_id, new_task_id
from nessus_pool.service.reads import FINISHED_CACHE, MAX_PAGE_SIZE
from nessus_pool.service.submit import SubmitRequest, SubmitResult
from nessus_pool.service.views import (
    PoolView,
    ScannerView,
    TaskPage,
    TaskView,
    scanner_state,
)

__all__ = [
    "FINISHED_CACHE",
    "MAX_PAGE_SIZE",
    "MAX_PURGE_AGE_S",
    "TASK_ID_PATTERN",
    "TERMINAL_STATUSES",
    "PoolView",
    "ReloadOutcome",
    "ScannerView",
    "Service",
    "SubmitRequest",
    "SubmitResult",
    "TaskPage",
    "TaskView",
    "check_task_id",
    "new_task_id",
    "scanner_state",
]
