"""Issue 18, round four: parse_scan_info matches only the lines of the keys it reads (one
search over the lowercased output) instead of splitting every line in Python; the result
is the whole-line reader's, which is kept here as the reference."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from lxml import etree  # type: ignore[import-untyped]

from nessus_pool.results.scaninfo import (
    ScanInfo,
    _credential_details,
    normalise_credentialed,
    parse_scan_info,
)

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "nessus-samples"

#: the reader before this change, as the reference: every line split at its first colon
OLD_KEY = re.compile(r"[A-Za-z][A-Za-z0-9 ()/_.-]*")


def old_parse_scan_info(output: str | None) -> ScanInfo:
    info = ScanInfo()
    if not output:
        return info
    for line in output.split("\n"):
        key, colon, value = line.partition(":")
        if not colon:
            continue
        key = key.strip(" \t")
        if not OLD_KEY.fullmatch(key):
            continue
        key, value = key.lower(), value.lstrip(" \t").rstrip(" \t\r")
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


KEYS = [
    "Credentialed checks",
    "credentialed CHECKS",
    "Credentialed chec\u212as",  # a KELVIN SIGN: lowercases to "k", but is no key
    "\u0130Credentialed checks",  # lowercases to two characters
    "Nessus version",
    "Scan type",
    "SCAN TYPE",
    "Scan  type",
    "Scan policy used",
    "Report verbosity",
    "Report Verbosity",
    "Paranoia level",
    "Port scanner(s)",
    "Port range",
    "Plugin feed version",
    "Foo's bar",
    "x: Scan type",
    "",
]
blank = st.sampled_from(["", " ", "  ", "\t", " \t", "\r", "\u00a0"])
value = st.text(st.sampled_from(list("yesno ,'()\t\r:abcé/.-12\u212a")), max_size=20)
line = st.one_of(
    st.builds(
        lambda a, k, b, c, v, e: f"{a}{k}{b}:{c}{v}{e}",
        blank,
        st.sampled_from(KEYS),
        blank,
        blank,
        value,
        st.sampled_from(["", " ", "\r", " \r", "\t\r"]),
    ),
    st.sampled_from(["WARNING : No port scanner was enabled during the scan", "", "\r"]),
    st.text(st.sampled_from(list("ab :\t\r()'-\n")), max_size=15),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(line, max_size=10), st.sampled_from(["\n", "\r\n"]))
@example(["Scan type : a", "scan TYPE : b", "Credentialed checks : yes, as 'x' via ssh"], "\n")
@example(["Credentialed chec\u212as : yes", "Scan type : agent"], "\n")
@example(["Scan type : \u212a", "Port range : 1-9"], "\r\n")
@example([" " * 20 + "Scan type : normal", "\t" * 9 + "Credentialed checks  \t : yes"], "\n")
def test_the_same_scan_info_as_the_whole_line_reader(lines: list[str], eol: str) -> None:
    output = eol.join(lines)
    assert parse_scan_info(output) == old_parse_scan_info(output)


def test_outputs_that_are_not_ascii_are_read_as_written() -> None:
    """Lowercasing may move characters (one becomes two): such outputs are read as
    written, in any ASCII case of the keys."""
    out = "\u0130\nSCAN TYPE : Agent \u00e9\nCredentialed chec\u212as : yes\nPort range : 22"
    info = parse_scan_info(out)
    assert info == old_parse_scan_info(out)
    assert (info.scan_type, info.credentialed_checks, info.port_range) == (
        "Agent \u00e9",
        None,
        "22",
    )


def sample_outputs() -> list[str]:
    if not (SAMPLES / "manifest.json").is_file():
        pytest.skip(f"no samples at {SAMPLES}")
    names = {
        Path(e["file"]).name for e in json.loads((SAMPLES / "manifest.json").read_text())["files"]
    }
    outputs = []
    for name in sorted(names):
        path = SAMPLES / name
        if not path.is_file() or path.suffix != ".nessus":
            continue
        try:
            tree = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError:
            continue
        outputs += tree.xpath("//ReportItem[@pluginID='19506']/plugin_output/text()")
    return [str(o) for o in outputs]


def test_real_19506_outputs_read_as_before() -> None:
    outputs = sample_outputs()
    assert outputs
    for output in outputs:
        got, want = parse_scan_info(output), old_parse_scan_info(output)
        assert msgspec.to_builtins(got) == msgspec.to_builtins(want)
