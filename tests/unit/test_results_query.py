"""Findings queries, JSON-NL and scan diffs: examples and properties."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nessus_pool.errors import ValidationError
from nessus_pool.results.parser import Finding
from nessus_pool.results.query import (
    ALL_FIELDS,
    PROFILES,
    FindingsQuery,
    diff_findings,
    matches,
    parse_query,
    query_findings,
    to_jsonl,
)


def mk(host: str = "10.0.0.1", plugin_id: int = 1, severity: int = 2, **kw: Any) -> Finding:
    base: dict[str, Any] = {
        "host": host,
        "host_ip": host if host[0].isdigit() else None,
        "port": 22,
        "protocol": "tcp",
        "svc_name": "ssh",
        "severity": severity,
        "plugin_id": plugin_id,
        "plugin_name": f"Plugin {plugin_id}",
        "plugin_family": "General",
    }
    return Finding(**(base | kw))


findings_st = st.lists(
    st.builds(
        mk,
        host=st.sampled_from(["10.0.0.1", "10.0.0.10", "10.1.0.1", "web", "web.lan"]),
        plugin_id=st.integers(1, 6),
        severity=st.integers(0, 4),
        port=st.sampled_from([0, 22, 443]),
        protocol=st.sampled_from(["tcp", "udp"]),
        plugin_family=st.sampled_from(["General", "Web Servers"]),
        cvss3_base_score=st.none() | st.sampled_from([3.1, 5.0, 7.5, 9.8]),
        cves=st.lists(st.sampled_from(["CVE-2020-1", "CVE-2021-2"]), max_size=2),
        cwes=st.lists(st.sampled_from([20, 79, 352]), max_size=2),
        exploit_available=st.booleans(),
        plugin_name=st.sampled_from(["OpenSSH < 9", "Apache httpd", "TLS Version"]),
    ),
    max_size=40,
)
queries_st = st.builds(
    FindingsQuery,
    min_severity=st.none() | st.integers(0, 4) | st.sampled_from(["high", "Critical", "info"]),
    severities=st.none() | st.lists(st.integers(0, 4), min_size=1, max_size=3),
    min_cvss3=st.none() | st.sampled_from([0.0, 5.0, 9.0]),
    host=st.none() | st.sampled_from(["10.0.0.1", "10.0.0.0/24", "web", "WEB.LAN", "10.1.0.0/16"]),
    port=st.none() | st.sampled_from([22, 443]),
    protocol=st.none() | st.sampled_from(["TCP", "udp"]),
    plugin_id=st.none() | st.integers(1, 6),
    plugin_family=st.none() | st.sampled_from(["general", "Web Servers"]),
    cve=st.none() | st.sampled_from(["cve-2020-1", "CVE-2021-2"]),
    cwe=st.none() | st.sampled_from([79, "79", "CWE-352", "cwe-20"]),
    exploit_available=st.none() | st.booleans(),
    text=st.none() | st.sampled_from(["openssh", "TLS", "x"]),
    page_size=st.integers(1, 7),
    profile=st.just("full"),
)


@settings(max_examples=200)
@given(findings_st, queries_st)
def test_filter_never_returns_a_violating_finding(fs: list[Finding], q: FindingsQuery) -> None:
    page = query_findings(fs, q)
    for item in page.items:
        assert matches(msgspec.convert(item, Finding), q)
    assert page.total == sum(1 for f in fs if matches(f, q))


@settings(max_examples=100)
@given(findings_st, queries_st)
def test_pages_partition_the_result(fs: list[Finding], q: FindingsQuery) -> None:
    first = query_findings(fs, q)
    seen: list[Any] = []
    for n in range(1, first.pages + 1):
        page = query_findings(fs, msgspec.structs.replace(q, page=n))
        assert page.has_more == (n < first.pages)
        assert len(page.items) <= q.page_size
        seen.extend(page.items)
    expected = [msgspec.to_builtins(f) for f in fs if matches(f, q)]
    got = sorted(json.dumps(d, sort_keys=True) for d in msgspec.to_builtins(seen))
    assert got == sorted(json.dumps(d, sort_keys=True) for d in expected)


def test_default_sort_and_profiles() -> None:
    fs = [
        mk(severity=2, cvss3_base_score=5.0),
        mk(host="b", severity=4),
        mk(plugin_id=7, severity=2, cvss3_base_score=6.0),
        mk(severity=0),
    ]
    page = query_findings(fs, FindingsQuery(profile="minimal"))
    assert [(i["severity"], i["plugin_id"]) for i in page.items] == [(4, 1), (2, 7), (2, 1), (0, 1)]
    assert list(page.items[0]) == list(PROFILES["minimal"])
    assert set(PROFILES["minimal"]) < set(PROFILES["summary"]) < set(PROFILES["brief"])
    assert PROFILES["full"] == ALL_FIELDS
    custom = query_findings(fs, FindingsQuery(profile="custom", fields=["host", "cves"]))
    assert list(custom.items[0]) == ["host", "cves"]


def test_host_filter_has_no_substring_surprises() -> None:
    fs = [mk("10.0.0.1"), mk("10.0.0.10"), mk("web"), mk("webserver", host_fqdn="webserver.lan")]

    def hosts(q: FindingsQuery) -> set[str]:
        return {i["host"] for i in query_findings(fs, q).items}

    assert hosts(FindingsQuery(host="10.0.0.1")) == {"10.0.0.1"}
    assert hosts(FindingsQuery(host="10.0.0.0/28")) == {"10.0.0.1", "10.0.0.10"}
    assert hosts(FindingsQuery(host="WEB")) == {"web"}
    assert hosts(FindingsQuery(host="webserver.lan")) == {"webserver"}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"page": 0}, "page"),
        ({"page_size": 501}, "page_size"),
        ({"min_severity": "severe"}, "min_severity"),
        ({"min_severity": 5}, "min_severity"),
        ({"severities": ["high", 9]}, "severities"),
        ({"host": "10.0.0.0/33"}, "host"),
        ({"profile": "custom"}, "fields"),
        ({"profile": "custom", "fields": ["nope"]}, "fields"),
        ({"fields": ["host"]}, "fields"),
        ({"min_cvss3": 11}, "min_cvss3"),
        ({"bogus": 1}, "bogus"),
        ({"page": "x"}, "page"),
        ({"profile": "huge"}, "profile"),
        ({"cwe": "XSS"}, "cwe"),
        ({"cwe": True}, "cwe"),
        ({"cwe": "-79"}, "cwe"),
    ],
)
def test_validation_errors_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as ei:
        parse_query(raw)
    assert ei.value.field == field


def test_severity_names() -> None:
    q = parse_query({"min_severity": "High", "severities": ["critical", 3, "3"]})
    assert (q.min_severity, q.severities) == (3, [3, 4])


def test_to_jsonl_shape() -> None:
    page = query_findings([mk(), mk(plugin_id=2)], FindingsQuery(profile="minimal", page_size=1))
    lines = [
        json.loads(line)
        for line in to_jsonl(page, task_id="t1", metadata={"pool": "lan"}).splitlines()
    ]
    assert lines[0] == {"type": "schema", "profile": "minimal", "fields": list(PROFILES["minimal"])}
    assert lines[1] == {"type": "metadata", "task_id": "t1", "pool": "lan"}
    assert lines[2]["type"] == "finding" and set(lines[2]) == {"type", *PROFILES["minimal"]}
    assert lines[3] == {
        "type": "pagination",
        "page": 1,
        "page_size": 1,
        "total": 2,
        "pages": 2,
        "has_more": True,
    }


def test_diff_findings() -> None:
    old = [mk(plugin_id=1), mk(plugin_id=2, severity=3), mk(plugin_id=3), mk(plugin_id=3)]
    new = [
        mk(plugin_id=1),
        mk(plugin_id=2, severity=1),
        mk(plugin_id=4, severity=4),
        mk(plugin_id=5, severity=0),
    ]
    d = diff_findings(old, new)
    assert (d.new_total, d.fixed_total, d.unchanged_total, d.changed_severity_total) == (2, 1, 1, 1)
    assert [f["plugin_id"] for f in d.new] == [4, 5]
    assert [f["plugin_id"] for f in d.fixed] == [3]
    (c,) = d.changed_severity
    assert (c.plugin_id, c.old_severity, c.new_severity) == (2, 3, 1)
    bounded = diff_findings([], [mk(plugin_id=i) for i in range(10)], limit=3)
    assert bounded.new_total == 10 and len(bounded.new) == 3 and bounded.truncated


@given(findings_st, findings_st)
def test_diff_counts_add_up(old: list[Finding], new: list[Finding]) -> None:
    d = diff_findings(old, new)

    def keys(fs: list[Finding]) -> set[tuple[str, int, int, str]]:
        return {(f.host, f.plugin_id, f.port, f.protocol) for f in fs}

    assert d.new_total + d.unchanged_total + d.changed_severity_total == len(keys(new))
    gone = d.fixed_total + d.not_rescanned_total
    assert gone + d.unchanged_total + d.changed_severity_total == len(keys(old))
    # fixed only on a host the new scan scanned
    assert {f["host"] for f in d.fixed} <= {f.host for f in new}
    assert not {f["host"] for f in d.not_rescanned} & {f.host for f in new}


def test_diff_findings_on_a_host_the_new_scan_did_not_scan_are_not_rescanned() -> None:
    old = [mk(host="10.0.0.1", plugin_id=1), mk(host="10.0.0.2", plugin_id=1, severity=3)]
    new = [mk(host="10.0.0.1", plugin_id=2)]
    d = diff_findings(old, new)
    assert (d.new_total, d.fixed_total, d.not_rescanned_total) == (1, 1, 1)
    assert [(f["host"], f["plugin_id"]) for f in d.not_rescanned] == [("10.0.0.2", 1)]
    assert d.hosts_not_rescanned == ["10.0.0.2"] and d.hosts_new == []
    # a host the export listed with no finding was scanned: its old findings are fixed
    d = diff_findings(old, new, new_hosts=["10.0.0.1", "10.0.0.2"])
    assert (d.fixed_total, d.not_rescanned_total, d.hosts_not_rescanned) == (2, 0, [])


def test_host_filter_takes_a_url_host_as_a_name() -> None:
    """Web App Scanning exports name hosts by URL: a "/" does not make a CIDR."""
    url = "http://google.com/"
    fs = [mk(url, host_fqdn=url), mk("https://a.example/app/", plugin_id=2), mk("10.0.0.1")]

    def hosts(spec: str) -> list[str]:
        return [i["host"] for i in query_findings(fs, parse_query({"host": spec})).items]

    assert hosts(url) == [url]
    assert hosts("HTTP://Google.com/") == [url]
    assert hosts("https://a.example/app/") == ["https://a.example/app/"]
    assert hosts("http://google.com") == []  # exact, not a prefix or substring
    assert hosts("10.0.0.0/8") == ["10.0.0.1"]
    assert hosts("fe80::/10") == []
    for bad in ("10.0.0.0/33", "10.0.0.1/x", "fe80::/129"):
        with pytest.raises(ValidationError, match="invalid CIDR") as ei:
            parse_query({"host": bad})
        assert ei.value.field == "host"


def test_cwe_filter_and_profiles() -> None:
    fs = [mk(plugin_id=1, cwes=[20, 79]), mk(plugin_id=2, cwes=[352]), mk(plugin_id=3)]
    for spec in (79, "79", "CWE-79", "cwe-79"):
        page = query_findings(fs, parse_query({"cwe": spec, "profile": "summary"}))
        assert [(i["plugin_id"], i["cwes"]) for i in page.items] == [(1, [20, 79])]
    brief = query_findings(fs, parse_query({"profile": "brief", "sort": "plugin_id"}))
    assert [i["cwes"] for i in brief.items] == [[20, 79], [352], []]
    assert "cwes" not in query_findings(fs, FindingsQuery(profile="minimal")).items[0]


def test_unknown_fields_message_counts_right() -> None:
    with pytest.raises(ValidationError, match=r"^unknown field nope; known: host, "):
        parse_query({"profile": "custom", "fields": ["nope"]})
    with pytest.raises(ValidationError, match=r"^unknown fields a, b; known: "):
        parse_query({"profile": "custom", "fields": ["host", "a", "b"]})
