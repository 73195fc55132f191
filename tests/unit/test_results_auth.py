"""Authentication validation: the 19506 credential line, per-host verdicts from the real
credential plugins' output layouts, scan verdicts, target coverage, and real samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nessus_pool.models import ScanType
from nessus_pool.results.auth import (
    HostFacts,
    assess_host,
    expand_target,
    infer_scan_type,
    missing_targets,
    validate,
    worst_status,
)
from nessus_pool.results.parser import AuthStatus, parse_export
from nessus_pool.results.scaninfo import parse_credentialed_checks, parse_scan_info

AUTH = ScanType.AUTHENTICATED


def samples_dir() -> Path:
    env = os.environ.get("NESSUS_SAMPLES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "nessus-samples"


def info_19506(cred: str, *, extra: str = "", indent: str = "", eol: str = "\n") -> str:
    lines = [
        "Information about this scan : ",
        "",
        "Nessus version : 10.1.1",
        "Scan type : Normal",
        "Port scanner(s) : nessus_syn_scanner ",
        "Port range : default",
        "Paranoia level : 1",
        "Report verbosity : 1",
        f"Credentialed checks : {cred}",
        "Patch management checks : None",
        *([extra] if extra else []),
    ]
    return eol.join(indent + line if line else line for line in lines) + eol


# --- the credential line -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("yes", "yes"),
        ("no", "no"),
        ("yes (on the localhost)", "yes"),
        ("yes, as 'user' via ssh", "yes"),
        ("yes, as 'CORP\\svc' via SMB", "yes"),
        ("yes (as 'svc' via SMB", "yes"),
        ("yes, via SNMP", "yes"),
    ],
)
def test_credential_line_forms(value: str, expected: str) -> None:
    assert parse_credentialed_checks(info_19506(value)) == expected
    assert parse_credentialed_checks(info_19506(value, indent=" " * 20)) == expected
    assert parse_credentialed_checks(info_19506(value, eol="\r\n")) == expected


def test_credential_line_absent() -> None:
    assert parse_credentialed_checks(None) is None
    assert parse_credentialed_checks("") is None
    assert parse_credentialed_checks("Information about this scan :\nNessus version : 5\n") is None


@given(
    value=st.sampled_from(["yes", "no"]),
    suffix=st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=30),
    indent=st.text(alphabet=" \t", max_size=24),
    eol=st.sampled_from(["\n", "\r\n"]),
)
def test_credential_line_property(value: str, suffix: str, indent: str, eol: str) -> None:
    sep = ", " if value == "yes" else " "
    text = info_19506(value + (sep + suffix if suffix.strip() else ""), indent=indent, eol=eol)
    assert parse_credentialed_checks(text) == value


@given(st.text(max_size=200))
def test_credential_line_never_invented(text: str) -> None:
    result = parse_credentialed_checks(text)
    assert result is None or "credentialed checks" in text.lower()


def test_scan_info_details() -> None:
    info = parse_scan_info(info_19506("yes, as 'bob' via ssh", indent="    ", eol="\r\n"))
    assert (info.credential_user, info.credential_protocol) == ("bob", "ssh")
    assert (info.nessus_version, info.scan_type, info.port_scanners) == (
        "10.1.1",
        "Normal",
        ["nessus_syn_scanner"],
    )
    assert not info.paranoid and not info.port_scanner_missing
    local = parse_scan_info(info_19506("yes (on the localhost)"))
    assert local.credential_protocol == "local"
    agent = parse_scan_info(
        "Nessus version : 7.1.1\nScan type : Windows Agent\nCredentialed checks : yes\n"
    )
    assert agent.is_agent and not agent.port_scanner_missing
    none = parse_scan_info(
        "Nessus version : 8\n\nWARNING : No port scanner was enabled during "
        "the scan. This may\nlead to incomplete results.\n\nPort range : 1-5\n"
    )
    assert none.port_scanner_missing
    assert parse_scan_info(
        info_19506("no").replace("Paranoia level : 1", "Paranoia level : 2")
    ).paranoid


# --- per-host verdicts ---------------------------------------------------------------------

OUT_104410 = """
Nessus was unable to log into the following host for which
credentials have been provided :

  Protocol        : SSH
  Port            : 22
  Failure details :

  - User : bob

    - Plugin      : ssh_get_info2.nasl
      Plugin ID   : 97993
      Plugin Name : OS Identification and Installed Software Enumeration over SSH v2
      Message     :
Failed to authenticate using the supplied credentials.
"""
OUT_110385 = """
Nessus was able to log into the remote host, however this credential
did not have sufficient privileges for all planned checks :

  Protocol        : SSH
  Port            : 22
  Credential type : password
  User            : 'alice'

See the output of the following plugin for details :

  Plugin ID   : 102094
  Plugin Name : SSH Commands Require Privilege Escalation
"""
OUT_21745_NEW = """
OS Security Patch Assessment failed because :

  - Plugin      : ssh_get_info2.nasl
    Plugin ID   : 97993
    Plugin Name : OS Identification and Installed Software Enumeration over SSH v2
    Protocol    : SSH
    Message     :
Unable to run commands: connection timed out.

The following service errors were logged :
  - Plugin      : ssh_lib.inc
    Message     : SSH service closed the connection.
"""
# the plugins print "Message     : " with a trailing space before a multi-line message
OUT_104410 = OUT_104410.replace("Message     :\n", "Message     : \n")
OUT_21745_NEW = OUT_21745_NEW.replace("Message     :\n", "Message     : \n")
OUT_21745_OLD = "- It was not possible to log into the remote host via ssh (invalid credentials).\n"
OUT_141118 = """
Nessus was able to log in to the remote host via the following :

  Protocol        : SSH
  Port            : 22
  Credential type : password
  User            : 'alice'
"""


def host(outputs: dict[int, list[str | None]], tag: str | None = None) -> HostFacts:
    return HostFacts(name="10.0.0.5", ip="10.0.0.5", credentialed_scan_tag=tag, outputs=outputs)


def test_success_from_19506() -> None:
    v = assess_host(host({19506: [info_19506("yes, as 'root' via ssh")]}), AUTH)
    assert (v.status, v.credentialed_checks, v.evidence) == (AuthStatus.SUCCESS, "yes", [19506])


def test_failed_104410_troubleshooting_quotes_the_plugin() -> None:
    v = assess_host(host({19506: [info_19506("no")], 104410: [OUT_104410]}), AUTH)
    assert v.status is AuthStatus.FAILED and v.evidence == [19506, 104410]
    (line,) = v.troubleshooting
    assert line.startswith(
        "Host 10.0.0.5: SSH login as 'bob' on port 22 failed: "
        "Failed to authenticate using the supplied credentials."
    )
    assert "password or key for 'bob'" in line


def test_partial_on_insufficient_privilege() -> None:
    v = assess_host(
        host({19506: [info_19506("yes")], 141118: [OUT_141118], 110385: [OUT_110385]}), AUTH
    )
    assert v.status is AuthStatus.PARTIAL
    assert v.evidence == [19506, 110385, 141118]
    assert "as 'alice' on port 22" in v.troubleshooting[0]


def test_21745_new_and_old_formats() -> None:
    new = assess_host(host({21745: [OUT_21745_NEW]}), AUTH)
    assert new.status is AuthStatus.FAILED
    assert new.troubleshooting[0].startswith(
        "Host 10.0.0.5: OS security patch assessment failed (SSH): Unable to run commands: "
        "connection timed out."
    )
    assert "reach" in new.troubleshooting[0]
    assert "SSH service closed the connection" in new.troubleshooting[1]
    old = assess_host(host({21745: [OUT_21745_OLD]}), AUTH)
    assert old.status is AuthStatus.FAILED
    assert "via ssh (invalid credentials)" in old.troubleshooting[0]


def test_paranoid_no_but_confirmed_is_success_with_note() -> None:
    text = info_19506("no").replace("Paranoia level : 1", "Paranoia level : 2")
    v = assess_host(host({19506: [text], 110095: [OUT_141118]}), AUTH)
    assert v.status is AuthStatus.SUCCESS and "Paranoid" in v.notes[0]
    alone = assess_host(host({19506: [text]}), AUTH)
    assert alone.status is AuthStatus.UNKNOWN


def test_no_and_nothing_else_is_failed_unknown_without_evidence() -> None:
    assert assess_host(host({19506: [info_19506("no")]}), AUTH).status is AuthStatus.FAILED
    assert assess_host(host({}), AUTH).status is AuthStatus.UNKNOWN
    assert assess_host(host({19506: [None]}), AUTH).status is AuthStatus.UNKNOWN
    tagged = assess_host(host({}, tag="true"), AUTH)
    assert (tagged.status, tagged.credentialed_checks) == (AuthStatus.SUCCESS, "yes")


def test_untrusted_is_not_applicable() -> None:
    v = assess_host(host({19506: [info_19506("no")], 104410: [OUT_104410]}), ScanType.UNTRUSTED)
    assert v.status is AuthStatus.NOT_APPLICABLE and v.troubleshooting == []


def test_smb_null_session_only() -> None:
    facts = host(
        {
            19506: [info_19506("no")],
            10394: ["- NULL sessions are enabled on the remote host\n"],
            24786: [
                "\nIt was not possible to connect to '\\\\H\\ADMIN$' with the supplied "
                "credentials.\n"
            ],
        }
    )
    v = assess_host(facts, AUTH)
    assert v.status is AuthStatus.FAILED and v.evidence == [10394, 19506, 24786]
    assert any("ADMIN$" in t for t in v.troubleshooting)
    # the same 10394 next to a working SSH login is noise, not a failure
    ok = assess_host(
        host(
            {
                19506: [info_19506("yes")],
                10394: ["- NULL sessions are enabled on the remote host\n"],
            }
        ),
        AUTH,
    )
    assert ok.status is AuthStatus.SUCCESS


# --- scan verdicts and warnings ------------------------------------------------------------

STATUS = st.sampled_from(
    [AuthStatus.SUCCESS, AuthStatus.FAILED, AuthStatus.PARTIAL, AuthStatus.UNKNOWN]
)


@given(st.lists(STATUS, min_size=1))
def test_worst_status_property(statuses: list[AuthStatus]) -> None:
    order = [AuthStatus.FAILED, AuthStatus.PARTIAL, AuthStatus.UNKNOWN, AuthStatus.SUCCESS]
    assert worst_status(statuses, AUTH) == min(statuses, key=order.index)
    assert worst_status(statuses, ScanType.UNTRUSTED) is AuthStatus.NOT_APPLICABLE


def test_validate_counts_and_warnings() -> None:
    hosts = [
        HostFacts(name="10.0.0.1", ip="10.0.0.1", outputs={19506: [info_19506("yes")]}),
        HostFacts(name="web", ip="10.0.0.2", fqdn="web.lan", outputs={104410: [OUT_104410]}),
        HostFacts(
            name="10.0.0.3",
            ip="10.0.0.3",
            outputs={19506: ["Nessus version : 8\nWARNING : No port scanner was enabled\n"]},
        ),
    ]
    verdicts = [assess_host(h, AUTH) for h in hosts]
    v = validate(hosts, verdicts, scan_type=AUTH, targets=["10.0.0.1-4", "web.lan,db"])
    assert v.authentication_status is AuthStatus.FAILED
    assert v.hosts_by_status == {"failed": 1, "success": 1, "unknown": 1}
    joined = "\n".join(v.warnings)
    assert "2 targets have no results" in joined and "10.0.0.4, db" in joined
    assert "absent on 1 host: web" in joined
    assert "no port scanner was enabled for 1 host:" in joined
    assert any("'bob'" in t for t in v.troubleshooting)


def test_expand_targets() -> None:
    assert expand_target("10.0.0.1-3") == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert expand_target("10.0.0.254-10.0.1.1") == [
        "10.0.0.254",
        "10.0.0.255",
        "10.0.1.0",
        "10.0.1.1",
    ]
    assert expand_target("10.0.0.0/30") == ["10.0.0.1", "10.0.0.2"]
    assert expand_target("Host.LAN") == ["host.lan"]
    assert expand_target("10.0.0.0/8") is None
    hosts = [HostFacts(name="10.9.0.7", ip="10.9.0.7")]
    assert missing_targets(["11.0.0.0/8", "10.0.0.0/8"], hosts) == ["11.0.0.0/8"]


def test_infer_scan_type() -> None:
    assert infer_scan_type([host({19506: [info_19506("no")]})]) is ScanType.UNTRUSTED
    assert infer_scan_type([host({19506: [info_19506("yes")]})]) is ScanType.AUTHENTICATED
    assert infer_scan_type([host({104410: [OUT_104410]})]) is ScanType.AUTHENTICATED
    assert infer_scan_type([host({}, tag="true")]) is ScanType.AUTHENTICATED


# --- real samples --------------------------------------------------------------------------

#: file -> (scan type inferred offline, verdict), with the reason
SAMPLE_VERDICTS = {
    # 19506 "no" on all 7 hosts, 24786 "not possible to connect to ADMIN$ with the supplied
    # credentials", 10394 NULL session only: credentials were supplied and refused
    "defectdojo__nessus_v_unknown.xml": (ScanType.AUTHENTICATED, AuthStatus.FAILED),
    # "Credentialed checks : yes" and 12634 (authenticated package enumeration)
    "libnessus__nessus_report_local2.nessus": (ScanType.AUTHENTICATED, AuthStatus.SUCCESS),
    # agent scan, "Credentialed checks : yes", Credentialed_Scan=true
    "pytenable__example.nessus": (ScanType.AUTHENTICATED, AuthStatus.SUCCESS),
    # "no" and no credential plugin: an untrusted scan
    "defectdojo__nessus_with_cvssv3.nessus": (ScanType.UNTRUSTED, AuthStatus.NOT_APPLICABLE),
    "defectdojo__nessus_many_vuln.xml": (ScanType.UNTRUSTED, AuthStatus.NOT_APPLICABLE),
    "defectdojo__issue_6992.nessus": (ScanType.UNTRUSTED, AuthStatus.NOT_APPLICABLE),
    "defectdojo__nessus_was_no_vuln.xml": (ScanType.UNTRUSTED, AuthStatus.NOT_APPLICABLE),
}


@pytest.mark.parametrize("name", sorted(SAMPLE_VERDICTS))
def test_sample_verdicts(name: str) -> None:
    path = samples_dir() / name
    if not path.exists():
        pytest.skip(f"sample {name} absent")
    _, verdict = SAMPLE_VERDICTS[name]
    assert parse_export(path, scan_type=None).validation.authentication_status is verdict


def test_sample_requested_authenticated_but_untrusted_output_fails() -> None:
    """with_cvssv3 says "Credentialed checks : no" (indented): if credentials were asked
    for, that host failed."""
    path = samples_dir() / "defectdojo__nessus_with_cvssv3.nessus"
    if not path.exists():
        pytest.skip("samples absent")
    r = parse_export(path, scan_type=AUTH, targets=["testphp.vulnweb.com"])
    assert r.validation.authentication_status is AuthStatus.FAILED
    assert r.hosts[0].evidence == [19506]
    assert not any("target" in w for w in r.validation.warnings)


# --- warnings that must be true ------------------------------------------------------------

PARANOID = "Paranoia level : 2"


def warnings_for(*hosts: HostFacts) -> list[str]:
    hs = list(hosts)
    return validate(hs, [assess_host(h, AUTH) for h in hs], scan_type=AUTH).warnings


def test_paranoid_warning_only_when_confirmation_plugins_decided() -> None:
    yes = info_19506("yes, as 'root' via ssh").replace("Paranoia level : 1", PARANOID)
    no = info_19506("no").replace("Paranoia level : 1", PARANOID)
    # 19506 says yes: nothing was overridden, nothing to warn about
    assert warnings_for(host({19506: [yes]})) == []
    # 19506 says no, 12634 (local checks ran) decided: the warning names what decided
    (w,) = warnings_for(host({19506: [no], 12634: ["Local checks have been enabled."]}))
    assert w.startswith(
        "Host 10.0.0.5: plugin 19506 says 'Credentialed checks : no' but plugin 12634 "
        "confirms a login and decided the verdict (Paranoid report settings"
    )
    assert "141118" not in w and "110095" not in w
    # 19506 says no and a failure plugin decided: no Paranoid story to tell
    assert not any("Paranoid" in w for w in warnings_for(host({19506: [no], 104410: [OUT_104410]})))


def test_paranoid_yes_export_has_no_paranoid_warning(tmp_path: Path) -> None:
    """libnessus_report_local2 (CC-BY-3.0, savon-noir/python-libnessus) with its 19506 set
    to Paranoia level 2: 19506 still says yes and no confirmation plugin is present."""
    src = samples_dir() / "libnessus__nessus_report_local2.nessus"
    if not src.exists():
        pytest.skip("samples absent")
    path = tmp_path / "paranoid.nessus"
    path.write_bytes(src.read_bytes().replace(b"Paranoia level : 1", PARANOID.encode()))
    r = parse_export(path, scan_type=AUTH)
    assert r.validation.authentication_status is AuthStatus.SUCCESS
    assert r.hosts[0].credentialed_checks == "yes"
    assert not any("Paranoid" in w for w in r.validation.warnings)


def test_19506_empty_or_without_the_credential_line_warns() -> None:
    no_line = "Information about this scan : \n\nNessus version : 10.1.1\nScan type : Normal\n"
    ws = warnings_for(
        HostFacts(name="a", outputs={19506: [None]}),
        HostFacts(name="b", outputs={19506: ["  \n"]}, credentialed_scan_tag="true"),
        HostFacts(name="c", outputs={19506: [no_line]}),
        HostFacts(name="d", outputs={}),
        HostFacts(name="e", outputs={19506: [info_19506("yes")]}),
    )
    assert ws == [
        "plugin 19506 (Nessus Scan Information) is absent on 1 host: d; "
        "scan settings unknown there",
        "plugin 19506 (Nessus Scan Information) has an empty output on 2 hosts: a, b; "
        "scan settings unknown there",
        "plugin 19506 (Nessus Scan Information) has no 'Credentialed checks' line on 1 "
        "host: c; whether credentialed checks ran is unknown there",
    ]


def test_19506_without_output_in_an_export_warns(tmp_path: Path) -> None:
    path = tmp_path / "empty19506.nessus"
    path.write_text(
        '<?xml version="1.0" ?><NessusClientData_v2><Report name="r">'
        '<ReportHost name="10.0.0.9"><HostProperties><tag name="host-ip">10.0.0.9</tag>'
        "</HostProperties>"
        '<ReportItem port="0" svc_name="general" protocol="tcp" severity="0" pluginID="19506" '
        'pluginName="Nessus Scan Information" pluginFamily="Settings"/>'
        "</ReportHost></Report></NessusClientData_v2>"
    )
    r = parse_export(path, scan_type=None)
    assert r.hosts[0].credentialed_checks is None
    assert any(
        "19506 (Nessus Scan Information) has an empty output on 1 host: 10.0.0.9" in w
        for w in r.validation.warnings
    )
