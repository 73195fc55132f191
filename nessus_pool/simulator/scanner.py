"""One simulated Nessus scanner's state and the Nessus operations on it, synchronous and
clocked; no HTTP here (``app`` serves these operations, ``server`` listens for it)."""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
import uuid
from typing import Any

from nessus_pool.clock import Clock
from nessus_pool.simulator.options import Faults, ScanSummary, SimulatorOptions, SimulatorStats
from nessus_pool.simulator.policies import CUSTOM_POLICY_UUID, PolicyBook
from nessus_pool.simulator.state import (
    ACTIVE,
    MY_SCANS_FOLDER_ID,
    NOT_FOUND,
    TEMPLATES,
    TRASH_FOLDER_ID,
    ExportFile,
    Run,
    Scan,
    SimHTTPError,
    peak_overlap,
)
from nessus_pool.simulator.targets import TargetError, expand_targets

#: formats the simulator renders (pdf and db need Nessus's own report engine)
EXPORT_FORMATS = ("nessus", "csv", "html")


class ScannerState:
    """State of one scanner and the Nessus operations on it. Operations are synchronous, read
    the clock, and raise :class:`SimHTTPError` for what Nessus refuses."""

    def __init__(
        self, name: str, *, options: SimulatorOptions, clock: Clock, index: int = 0
    ) -> None:
        self.name = name
        self.options = options
        self.clock = clock
        seed = options.seed
        self.seed = seed if seed is not None else random.randrange(2**31)
        self.rng = random.Random(f"faults:{self.seed}:{index}")
        self.faults = Faults()
        self.sessions: dict[str, str] = {}
        self.scans: dict[int, Scan] = {}
        self.exports: dict[int, ExportFile] = {}
        self.created = 0
        self.launched = 0
        self.name_counts: dict[str, int] = {}
        self._ids = itertools.count(5)
        self._file_ids = itertools.count(1_000_000_000 + index * 7919)
        self._past_runs: list[tuple[float, float | None]] = []
        self.policies = PolicyBook(itertools.count(100), clock.now_ms())
        #: user folders (id -> name), beside the built-in Trash and My Scans
        self.custom_folders: dict[int, str] = {}
        self._folder_ids = itertools.count(10)
        #: requests hung by ``hang_rate`` wait on this; whoever drops the connections sets it
        self.release: asyncio.Event | None = None

    def set_faults(self, faults: Faults) -> None:
        """Replace the active faults. ``expire_sessions`` acts once, now."""
        self.faults = faults
        if faults.expire_sessions:
            self.sessions.clear()

    def chance(self, rate: float) -> bool:
        return rate > 0 and (rate >= 1 or self.rng.random() < rate)

    # --- auth --------------------------------------------------------------------------

    def login(self, username: Any, password: Any) -> str:
        if username != self.options.username or password != self.options.password:
            raise SimHTTPError(401, "Invalid Credentials")
        token = secrets.token_hex(24)
        self.sessions[token] = username
        return token

    def check_api_keys(self, access: str | None, secret: str | None) -> bool:
        return access == self.options.access_key and secret == self.options.secret_key

    # --- scans -------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock.monotonic_s()

    def scan(self, scan_id: int) -> Scan:
        scan = self.scans.get(scan_id)
        if scan is None:
            raise SimHTTPError(404, NOT_FOUND)
        return scan

    def require_scan_api(self) -> None:
        if not self.options.scan_api:
            raise SimHTTPError(412, "API is not available")

    def create_scan(self, body: Any) -> Scan:
        self.require_scan_api()
        if not isinstance(body, dict):
            raise SimHTTPError(400, "Invalid JSON body")
        settings = body.get("settings")
        if not isinstance(settings, dict):
            raise SimHTTPError(400, "Invalid 'settings' field: missing")
        template_uuid, policy_name, compliance = self._template(body.get("uuid"), settings)
        name = settings.get("name")
        targets = settings.get("text_targets")
        if not isinstance(name, str) or not name.strip():
            raise SimHTTPError(400, "Invalid 'name' field: must not be empty")
        if not isinstance(targets, str) or not targets.strip():
            raise SimHTTPError(400, "Invalid 'text_targets' field: no targets")
        try:
            hosts = expand_targets(targets, limit=self.options.max_hosts_per_scan)
        except TargetError as exc:
            raise SimHTTPError(400, f"Invalid 'text_targets' field: {exc}") from exc
        folder_id = settings.get("folder_id", MY_SCANS_FOLDER_ID)
        if not self.folder_exists(folder_id):
            raise SimHTTPError(400, "Invalid 'folder_id' field: folder not found")
        user, password = _ssh_credential(body.get("credentials"))
        scan = Scan(
            id=next(self._ids),
            name=name,
            template_uuid=template_uuid,
            policy=policy_name,
            text_targets=targets,
            hosts=hosts,
            description=str(settings.get("description") or ""),
            folder_id=folder_id,
            owner=self.options.username,
            created_ms=self.clock.now_ms(),
            enabled=bool(settings.get("enabled", False)),
            ssh_username=user,
            compliance=compliance,
        )
        scan.modified_ms = scan.created_ms
        if user is not None:
            scan.credentialed = (
                user == self.options.ssh_username and password == self.options.ssh_password
            )
        self.scans[scan.id] = scan
        self.created += 1
        self.name_counts[name] = self.name_counts.get(name, 0) + 1
        if settings.get("launch_now") is True:
            self.launch(scan.id)
        return scan

    def _template(self, uuid_: Any, settings: dict[str, Any]) -> tuple[str, str, bool]:
        """(template uuid, policy name, compliance?) of a scan being created: a built-in
        template, or a saved policy (the custom uuid with ``settings.policy_id``)."""
        if uuid_ == CUSTOM_POLICY_UUID:
            policy_id = settings.get("policy_id")
            if not isinstance(policy_id, int) or isinstance(policy_id, bool):
                raise SimHTTPError(400, "Invalid 'policy_id' field: required with this uuid")
            policy = self.policies.policies.get(policy_id)
            if policy is None:
                raise SimHTTPError(400, "Invalid 'policy_id' field: policy not found")
            return uuid_, policy.name, policy.compliance
        template = next((t for t in TEMPLATES if t[2] == uuid_), None)
        if template is None:
            raise SimHTTPError(400, "Invalid 'uuid' field: template not found")
        return template[2], template[1], template[0] == "compliance"

    def folder_exists(self, folder_id: Any) -> bool:
        return folder_id in (TRASH_FOLDER_ID, MY_SCANS_FOLDER_ID) or (
            isinstance(folder_id, int) and folder_id in self.custom_folders
        )

    def create_folder(self, body: Any) -> int:
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise SimHTTPError(400, "Invalid 'name' field: must not be empty")
        if name in self.custom_folders.values() or name in ("Trash", "My Scans"):
            raise SimHTTPError(409, "A folder with this name already exists")
        folder_id = next(self._folder_ids)
        self.custom_folders[folder_id] = name
        return folder_id

    def delete_folder(self, folder_id: int) -> None:
        if folder_id not in self.custom_folders:
            # the built-in folders cannot be deleted either
            raise SimHTTPError(403, "You do not have permission to delete this folder")
        del self.custom_folders[folder_id]
        for scan in self.scans.values():  # Nessus moves the folder's scans to the trash
            if scan.folder_id == folder_id:
                scan.folder_id = TRASH_FOLDER_ID

    def launch(self, scan_id: int) -> Run:
        self.require_scan_api()
        scan = self.scan(scan_id)
        if scan.status(self.now()) in ACTIVE:
            raise SimHTTPError(409, "Scan is already running")
        run = Run(
            history_id=next(self._ids),
            uuid=str(uuid.uuid4()),
            launched_mono_s=self.now(),
            launched_ms=self.clock.now_ms(),
            scan_s=self.options.scan_seconds,
            abort=self.chance(self.faults.abort_rate),
        )
        scan.runs.append(run)
        scan.fixed_status = None
        self.launched += 1
        return run

    def control(self, scan_id: int, action: str) -> None:
        """pause, resume, stop or kill the scan's current run, as Nessus allows."""
        self.require_scan_api()
        scan = self.scan(scan_id)
        run = scan.run()
        status = scan.status(self.now())
        allowed = {
            "pause": ("pending", "running", "resuming"),
            "resume": ("paused",),
            "stop": ("pending", "running", "processing", "pausing", "paused", "resuming"),
            "kill": tuple(ACTIVE),
        }[action]
        if run is None or status not in allowed:
            raise SimHTTPError(409, f"Can not {action} a scan that is {status}")
        run.actions.append((self.now(), action))

    def delete(self, scan_id: int) -> None:
        self.require_scan_api()
        scan = self.scan(scan_id)
        if scan.status(self.now()) in ACTIVE:
            raise SimHTTPError(409, "Can not delete an active scan")
        self._past_runs += [(r.launched_mono_s, r.replay(self.now())[2]) for r in scan.runs]
        del self.scans[scan_id]

    def move(self, scan_id: int, folder_id: Any) -> None:
        scan = self.scan(scan_id)
        if not self.folder_exists(folder_id):
            raise SimHTTPError(400, "Invalid 'folder_id' field: folder not found")
        scan.folder_id = folder_id
        scan.modified_ms = self.clock.now_ms()

    def add_foreign_scan(self, name: str, status: str = "completed") -> int:
        """A scan nessus-pool did not create (owner ``admin``); it reports ``status``."""
        scan = Scan(
            id=next(self._ids),
            name=name,
            template_uuid=TEMPLATES[0][2],
            policy=TEMPLATES[0][1],
            text_targets="192.0.2.10",
            hosts=["192.0.2.10"],
            description="",
            folder_id=MY_SCANS_FOLDER_ID,
            owner="admin",
            created_ms=self.clock.now_ms(),
            fixed_status=status,
        )
        scan.modified_ms = scan.created_ms
        self.scans[scan.id] = scan
        return scan.id

    # --- exports -----------------------------------------------------------------------

    def start_export(self, scan_id: int, body: Any, history_id: int | None) -> ExportFile:
        scan = self.scan(scan_id)
        fmt = body.get("format") if isinstance(body, dict) else None
        if fmt not in ("nessus", "csv", "html", "pdf", "db"):
            raise SimHTTPError(
                400, "Invalid 'format' field: must be one of nessus, csv, html, pdf, db"
            )
        if fmt not in EXPORT_FORMATS:
            raise SimHTTPError(400, f"Export format '{fmt}' is not simulated")
        if history_id is not None and scan.run(history_id) is None:
            raise SimHTTPError(404, NOT_FOUND)
        status = scan.status(self.now(), history_id)
        if status in ACTIVE:
            raise SimHTTPError(409, "Can not export running scans")
        export = ExportFile(
            file_id=next(self._file_ids),
            token=secrets.token_hex(32),
            scan_id=scan_id,
            history_id=history_id,
            created_mono_s=self.now(),
            error=self.chance(self.faults.export_error_rate),
            format=fmt,
        )
        self.exports[export.file_id] = export
        return export

    def export(
        self, scan_id: int | None, file_id: int | None = None, token: str | None = None
    ) -> ExportFile:
        found = (
            self.exports.get(file_id)
            if file_id is not None
            else next((e for e in self.exports.values() if e.token == token), None)
        )
        if (
            found is None
            or (scan_id is not None and found.scan_id != scan_id)
            or self.now() - found.created_mono_s >= self.options.export_ttl_s
        ):
            raise SimHTTPError(404, NOT_FOUND)
        return found

    def export_status(self, export: ExportFile) -> str:
        """``loading`` for the first two polls (or 0.5 s), then ``ready`` or ``error``."""
        ready = export.polls >= 2 or self.now() - export.created_mono_s >= 0.5
        export.polls += 1
        if not ready:
            return "loading"
        return "error" if export.error else "ready"

    # --- stats -------------------------------------------------------------------------

    def stats(self) -> SimulatorStats:
        now = self.now()
        intervals = list(self._past_runs)
        running = 0
        summaries = []
        for scan in self.scans.values():
            for run in scan.runs:
                status, _, end = run.replay(now)
                intervals.append((run.launched_mono_s, end))
                running += status in ACTIVE
            summaries.append(ScanSummary(id=scan.id, name=scan.name, status=scan.status(now)))
        return SimulatorStats(
            created=self.created,
            launched=self.launched,
            peak_running=peak_overlap(intervals),
            running=running,
            duplicates=sum(1 for n in self.name_counts.values() if n > 1),
            scans=summaries,
        )


def _ssh_credential(credentials: Any) -> tuple[str | None, str | None]:
    """(username, password) of the first SSH credential in a ``credentials.add`` block."""
    try:
        ssh = credentials["add"]["Host"]["SSH"]
        first = ssh[0] if isinstance(ssh, list) else ssh
        username = first["username"]
    except (KeyError, IndexError, TypeError):
        return None, None
    if not isinstance(username, str):
        return None, None
    password = first.get("password")
    if first.get("auth_method", "password") != "password":
        password = None  # keys and certificates are not simulated: they never log in
    return username, password if isinstance(password, str) else None
