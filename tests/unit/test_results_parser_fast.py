"""The fast summary pass (``start`` events only) against the exact pass it stands in for:
the same ScanResults on every real export and on generated documents of any structure,
the same error on XML that is not well-formed, and back to the exact pass wherever it
cannot vouch for its result (issue 18)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nessus_pool.errors import NessusPoolError
from nessus_pool.models import ScanType
from nessus_pool.results import parser
from nessus_pool.results.parser import parse_export

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "nessus-samples"
SCAN_TYPES = [None, ScanType.AUTHENTICATED, ScanType.UNTRUSTED]


def sample_files() -> list[Any]:
    if not (SAMPLES / "manifest.json").is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no samples at {SAMPLES}"))]
    entries = json.loads((SAMPLES / "manifest.json").read_text())["files"]
    names = sorted({Path(e["file"]).name for e in entries})
    return [pytest.param(SAMPLES / n, id=n) for n in names if (SAMPLES / n).is_file()]


def exact(path: Path, **kw: Any) -> Any:
    """parse_export with the fast pass handing back at once: the exact pass alone."""
    with mock.patch.object(parser, "_summarise_fast", side_effect=parser._Reread):
        return parse_export(path, **kw)


@contextmanager
def exact_pass_counted() -> Iterator[list[int]]:
    """Counts the runs of the exact summary pass (still running it)."""
    runs: list[int] = []
    real = parser._summarise

    def counted(*args: Any) -> None:
        runs.append(1)
        real(*args)

    with mock.patch.object(parser, "_summarise", counted):
        yield runs


def outcome(parse: Any, path: Path, **kw: Any) -> str:
    """The result or the error, as text (repr: a NaN score equals itself)."""
    try:
        return repr(msgspec.to_builtins(parse(path, **kw)))
    except NessusPoolError as exc:
        return f"{type(exc).__name__}: {exc}"


def same_outcome(path: Path, **kw: Any) -> bool:
    """parse_export gives what the exact pass gives, result or error; returns whether the
    fast pass handed back to the exact pass."""
    want = outcome(exact, path, **kw)
    with exact_pass_counted() as runs:
        got = outcome(parse_export, path, **kw)
    assert got == want
    return bool(runs)


@pytest.mark.parametrize("path", sample_files())
@pytest.mark.parametrize("scan_type", SCAN_TYPES, ids=["inferred", "authenticated", "untrusted"])
def test_real_exports_same_as_exact_pass(path: Path, scan_type: ScanType | None) -> None:
    handed_back = same_outcome(path, scan_type=scan_type, targets=["10.0.0.0/8", "192.168.1.1"])
    assert not handed_back  # the fast pass read it


# --- generated documents ---------------------------------------------------------------------

CM = "http://www.nessus.org/cm"
TEXTS = [
    "",
    " ",
    "\n  ",
    "7.5",
    " 9.8 ",
    "10.0",
    "nan",
    "x",
    "true",
    " TRUE ",
    "false",
    "PASSED",
    " failed ",
    "WARNING",
    "ERROR",
    "Credentialed checks : yes\nNessus version : 10.4.1\n",
    "Credentialed checks : no",
    "Mon Jul  1 11:33:11 2013",
    "Tue Jul  2 08:00:00 2013",
    "2013-07-01T10:00:00+00:00",
    "a &amp; b &lt;c&gt;",
    "<![CDATA[ true ]]>",
    "<!-- c -->",
    "<?pi x?>",
]
PROPERTY_NAMES = [*sorted(parser._PROPERTIES), "other"]
PLUGIN_IDS = ["19506", "21745", "10180", "117887", "110095", "1", "0019506", "x", None]
FAMILIES = ["General", "Policy Compliance", "Windows : Compliance", None]
SEVERITIES = ["0", "1", "2", "3", "4", "5", "-1", "x", None]


def attrs(pairs: dict[str, str | None]) -> str:
    return "".join(f' {k}="{v}"' for k, v in pairs.items() if v is not None)


texts = st.sampled_from(TEXTS)
#: the children the passes read, loose: anywhere an element may be
children = st.builds(
    lambda t, x: f"<{t}>{x}</{t}>",
    st.sampled_from(
        ["cvss3_base_score", "exploit_available", "plugin_output", "cm:compliance-result", "tag"]
    ),
    texts,
)


@st.composite
def report_item(draw: st.DrawFn, inner: st.SearchStrategy[str]) -> str:
    a = attrs(
        {
            "port": draw(st.sampled_from(["22", "0", "x"])),
            "severity": draw(st.sampled_from(SEVERITIES)),
            "pluginID": draw(st.sampled_from(PLUGIN_IDS)),
            "pluginFamily": draw(st.sampled_from(FAMILIES)),
        }
    )
    kids = draw(
        st.lists(
            st.one_of(
                st.builds(
                    lambda t, x: f"<{t}>{x}</{t}>",
                    st.sampled_from(
                        [
                            "cvss3_base_score",
                            "exploit_available",
                            "plugin_output",
                            "cm:compliance-result",
                        ]
                    ),
                    texts,
                ),
                texts,
                inner,
            ),
            max_size=5,
        )
    )
    return f"<ReportItem{a}>{''.join(kids)}</ReportItem>"


@st.composite
def host_properties(draw: st.DrawFn, inner: st.SearchStrategy[str]) -> str:
    tags = draw(
        st.lists(
            st.one_of(
                st.builds(
                    lambda n, x: f'<tag name="{n}">{x}</tag>',
                    st.sampled_from(PROPERTY_NAMES),
                    texts,
                ),
                inner,
            ),
            max_size=5,
        )
    )
    return f"<HostProperties>{''.join(tags)}</HostProperties>"


def elements(depth: int) -> st.SearchStrategy[str]:
    """Any element the passes look at, nested anywhere (depth levels deep)."""
    inner: st.SearchStrategy[str] = (
        st.just("<foo/>") if depth <= 0 else st.deferred(lambda: elements(depth - 1))
    )
    return st.one_of(
        report_item(inner),
        host_properties(inner),
        st.builds(
            lambda n, k: f"<ReportHost{attrs({'name': n})}>{''.join(k)}</ReportHost>",
            st.sampled_from(["h1", "h2", "", None]),
            st.lists(inner, max_size=4),
        ),
        st.builds(lambda k: f"<Policy>{''.join(k)}</Policy>", st.lists(inner, max_size=2)),
        st.builds(lambda k: f"<foo>{''.join(k)}</foo>", st.lists(inner, max_size=3)),
        children,
        texts,
    )


@st.composite
def regular_host(draw: st.DrawFn) -> str:
    """A ReportHost as Nessus writes one (what the fast pass reads without handing back)."""
    name = draw(st.sampled_from(["h1", "h2", "10.0.0.5", "", None]))
    props = draw(host_properties(st.just("")))
    items = draw(st.lists(report_item(st.just("")), max_size=6))
    return f"<ReportHost{attrs({'name': name})}>{props}{''.join(items)}</ReportHost>\n"


def document(body: str) -> str:
    return (
        f'<?xml version="1.0"?>\n<NessusClientData_v2 xmlns:cm="{CM}">'
        f"<Policy><policyName>p</policyName></Policy>{body}</NessusClientData_v2>"
    )


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(hosts=st.lists(regular_host(), max_size=6), scan_type=st.sampled_from(SCAN_TYPES))
def test_regular_structure_read_by_the_fast_pass(
    tmp_path: Path, hosts: list[str], scan_type: ScanType | None
) -> None:
    path = tmp_path / "regular.nessus"
    path.write_text(document(f'<Report name="r">{"".join(hosts)}</Report>'))
    assert not same_outcome(path, scan_type=scan_type, targets=["h1", "10.0.0.0/24"])


@FUZZ
@given(body=st.lists(elements(3), max_size=6), scan_type=st.sampled_from(SCAN_TYPES))
def test_any_structure_same_as_exact_pass(
    tmp_path: Path, body: list[str], scan_type: ScanType | None
) -> None:
    path = tmp_path / "any.nessus"
    path.write_text(document(f'<Report name="r">{"".join(body)}</Report>{"".join(body[:1])}'))
    same_outcome(path, scan_type=scan_type)


@FUZZ
@given(hosts=st.lists(regular_host(), min_size=1, max_size=4), cut=st.floats(0.05, 0.999))
def test_not_well_formed_same_error(tmp_path: Path, hosts: list[str], cut: float) -> None:
    text = document(f'<Report name="r">{"".join(hosts)}</Report>')
    path = tmp_path / "cut.nessus"
    path.write_text(text[: max(40, int(len(text) * cut))])
    same_outcome(path, scan_type=None)


# --- what the fast pass hands back -------------------------------------------------------------

ITEM = (
    '<ReportItem severity="3" pluginID="1" pluginFamily="General">'
    "<cvss3_base_score>{cvss}</cvss3_base_score>{inner}"
    "<exploit_available>true</exploit_available></ReportItem>"
)


@pytest.mark.parametrize(
    "inner",
    [
        ITEM.format(cvss="9.0", inner=""),
        "<foo>" + ITEM.format(cvss="9.0", inner="") + "</foo>",
        "<HostProperties><tag name='host-ip'>10.9.9.9</tag></HostProperties>",
        "<Policy/>",
        "<ReportHost name='inner'/>",
    ],
    ids=["item-in-item", "item-deeper-in-item", "properties-in-item", "policy-in-item", "host"],
)
def test_nested_elements_handed_back(tmp_path: Path, inner: str) -> None:
    """Elements inside a ReportItem: the exact pass frees the inner one (and the item's
    children before it) before it reads the item; the fast pass hands such files back."""
    host = (
        '<ReportHost name="h"><HostProperties><tag name="host-ip">10.0.0.1</tag>'
        "</HostProperties>"
        + ITEM.format(cvss="7.0", inner="")
        + ITEM.format(cvss="5.0", inner=inner)
        + "</ReportHost>"
    )
    first = host.replace('name="h"', 'name="g"')
    path = tmp_path / "nested.nessus"
    # the first host is read and handed on before the nesting shows: none of it may count twice
    path.write_text(document(f'<Report name="r">{first}{host}</Report>'))
    assert same_outcome(path, scan_type=None)


def test_property_tags_inside_an_item_handed_back(tmp_path: Path) -> None:
    item = ITEM.format(cvss="1.0", inner="<HostProperties/>")
    path = tmp_path / "p.nessus"
    path.write_text(document(f'<Report name="r"><ReportHost name="h">{item}</ReportHost></Report>'))
    assert same_outcome(path, scan_type=ScanType.UNTRUSTED)


def test_dtd_handed_back(tmp_path: Path) -> None:
    """open_checked refuses a DOCTYPE before any pass; should one reach the fast pass, it
    hands the file back (and the exact pass raises UnsafeXmlError)."""
    path = tmp_path / "dtd.nessus"
    path.write_text(
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]>'
        "<NessusClientData_v2><Report name='&a;'><ReportHost name='h'/></Report>"
        "</NessusClientData_v2>"
    )
    sink = parser._HostSink(None, None, None, 10)
    with pytest.raises(parser._Reread):
        parser._summarise_fast(path, sink, parser._Totals())


def test_items_outside_hosts_and_empty_hosts(tmp_path: Path) -> None:
    body = (
        '<Report name="r">'
        + ITEM.format(cvss="9.9", inner="")
        + '<ReportHost name="a"/><ReportHost name="b"><HostProperties/></ReportHost>'
        + '<ReportHost name="b">'
        + ITEM.format(cvss="2.0", inner="")
        + "</ReportHost></Report>"
        + ITEM.format(cvss="3.0", inner="")
    )
    path = tmp_path / "odd.nessus"
    path.write_text(document(body))
    assert not same_outcome(path, scan_type=None)


def test_many_items_in_one_host(tmp_path: Path) -> None:
    """Ended items are freed in steps of _FAST_FREE_EVERY: counts across the steps."""
    items = "".join(
        ITEM.format(cvss=f"{i % 10}.5", inner="") for i in range(3 * parser._FAST_FREE_EVERY + 7)
    )
    path = tmp_path / "many.nessus"
    path.write_text(
        document(f'<Report name="r"><ReportHost name="h">{items}</ReportHost></Report>')
    )
    assert not same_outcome(path, scan_type=None)
    assert parse_export(path, scan_type=None).summary.findings_total == 3 * 128 + 7


def test_repeated_children(tmp_path: Path) -> None:
    """The last cvss3_base_score and exploit_available count, the first compliance result;
    the same children one level deeper do not."""
    item = (
        '<ReportItem severity="2" pluginID="5" pluginFamily="Policy Compliance">'
        "<cvss3_base_score>9.9</cvss3_base_score><cvss3_base_score>4.0</cvss3_base_score>"
        "<exploit_available>true</exploit_available><exploit_available>no</exploit_available>"
        "<cm:compliance-result>FAILED</cm:compliance-result>"
        "<cm:compliance-result>PASSED</cm:compliance-result>"
        "<foo><cvss3_base_score>10.0</cvss3_base_score>"
        "<cm:compliance-result>WARNING</cm:compliance-result></foo></ReportItem>"
    )
    path = tmp_path / "repeated.nessus"
    path.write_text(document(f'<Report name="r"><ReportHost name="h">{item}</ReportHost></Report>'))
    assert not same_outcome(path, scan_type=None)
    s = parse_export(path, scan_type=None).summary
    assert (s.max_cvss3, s.exploitable_total) == (4.0, 0)
    assert s.compliance is not None and (s.compliance.failed, s.compliance.total) == (1, 1)


def test_read_error_handed_back(tmp_path: Path) -> None:
    """A read that fails in the fast pass: the exact pass reads the file again (and its
    error, should it fail too, is the one raised)."""
    path = tmp_path / "r.nessus"
    path.write_text(document('<Report name="r"><ReportHost name="h"/></Report>'))
    with (
        mock.patch.object(parser._Chunks, "read", side_effect=OSError(5, "Input/output error")),
        exact_pass_counted() as runs,
    ):
        assert parse_export(path, scan_type=None).summary.hosts_scanned == 1
    assert runs == [1]


# --- round four: the open item apart, severities counted per run, pluginIDs remembered -------


def item_xml(severity: str | None, plugin_id: str | None, inner: str = "") -> str:
    return f"<ReportItem{attrs({'severity': severity, 'pluginID': plugin_id})}>{inner}</ReportItem>"


def test_severities_counted_across_runs_and_free_steps(tmp_path: Path) -> None:
    """Severities are counted per run of sibling items and at each free step: unusual
    values anywhere in a run, runs cut by HostProperties, a Policy, a stray child or a
    host's end, and a run longer than three steps."""
    odd = ["0", "1", "2", "3", "4", "5", "-1", "x", None, " 3", "03", "4 "]
    long_run = "".join(
        item_xml(odd[i % len(odd)], "1") for i in range(3 * parser._FAST_FREE_EVERY + 5)
    )
    hosts = (
        f'<ReportHost name="a">{item_xml("2", "1")}<HostProperties/>{item_xml(None, "1")}'
        f"<cvss3_base_score>9.0</cvss3_base_score>{item_xml('x', '1')}<Policy/>"
        f"{item_xml('4', '1')}</ReportHost>"
        f'<ReportHost name="b">{long_run}</ReportHost>'
        f'<ReportHost name="a">{item_xml("3", "1")}</ReportHost>'
    )
    path = tmp_path / "runs.nessus"
    path.write_text(document(f'<Report name="r">{hosts}{item_xml("1", "1")}</Report>'))
    assert not same_outcome(path, scan_type=None)


@pytest.mark.parametrize(
    "plugin_id",
    ["19506", "0019506", " 19506 ", "+19506", "19_506", "\u0661\u0669\u0665\u0660\u0666", "1" * 40],
)
def test_plugin_ids_read_as_int_reads_them(tmp_path: Path, plugin_id: str) -> None:
    """Every text int() reads as an authentication plugin's id is one (and a long one is
    not remembered); the same text twice reads the same."""
    output = "<plugin_output>Credentialed checks : yes</plugin_output>"
    items = item_xml("0", plugin_id, output) + item_xml("1", plugin_id, output)
    path = tmp_path / "ids.nessus"
    path.write_text(
        document(f'<Report name="r"><ReportHost name="h">{items}</ReportHost></Report>')
    )
    assert not same_outcome(path, scan_type=None)


def test_the_plugin_id_memo_is_bounded(tmp_path: Path) -> None:
    """A file with more distinct pluginIDs than the memo holds: the memo is emptied and
    the ids read again, with the same result."""
    items = "".join(
        item_xml("2", str(i), "<plugin_output>x</plugin_output>")
        for i in [*range(19490, 19520), 19506, 21745, 19506]
    )
    path = tmp_path / "memo.nessus"
    path.write_text(
        document(f'<Report name="r"><ReportHost name="h">{items}</ReportHost></Report>')
    )
    with mock.patch.object(parser, "_AUTH_MEMO_MAX", 4):
        assert not same_outcome(path, scan_type=ScanType.AUTHENTICATED)


@pytest.mark.parametrize(
    "children",
    [
        "<plugin_output>first</plugin_output><plugin_output>last</plugin_output>",
        "<plugin_output>only</plugin_output><!-- after -->",
        "<plugin_output>only</plugin_output><?pi after?>",
        "<plugin_output>only</plugin_output><see_also>x</see_also>",
        "<plugin_output>kept</plugin_output><cm:plugin_output>not this</cm:plugin_output>",
        "<plugin_output/>",
        "<plugin_output>a<!-- c -->b</plugin_output>",
        "<foo><plugin_output>deeper</plugin_output></foo>",
        "",
    ],
)
def test_the_last_plugin_output_of_an_auth_item(tmp_path: Path, children: str) -> None:
    """The fast pass looks at the item's last child first; whatever comes last, it reads
    the output the exact pass reads."""
    items = item_xml("0", "19506", children) + item_xml("0", "21745", children)
    path = tmp_path / "output.nessus"
    path.write_text(
        document(f'<Report name="r"><ReportHost name="h">{items}</ReportHost></Report>')
    )
    assert not same_outcome(path, scan_type=None)
    assert not same_outcome(path, scan_type=ScanType.AUTHENTICATED)


@pytest.mark.parametrize(
    "inner",
    ["<foo><Policy/></foo>", "<foo><HostProperties/></foo>", "<foo><ReportHost name='x'/></foo>"],
)
def test_handled_elements_deeper_in_an_item_handed_back(tmp_path: Path, inner: str) -> None:
    """A handled element anywhere inside the open item (not only as its child) hands the
    file back: the exact pass reads it before the item."""
    items = item_xml("3", "1") + item_xml("2", "1", inner) + item_xml("1", "1")
    path = tmp_path / "deep.nessus"
    path.write_text(
        document(f'<Report name="r"><ReportHost name="h">{items}</ReportHost></Report>')
    )
    assert same_outcome(path, scan_type=None)
