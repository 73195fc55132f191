"""Issue 18: plugin 19506 outputs are read with greedy patterns (the lazy ones backtracked
on every character) and the scan-type inference reads only the credential line; both give
exactly what the earlier patterns gave."""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from nessus_pool.results import troubleshoot
from nessus_pool.results.scaninfo import (
    normalise_credentialed,
    parse_credentialed_checks,
    parse_scan_info,
)

#: the pattern before the change, as the reference
OLD_KV = re.compile(r"^[ \t]*([A-Za-z][A-Za-z0-9 ()/_.-]*?)[ \t]*:[ \t]*(.*?)[ \t\r]*$", re.M)

KEYS = [
    "Credentialed checks",
    "credentialed CHECKS",
    "Nessus version",
    "Scan type",
    "Scan policy used",
    "Report verbosity",
    "Paranoia level",
    "Port scanner(s)",
    "Port range",
    "Plugin feed version",
    "Foo's bar",
]
blank = st.sampled_from(["", " ", "  ", "\t", " \t"])
value = st.text(st.sampled_from(list("yesno ,'()\t\r:abc/.-12")), max_size=20)
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
    st.text(st.sampled_from(list("ab :\t\r()'-")), max_size=15),
)


def old_parse(output: str) -> dict[str, str]:
    return {m.group(1).strip().lower(): m.group(2) for m in OLD_KV.finditer(output)}


@settings(max_examples=400, deadline=None)
@given(st.lists(line, max_size=8))
@example(["Credentialed checks : no", "Credentialed checks : yes, as 'root' via ssh"])
def test_the_greedy_pattern_reads_what_the_lazy_one_read(lines: list[str]) -> None:
    output = "\n".join(lines)
    old = old_parse(output)
    info = parse_scan_info(output)
    assert info.credentialed_raw == old.get("credentialed checks")
    assert info.credentialed_checks == normalise_credentialed(old.get("credentialed checks"))
    assert info.scan_type == old.get("scan type")
    assert info.policy == old.get("scan policy used")
    assert info.report_verbosity == old.get("report verbosity")
    assert info.paranoia_level == old.get("paranoia level")
    assert info.port_range == old.get("port range")
    scanners = old.get("port scanner(s)")
    assert info.port_scanners == (scanners.split() if scanners is not None else None)
    # the inference's shortcut: the same verdict as the whole parse
    assert parse_credentialed_checks(output) == info.credentialed_checks


#: troubleshoot.py's key pattern before the change, as the reference
OLD_KEY_LINE = re.compile(r"^-?\s*([A-Za-z][A-Za-z ]*?)\s*:\s*(.*)$")
ISSUE_KEYS = ["Protocol", "Port", "User", "Plugin", "Message", "credential type", "Foo"]
issue_line = st.one_of(
    st.builds(
        lambda d, a, k, b, v: f"{d}{a}{k}{b}:{v}",
        st.sampled_from(["", "-", "- "]),
        blank,
        st.sampled_from(ISSUE_KEYS),
        st.sampled_from(["", " ", "\t", " \u00a0", "\x0b"]),
        value,
    ),
    st.text(st.sampled_from(list("ab :\t-'\u00a0")), max_size=15),
)


@settings(max_examples=400, deadline=None)
@given(issue_line)
def test_issue_keys_are_read_as_the_old_pattern_read_them(line: str) -> None:
    old = OLD_KEY_LINE.match(line.strip())
    want = (old.group(1).strip().lower(), old.group(2).strip()) if old else None
    assert troubleshoot.key_value(line.strip()) == want


def test_a_hostile_run_of_blanks_is_read_in_linear_time() -> None:
    """A scanner's output with a line of a million blanks: the old patterns backtracked
    quadratically (20,000 blanks: 0.35 s; a million: minutes, past the test timeout)."""
    blanks = " " * 1_000_000
    info = parse_scan_info(f"Credentialed checks : yes\nx{blanks}y\nScan type{blanks}: normal")
    assert (info.credentialed_checks, info.scan_type) == ("yes", "normal")
    assert parse_scan_info(f"Scan type{blanks}: normal").scan_type == "normal"
    assert parse_credentialed_checks(f"Credentialed checks :{blanks}yes") == "yes"
    issues = troubleshoot.parse_issue_blocks(f"Protocol{blanks}: SSH\nMessage{blanks}: denied")
    assert [(i.protocol, i.message) for i in issues] == [("SSH", "denied")]
    assert troubleshoot.key_value(f"x{blanks}9: z") is None


OLD_AS_USER = re.compile(r"protocol as (?P<user>.+?)\. ", re.S)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(["protocol as ", ". ", "'root'", "x", " ", ".", "as "]), max_size=12)
)
def test_the_account_is_found_as_the_old_pattern_found_it(parts: list[str]) -> None:
    text = "".join(parts)
    old = OLD_AS_USER.search(text)
    assert troubleshoot._as_user(text) == (old.group("user").strip("'") if old else None)


def test_many_unfinished_mentions_are_read_in_linear_time() -> None:
    """'protocol as x' a hundred thousand times and no '. ': the old pattern rescanned to the
    end from each (8,000 took 4.3 s; this many, far past the test timeout)."""
    assert troubleshoot._as_user("protocol as x" * 100_000) is None
    assert troubleshoot._as_user("protocol as x" * 100_000 + ". ") == "x" + "protocol as x" * 99_999
