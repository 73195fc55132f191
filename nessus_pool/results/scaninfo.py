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
from collections.abc import Iterator

import msgspec

from nessus_pool.results.types import CredentialedChecks

#: the key of a "key : value" line: the text before its first colon, blanks stripped
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9 ()/_.-]*")
_BLANKS = " \t"
_TRAILING = " \t\r"
_CRED_LINE = re.compile(r"^[ \t]*Credentialed checks[ \t]*:(.*)$", re.M | re.I)
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


def _key_values(output: str) -> Iterator[tuple[str, str]]:
    """The ``key : value`` lines of an output, the key lowercased. Split at the first colon
    in Python, linear in the text: the regular expression that did this backtracked on a
    long run of blanks, quadratically (20,000 blanks in one line took 0.35 s, holding the
    GIL, and a scanner writes these outputs), and cost 21.5 us per 19506 output."""
    for line in output.split("\n"):
        key, colon, value = line.partition(":")
        if colon:
            key = key.strip(_BLANKS)
            if _KEY.fullmatch(key):
                yield key.lower(), _value(value)


def parse_scan_info(output: str | None) -> ScanInfo:
    """Parse a 19506 ``plugin_output``; an empty ScanInfo when the output is missing."""
    info = ScanInfo()
    if not output:
        return info
    for key, value in _key_values(output):
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
    info.no_port_scanner_warning = "no port scanner was enabled" in output.lower()
    return info


def _credential_details(info: ScanInfo, value: str) -> None:
    if info.credentialed_checks != "yes":
        return
    if "on the localhost" in value.lower():
        info.credential_protocol = "local"
    if m := _AS_USER.search(value):
        info.credential_user = m.group("user")
    if m := _VIA.search(value):
        info.credential_protocol = m.group("proto").lower()
