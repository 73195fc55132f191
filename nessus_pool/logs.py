"""Structured logging: JSON lines on stderr (journald-friendly) or human text, with
redaction of secrets by key name and by registered value."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote, quote_plus

import msgspec

if TYPE_CHECKING:
    _StreamHandler = logging.StreamHandler[TextIO]
else:
    _StreamHandler = logging.StreamHandler

_STD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}
SECRET_KEYS = (
    "password",
    "secret",
    "token",
    "access_key",
    "accesskey",
    "secretkey",
    "private_key",
    "authorization",
    "cookie",
    "api_key",
)
#: shorter values are not treated as secrets: they occur in ordinary text ("task_", "root")
MIN_SECRET_CHARS = 8
_MASK = "[REDACTED]"
#: values too common to be secrets: replacing them everywhere would rewrite ordinary log text
_COMMON = frozenset(
    {
        "password",
        "password1",
        "passw0rd",
        "12345678",
        "123456789",
        "1234567890",
        "87654321",
        "qwertyui",
        "qwertyuiop",
        "changeme",
        "iloveyou",
        "letmein1",
        "welcome1",
        "administrator",
        "nessus_pool",
        "redacted",
    }
)
#: our own log vocabulary: a "secret" found inside it would rewrite every line
_VOCABULARY = " ".join(
    [
        *SECRET_KEYS,
        "nessus_pool.engine nessus_pool.nessus nessus_pool.service nessus_pool.api",
        "nessus_pool.daemon task_id scanner_id remote_scan_id remote_scan_name endpoint",
        "status reason error event message level logger info warning debug critical",
        "queued dispatching running exporting completed failed canceled",
    ]
).lower()


#: up to this many distinct secret prefixes are searched for with one regular expression
_FINDER_MAX = 256


def _trie_pattern(words: list[str]) -> str:
    """A regular expression matching any of ``words``, as a trie (``ab(?:c|d)``): the
    engine tries each next character once, not every word at every position."""
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        alts = [re.escape(ch) + build(child) if ch else "" for ch, child in sorted(node.items())]
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return build(trie) if trie else "(?!)"


class _SecretIndex:
    """Registered secrets, found in text in one pass: each secret is filed under its first
    :data:`MIN_SECRET_CHARS` characters and its length, so the work per position of a string
    is one dict lookup, plus one set lookup per distinct secret length under that prefix:
    it does not grow with the number of secrets. Values held for a task are
    reference-counted and dropped when the task ends; global ones (scanner keys, tokens)
    stay."""

    def __init__(self) -> None:
        #: prefix -> {length -> secrets}, lengths in descending order (the longest match wins)
        self._by_prefix: dict[str, dict[int, set[str]]] = {}
        self._refs: dict[str, int] = {}
        self._tasks: dict[str, list[str]] = {}
        #: the prefixes as one regular expression (built on first use after a change), while
        #: they are few: the scan for them then runs in C
        self._finder: re.Pattern[str] | None = None
        #: bumped by each new prefix; the finder was built at ``_finder_version``
        self._version = 0
        self._finder_version = -1

    def __len__(self) -> int:
        return len(self._refs)

    def add(self, value: str) -> None:
        n = self._refs.get(value, 0)
        self._refs[value] = n + 1
        if n:
            return
        key = value[:MIN_SECRET_CHARS]
        bucket = self._by_prefix.get(key, {})
        if len(value) in bucket:
            bucket[len(value)].add(value)
            return
        bucket[len(value)] = {value}
        self._by_prefix[key] = dict(sorted(bucket.items(), reverse=True))
        self._version += 1

    def add_once(self, value: str) -> None:
        if value not in self._refs:
            self.add(value)

    def remove(self, value: str) -> None:
        n = self._refs.get(value, 0)
        if n > 1:
            self._refs[value] = n - 1
            return
        self._refs.pop(value, None)
        key = value[:MIN_SECRET_CHARS]
        bucket = self._by_prefix.get(key, {})
        same_length = bucket.get(len(value), set())
        same_length.discard(value)
        if not same_length:
            bucket.pop(len(value), None)
        if not bucket:
            # the finder may go on finding this prefix: only a candidate, checked in redact
            self._by_prefix.pop(key, None)

    def hold_for(self, task_id: str, values: list[str]) -> None:
        self._tasks.setdefault(task_id, []).extend(values)
        for v in values:
            self.add(v)

    def release(self, task_id: str) -> int:
        values = self._tasks.pop(task_id, [])
        for v in values:
            self.remove(v)
        return len(values)

    def _first_candidate(self, text: str) -> int:
        """Where the first registered prefix may occur in ``text`` (-1: nowhere). Up to
        :data:`_FINDER_MAX` prefixes, one regular expression (a trie of them) finds it in
        C: a JSON log line's values took 6-7 us of Python-level scanning, half of the
        line's cost; the expression takes under 1 us for a few prefixes and 2.3 us for 256
        (compiled once per added prefix: 3.5 ms at 256). With more, the walk of
        :meth:`redact` from the start, whose cost does not grow with the count."""
        version = self._version
        if self._finder_version != version:
            # another thread adding a prefix meanwhile bumps the version: built again then
            prefixes = list(self._by_prefix)
            self._finder = (
                re.compile(_trie_pattern(prefixes)) if len(prefixes) <= _FINDER_MAX else None
            )
            self._finder_version = version
        if self._finder is None:
            return 0
        m = self._finder.search(text)
        return -1 if m is None else m.start()

    def redact(self, text: str) -> str:
        by_prefix = self._by_prefix
        if not by_prefix or len(text) < MIN_SECRET_CHARS:
            return text
        first = self._first_candidate(text)
        if first < 0:
            return text
        parts: list[str] = []
        last = 0
        i = first  # no secret starts before its prefix's first occurrence
        end = len(text) - MIN_SECRET_CHARS
        while i <= end:
            bucket = by_prefix.get(text[i : i + MIN_SECRET_CHARS])
            if bucket is not None:
                for length, values in bucket.items():
                    if text[i : i + length] in values:
                        parts += (text[last:i], _MASK)
                        i = last = i + length
                        break
                else:
                    i += 1
            else:
                i += 1
        if not parts:
            return text
        parts.append(text[last:])
        return "".join(parts)


_secrets = _SecretIndex()


def secret_forms(value: str) -> list[str]:
    """``value`` and the forms it takes when a scanner echoes it back inside other text:
    JSON-escaped (``"`` as ``\\"``, a control character as ``\\u0008``, both with and
    without ``ensure_ascii``) and percent-encoded (``quote`` and ``quote_plus``, as a form
    body or a URL carries it). Distinct, in a stable order, the value itself first."""
    forms = [
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote_plus(value, safe=""),
        quote(value),
    ]
    return list(dict.fromkeys(forms))


def not_a_secret_because(value: str) -> str | None:
    """Why ``value`` cannot be redacted as a secret (too short or too common), or None."""
    if len(value) < MIN_SECRET_CHARS:
        return f"shorter than {MIN_SECRET_CHARS} characters"
    low = value.lower()
    if low in _COMMON or len(set(low)) < 3 or low in _VOCABULARY:
        return "too common to tell apart from ordinary log text"
    return None


_warned: set[int] = set()


def _redactable(values: list[str | None], source: str) -> list[str]:
    kept: list[str] = []
    for i, v in enumerate(values):
        if not v:
            continue
        why = not_a_secret_because(v)
        if why is None:
            kept.append(v)
            continue
        if hash(v) in _warned:
            continue  # said once per value (a named credential is resolved for every task)
        _warned.add(hash(v))
        # the value itself is never logged, only where it came from and why
        logging.getLogger("nessus_pool.logs").warning(
            "a secret value is %s and will not be redacted from logs by value",
            why,
            extra={"event": "secret_not_redactable", "source": source, "index": i},
        )
    return kept


def register_secret(value: str | None, *, source: str = "config") -> None:
    """A value that must never appear in a log line for as long as the process runs
    (scanner keys, API tokens). Values too short or too common are refused with a
    ``secret_not_redactable`` warning (they would rewrite ordinary text)."""
    for v in _redactable([value], source):
        for form in secret_forms(v):
            _secrets.add_once(form)


def hold_task_secrets(task_id: str, values: list[str | None]) -> list[str]:
    """Redact ``values`` until :func:`release_task_secrets` for this task (call it for
    accepted tasks only). Returns the values that could not be held (too short or common)."""
    kept = _redactable(values, f"task {task_id}")
    _secrets.hold_for(task_id, [form for v in kept for form in secret_forms(v)])
    return [v for v in values if v and v not in kept]


def release_task_secrets(task_id: str) -> int:
    """Stop redacting the values held for a task that has ended; how many were held."""
    return _secrets.release(task_id)


def secrets_registered() -> int:
    return len(_secrets)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``[REDACTED]``."""
    return _secrets.redact(text)


def _scrub(value: Any) -> Any:
    """Redact inside a value made of builtins (str, list, dict, numbers)."""
    if isinstance(value, str):
        return _secrets.redact(value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    return value


#: extra field name -> whether its name says it holds a secret (names come from our code;
#: bounded all the same)
_SECRET_NAME: dict[str, bool] = {}
_SECRET_NAMES_MAX = 4096


def _secret_name(key: str) -> bool:
    verdict = _SECRET_NAME.get(key)
    if verdict is None:
        low = key.lower()
        verdict = any(s in low for s in SECRET_KEYS)
        if len(_SECRET_NAME) >= _SECRET_NAMES_MAX:
            _SECRET_NAME.clear()
        _SECRET_NAME[key] = verdict
    return verdict


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in record.__dict__.items():
        if k in _STD or k.startswith("_"):
            continue
        out[k] = _MASK if _secret_name(k) else v
    return out


_encoder = msgspec.json.Encoder()
#: types a field may have that need no conversion before encoding nor any redaction
_PLAIN = (int, float, bool, type(None))


def _json_line(data: dict[str, Any]) -> str:
    """One JSON line, secrets redacted in the values before encoding: a secret that looks
    like JSON syntax (``","l``) cannot break the line."""
    try:
        plain = msgspec.to_builtins(data, enc_hook=str)
    except (TypeError, ValueError, OverflowError):
        plain = json.loads(json.dumps(data, default=str))
    # the top level inline (one event's fields are mostly short strings and numbers); nested
    # values through _scrub
    redact_text = _secrets.redact
    scrubbed = {}
    for k, v in plain.items():
        if type(v) is str:
            v = redact_text(v)
        elif not isinstance(v, _PLAIN):
            v = _scrub(v)
        scrubbed[redact_text(k)] = v
    try:
        return _encoder.encode(scrubbed).decode()
    except (TypeError, ValueError, OverflowError):
        return json.dumps(scrubbed, default=str)


class _Stamp:
    """``2026-11-30T20:54:44.694Z`` for a record's time; the part up to the second is
    formatted once per second, not per line."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, created_s: float, msecs: float) -> str:
        second = int(created_s)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int(msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._stamp = _Stamp()

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        data: dict[str, Any] = {
            "ts": self._stamp(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or message,
            "message": message,
        }
        data.update(_fields(record))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return _json_line(data)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items() if v is not None)
        line = f"{time.strftime('%H:%M:%S')} {record.levelname:<7} {record.getMessage()}"
        if extra:
            line += f"  {extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class TurnBufferedHandler(_StreamHandler):
    """A :class:`logging.StreamHandler` that writes the info and debug lines an event loop's
    thread logs in one turn of that loop together, with one ``write`` and one flush at the
    end of the turn, instead of one system call per line (a burst of submits logs a line
    each: the write was half of a line's cost). Warnings and errors, lines logged off a
    loop's thread, :meth:`flush` and :func:`logging.shutdown` (at exit) write at once,
    after what is pending, so the order of lines is kept and nothing waits longer than the
    turn it was logged in."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        #: the loop whose end of turn will write the pending lines
        self._turn_of: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # Handler.handle holds self.lock (an RLock) around this call
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        loop = None
        if record.levelno < logging.WARNING:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        if loop is not None and self._turn_of is not None and self._turn_of is not loop:
            # held for another loop's turn (one that closed before its turn ended: tests)
            self._write_pending(record)
            self._turn_of = None
        self._pending.append(line)
        if loop is None:
            self._write_pending(record)
        elif self._turn_of is None:
            try:
                loop.call_soon(self._end_of_turn)
            except RuntimeError:  # the loop is closing
                self._write_pending(record)
                return
            self._turn_of = loop

    def _end_of_turn(self) -> None:
        assert self.lock is not None  # created by Handler.__init__
        with self.lock:
            self._turn_of = None
            self._write_pending(None)

    def _write_pending(self, record: logging.LogRecord | None) -> None:
        lines, self._pending = self._pending, []
        if not lines:
            return
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except Exception:
            if record is not None:
                self.handleError(record)

    def flush(self) -> None:
        assert self.lock is not None
        with self.lock:
            self._write_pending(None)
            super().flush()


def setup_logging(fmt: str = "json", level: str = "info") -> None:
    root = logging.getLogger("nessus_pool")
    for h in list(root.handlers):
        h.flush()  # lines it holds for the end of this turn
        root.removeHandler(h)
    handler = TurnBufferedHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    # what a record carries that our formatters never print: the caller's file and line
    # (a stack walk per record), thread, process and multiprocessing names. Off, as the
    # logging docs' "Optimization" section describes: ~5 us of each line's ~20
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


#: loggers of the libraries we serve HTTP with; their lines go through our handler
LIBRARY_LOGGERS = ("aiohttp.access", "aiohttp.server", "aiohttp.web")
_HEADER_SECRET = re.compile(
    r"(?im)\b((?:proxy-)?authorization|cookie|set-cookie|x-api-key|x-apikeys)(\s*:\s*)[^\n]*"
)


class LibraryRecordFilter(logging.Filter):
    """For records from library loggers: a structured ``event``, header values that carry
    credentials cut out of the message and the exception (aiohttp quotes the raw request
    line of a malformed request, Authorization header included), the exception reduced to
    one line, and at most ``burst`` lines per ``interval_s`` (malformed requests are cheap to
    send; the folded count rides on the next line let through)."""

    def __init__(self, burst: int = 10, interval_s: float = 10.0) -> None:
        super().__init__()
        self.burst = burst
        self.interval_s = interval_s
        self._window_start_s = 0.0
        self._in_window = 0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._window_start_s >= self.interval_s:
            self._window_start_s, self._in_window = now, 0
        self._in_window += 1
        if self._in_window > self.burst:
            self._suppressed += 1
            return False
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f": {type(exc).__name__}: {exc}"
        record.msg, record.args = _HEADER_SECRET.sub(r"\1\2[REDACTED]", text), None
        record.exc_info, record.exc_text = None, None
        if not getattr(record, "event", None):
            record.event = "http_" + record.name.rsplit(".", 1)[-1]
        if self._suppressed:
            record.suppressed = self._suppressed
            self._suppressed = 0
        return True


def route_library_logs(names: tuple[str, ...] = LIBRARY_LOGGERS) -> None:
    """Send the library loggers through the handler setup_logging installed (JSON,
    redaction), each with a LibraryRecordFilter, instead of Python's bare last-resort
    handler."""
    handlers = logging.getLogger("nessus_pool").handlers
    for name in names:
        lib = logging.getLogger(name)
        for h in list(lib.handlers):
            lib.removeHandler(h)
        for f in list(lib.filters):
            lib.removeFilter(f)
        lib.addFilter(LibraryRecordFilter())
        for h in handlers:
            lib.addHandler(h)
        lib.setLevel(logging.WARNING)
        lib.propagate = False
