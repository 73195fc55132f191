"""Plugin 19506 "Nessus Scan Information": what the scanner says about the scan it ran.

Real outputs vary by version. The credential line takes these forms (from the plugin's source
and public exports): ``yes``, ``no``, ``yes (on the localhost)``, ``yes, as 'user' via ssh``,
``yes, as 'DOM\\user' via SMB``, ``yes (as 'user' via SMB`` (an unclosed parenthesis in some
versions), ``yes, via SNMP``, ``yes, as 'user', via HTTPS``. Lines may be indented (re-indented
XML) and end in CRLF; the plugin may be present with no ``plugin_output`` at all. The label is
``Report Verbosity`` in old versions and ``Report verbosity`` in new ones.
"""

from __future__ import annotations

import re

import msgspec

from nessus_pool.results.types import CredentialedChecks

_BLANKS = " \t"
_TRAILING = " \t\r"
#: the keys parse_scan_info reads (lowercase; none has a colon)
_FIELDS = (
    r"(credentialed checks|nessus version|scan type|scan policy used|report verbosity"
    r"|paranoia level|port scanner\(s\)|port range)"
)
#: a "key : value" line of one of those keys in a lowercased ASCII output with a "\n"
#: before it: the text before the line's first colon, blanks stripped, is the key; the
#: rest of the line is the value. The leading "\n" lets the search skip from line to line
#: (a literal prefix) and no case folding is needed: 3x faster than the pattern below.
#: The blanks are possessive (*+): a key never starts or ends with a blank, and giving
#: them back one by one cost 8 failed keys a blank on indented outputs (11 -> 3.7 us)
_FIELD_LINE = re.compile(r"\n[ \t]*+" + _FIELDS + r"[ \t]*+:(.*)")
#: the same on any output as written (any ASCII case); for outputs that are not ASCII
_FIELD_LINE_ANY = re.compile(r"^[ \t]*+" + _FIELDS + r"[ \t]*+:(.*)$", re.M | re.I | re.A)
_CRED_LINE = re.compile(r"^[ \t]*+Credentialed checks[ \t]*+:(.*)$", re.M | re.I)
_AS_USER = re.compile(r"as '(?P<user>[^']*)'")
_VIA = re.compile(r"via (?P<proto>[A-Za-z0-9]+)")


class ScanInfo(msgspec.Struct, kw_only=True):
    """The parts of one plugin 19506 output that matter for validation."""

    #: normalised "Credentialed checks" value; None when the line is missing or unreadable
    credentialed_checks: CredentialedChecks | None = None
    #: the raw value after "Credentialed checks :"
    credentialed_raw: str | None = None
    credential_user: str | None = None
    #: "ssh", "smb", "snmp", "https", "local" (on the localhost) as reported
    credential_protocol: str | None = None
    nessus_version: str | None = None
    scan_type: str | None = None
    policy: str | None = None
    report_verbosity: str | None = None
    paranoia_level: str | None = None
    #: None when the output has no "Port scanner(s)" line
    port_scanners: list[str] | None = None
    port_range: str | None = None
    #: the output carries "WARNING : No port scanner was enabled during the scan"
    no_port_scanner_warning: bool = False

    @property
    def is_agent(self) -> bool:
        """Agent scans have no port scanner by design."""
        return bool(self.scan_type and "agent" in self.scan_type.lower())

    @property
    def paranoid(self) -> bool:
        """Paranoid report settings, under which 19506 may say ``no`` although login worked."""
        level = (self.paranoia_level or "").strip()
        verbosity = (self.report_verbosity or "").lower()
        return (level.isdigit() and int(level) >= 2) or "paranoid" in verbosity

    @property
    def port_scanner_missing(self) -> bool:
        if self.no_port_scanner_warning:
            return True
        # scanner (not agent) scans print "Port range" next to the scanners they ran
        return self.port_scanners is None and self.port_range is not None


def normalise_credentialed(value: str | None) -> CredentialedChecks | None:
    """``"yes"`` / ``"no"`` from the value after ``Credentialed checks :``, else None."""
    if value is None:
        return None
    v = value.strip().lower()
    if v.startswith("yes"):
        return "yes"
    if v.startswith("no"):
        return "no"
    return None


def parse_credentialed_checks(output: str | None) -> CredentialedChecks | None:
    """The normalised ``Credentialed checks`` value of a 19506 output (None if absent): what
    ``parse_scan_info(output).credentialed_checks`` gives (the last such line wins), without
    reading the other lines: 4.6 us per output against 18 for the whole parse."""
    if not output:
        return None
    last = None
    for m in _CRED_LINE.finditer(output):
        last = m
    return normalise_credentialed(_value(last.group(1))) if last else None


def credentialed_from_tag(tag: str | None) -> CredentialedChecks | None:
    """The ``Credentialed_Scan`` host property (``true`` / ``false``) as yes / no."""
    if tag is None:
        return None
    t = tag.strip().lower()
    return "yes" if t == "true" else "no" if t == "false" else None


def _value(text: str) -> str:
    """A value without its leading blanks and its trailing blanks or CR."""
    return text.lstrip(_BLANKS).rstrip(_TRAILING)


def parse_scan_info(output: str | None) -> ScanInfo:
    """Parse a 19506 ``plugin_output``; an empty ScanInfo when the output is missing.

    The last line of a key wins. Only the lines of the keys read are matched
    (:data:`_FIELD_LINE`), with no Python step per line: 19506 outputs have about 28
    lines, 8 of them read: about half the time of splitting every line (issue 18)."""
    info = ScanInfo()
    if not output:
        return info
    lowered = output.lower()
    for key, value in _fields(output, lowered):
        if key == "credentialed checks":
            info.credentialed_raw = value
            info.credentialed_checks = normalise_credentialed(value)
            _credential_details(info, value)
        elif key == "nessus version":
            info.nessus_version = value.split()[0] if value.split() else value
        elif key == "scan type":
            info.scan_type = value
        elif key == "scan policy used":
            info.policy = value
        elif key == "report verbosity":
            info.report_verbosity = value
        elif key == "paranoia level":
            info.paranoia_level = value
        elif key == "port scanner(s)":
            info.port_scanners = value.split()
        elif key == "port range":
            info.port_range = value
    info.no_port_scanner_warning = "no port scanner was enabled" in lowered
    return info


def _fields(output: str, lowered: str) -> list[tuple[str, str]]:
    """The (key, value) of each line of the keys read, in order; the key lowercased, the
    value without its leading blanks and trailing blanks or CR."""
    if output.isascii():  # lowercasing keeps every character in its place
        return [
            (m.group(1), _value(output[m.start(2) - 1 : m.end(2) - 1]))
            for m in _FIELD_LINE.finditer("\n" + lowered)
        ]
    return [(m.group(1).lower(), _value(m.group(2))) for m in _FIELD_LINE_ANY.finditer(output)]


def _credential_details(info: ScanInfo, value: str) -> None:
    if info.credentialed_checks != "yes":
        return
    if "on the localhost" in value.lower():
        info.credential_protocol = "local"
    if m := _AS_USER.search(value):
        info.credential_user = m.group("user")
    if m := _VIA.search(value):
        info.credential_protocol = m.group("proto").lower()
