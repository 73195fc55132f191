"""``compare_scans``: what changed between two scans, sized for a model's context.

The service's comparison lists up to 100 items per section at every severity; here each
section is cut to the findings at or above a severity floor (default ``low``: informational
items are left out and counted, as in ``get_scan_results``) and paged ``limit`` at a time.
Counts (``new_total`` ...) are at or above the floor; ``unchanged_total`` counts every severity.
"""

from __future__ import annotations

import sys
from typing import Any

from nessus_pool.api.mcp import schemas as s
from nessus_pool.results.query import PROFILES, severity_value
from nessus_pool.results.types import SEVERITY_NAMES
from nessus_pool.service import Service

#: each item's fields: enough to name the finding; get_scan_results gives the rest
ITEM_FIELDS = PROFILES["minimal"]
SECTIONS = ("new", "fixed", "not_rescanned", "changed_severity")


def _severity(item: dict[str, Any]) -> int:
    if "severity" in item:
        return int(item["severity"])
    return max(int(item["old_severity"]), int(item["new_severity"]))


async def compare_result(svc: Service, a: s.CompareArgs) -> dict[str, Any]:
    """The comparison (our typed errors for an unknown or unfinished scan, a bad floor)."""
    floor = severity_value(a.min_severity, "min_severity")
    # the service's comparison (it finds the default base and knows which hosts each scan
    # scanned), every item, then floored and paged here
    res = await svc.compare(a.task_id, a.base_task_id, limit=sys.maxsize, fields=ITEM_FIELDS)
    base_id, full = res["base_task_id"], res["diff"]
    start = (a.page - 1) * a.limit
    diff: dict[str, Any] = {}
    excluded: dict[str, int] = {}
    has_next = False
    for name in SECTIONS:
        kept = [i for i in full[name] if _severity(i) >= floor]
        excluded[name] = len(full[name]) - len(kept)
        diff[f"{name}_total"] = len(kept)
        diff[name] = kept[start : start + a.limit]
        has_next = has_next or len(kept) > start + a.limit
    diff["unchanged_total"] = full["unchanged_total"]
    for name in ("hosts_not_rescanned", "hosts_new"):  # how the two host sets differ
        diff[name] = full[name][: a.limit]
    diff["truncated"] = has_next
    diff.update(min_severity=SEVERITY_NAMES.get(floor, "info"), page=a.page, limit=a.limit)
    diff["next_page"] = a.page + 1 if has_next else None
    notes = [f"{a.limit} items per section, worst first"]
    if has_next:
        notes.append(f"page={a.page + 1} for more")
    if floor > 0:
        diff["informational_excluded"] = excluded
        notes.append(
            f"findings below {SEVERITY_NAMES.get(floor)} left out (counted in "
            "informational_excluded); min_severity=info includes them"
        )
    diff["note"] = "; ".join(notes)
    return {"task_id": a.task_id, "base_task_id": base_id, "diff": diff}
