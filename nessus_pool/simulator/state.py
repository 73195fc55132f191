"""The simulator's data: Nessus constants, the error every operation raises, and the scans,
runs and export files of one simulated scanner. Status and progress are computed lazily from the
clock at request time (a replay of the control actions), so no background task drives them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from nessus_pool.simulator.export import Finding, host_findings

#: real Nessus template names, titles and 52-character uuids
TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("basic", "Basic Network Scan", "731a8e52-3ea6-a291-ec0a-d2ff0619c19d7bd788d6be818b65"),
    ("advanced", "Advanced Scan", "ad629e16-03b6-8c1d-cef6-ef8c9dd3c658d24bd260ef5f9e66"),
    ("discovery", "Host Discovery", "bbd4f805-3966-d464-b2d1-0079eb89d69708c3a05ec2812bcf"),
    ("webapp", "Web Application Tests", "c3cbcd46-329f-a9ed-1077-554f8c2af33d0d44f09d736969bf"),
    (
        "compliance",
        "Policy Compliance Auditing",
        "40345bfc-48be-37bc-9bce-526bdce37582e8fee83bcefdc746",
    ),
    ("malware", "Malware Scan", "d16c51fa-597f-67a8-9add-74d5ab066b49a918400c42a035f7"),
)
TRASH_FOLDER_ID = 2
MY_SCANS_FOLDER_ID = 3

NOT_FOUND = "The requested file was not found."


class SimHTTPError(Exception):
    """Answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


#: statuses during which a run occupies the scanner
ACTIVE = frozenset(
    {"pending", "running", "processing", "pausing", "paused", "resuming", "stopping"}
)


@dataclass
class Run:
    """One launch of a scan (one history entry)."""

    history_id: int
    uuid: str
    launched_mono_s: float
    launched_ms: int
    scan_s: float
    abort: bool
    #: (monotonic time, action) for pause / resume / stop / kill, in order
    actions: list[tuple[float, str]] = field(default_factory=list)
    findings: dict[str, list[Finding]] = field(default_factory=dict)

    @property
    def edge_s(self) -> float:
        """Length of the pending, processing and pausing/resuming/stopping phases."""
        return min(0.5, 0.05 * self.scan_s)

    @property
    def finish_s(self) -> float:
        """Running time at which the run ends by itself."""
        return self.scan_s * 0.5 if self.abort else self.scan_s

    def replay(self, now_s: float) -> tuple[str, float, float | None]:
        """(status, running seconds so far, monotonic end time or None) at ``now_s``."""
        elapsed = 0.0
        since: float | None = self.launched_mono_s  # running since, None while not running
        last_action, last_at = "launch", self.launched_mono_s
        for at, action in self.actions:
            if since is not None and action in ("pause", "stop", "kill"):
                elapsed += at - since
                since = None
            elif action == "resume":
                since = at
            last_action, last_at = action, at
        edge = self.edge_s
        if last_action == "kill":
            return "aborted", elapsed, last_at
        if last_action == "stop":
            if now_s - last_at < edge:
                return "stopping", elapsed, None
            return "canceled", elapsed, last_at + edge
        if since is None:  # paused
            return ("pausing" if now_s - last_at < edge else "paused"), elapsed, None
        total = elapsed + (now_s - since)
        if total >= self.finish_s:
            end = since + (self.finish_s - elapsed)
            return ("aborted" if self.abort else "completed"), self.finish_s, end
        if last_action == "resume" and now_s - last_at < edge:
            return "resuming", total, None
        if total < edge:
            return "pending", total, None
        if total >= self.scan_s - edge:
            return "processing", total, None
        return "running", total, None

    def status(self, now_s: float) -> str:
        return self.replay(now_s)[0]

    def wall_ms(self, mono_s: float) -> int:
        return self.launched_ms + int((mono_s - self.launched_mono_s) * 1000)


@dataclass
class Scan:
    id: int
    name: str
    template_uuid: str
    policy: str
    text_targets: str
    hosts: list[str]
    description: str
    folder_id: int
    owner: str
    created_ms: int
    uuid: str = field(default_factory=lambda: f"template-{uuid.uuid4()}{uuid.uuid4().hex[:12]}")
    enabled: bool = False
    ssh_username: str | None = None
    #: None when no SSH credentials were given, else whether the targets accept them
    credentialed: bool | None = None
    runs: list[Run] = field(default_factory=list)
    #: status reported for a foreign scan that was never run here
    fixed_status: str | None = None
    modified_ms: int = 0
    #: made from a compliance-audit template or policy: its export carries compliance items
    compliance: bool = False

    def run(self, history_id: int | None = None) -> Run | None:
        if history_id is None:
            return self.runs[-1] if self.runs else None
        return next((r for r in self.runs if r.history_id == history_id), None)

    def status(self, now_s: float, history_id: int | None = None) -> str:
        run = self.run(history_id)
        if run is None:
            return self.fixed_status or "empty"
        return run.status(now_s)

    def last_modified_ms(self, now_s: float) -> int:
        run = self.run()
        if run is None:
            return self.modified_ms
        end = run.replay(now_s)[2]
        last = max([at for at, _ in run.actions] + [run.launched_mono_s])
        if end is not None:
            last = max(last, end)
        return max(self.modified_ms, run.wall_ms(last))

    def findings(self, run: Run, host: str, seed: int) -> list[Finding]:
        """The findings of ``host`` in ``run`` (for counts in ``GET /scans/{id}``), cached."""
        cached = run.findings.get(host)
        if cached is None:
            cached = host_findings(
                host,
                seed=seed,
                credentialed=self.credentialed,
                ssh_username=self.ssh_username,
                scan_name=self.name,
            )
            run.findings[host] = cached
        return cached


@dataclass
class ExportFile:
    file_id: int
    token: str
    scan_id: int
    history_id: int | None
    created_mono_s: float
    error: bool
    polls: int = 0
    data: bytes | None = None
    format: str = "nessus"


def peak_overlap(intervals: list[tuple[float, float | None]]) -> int:
    """The largest number of ``[start, end)`` intervals (end None = still open) that overlap."""
    events: list[tuple[float, int]] = []
    for start, end in intervals:
        events.append((start, 1))
        if end is not None:
            events.append((end, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # ends before starts at the same instant
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak
