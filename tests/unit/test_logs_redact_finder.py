"""Issue 18: log redaction finds secret prefixes with one regular expression (a trie) while
they are few, and walks the text position by position when they are many; both give what a
plain reading of the rule gives: at each position the longest registered secret starting
there is masked, and the scan goes on after it."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nessus_pool import logs
from nessus_pool.logs import MIN_SECRET_CHARS, _SecretIndex, _trie_pattern

MASK = "[REDACTED]"


def reference(text: str, secrets: set[str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        hits = [s for s in secrets if len(s) >= MIN_SECRET_CHARS and text.startswith(s, i)]
        if hits:
            longest = max(hits, key=len)
            out.append(MASK)
            i += len(longest)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


# a small alphabet (with regular-expression metacharacters) so that secrets share prefixes
# and occur in the texts
ALPHABET = "ab.*(|\\é" + string.digits[:2]
secret_st = st.text(ALPHABET, min_size=MIN_SECRET_CHARS, max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    secrets=st.lists(secret_st, min_size=1, max_size=6),
    removed=st.integers(min_value=0, max_value=2),
    pieces=st.lists(st.one_of(st.text(ALPHABET, max_size=6), secret_st), max_size=8),
)
def test_redaction_matches_the_rule(secrets: list[str], removed: int, pieces: list[str]) -> None:
    index = _SecretIndex()
    half = len(secrets) // 2
    for s in secrets[:half]:
        index.add(s)
    index.redact("warm the finder up")  # compiled now: the adds below must rebuild it
    for s in secrets[half:]:
        index.add(s)
    index.redact("and again")  # removals below leave the finder stale (a superset)
    gone = set(secrets[:removed])
    for s in gone:
        while s in index._refs:
            index.remove(s)
    text = "".join(pieces)
    assert index.redact(text) == reference(text, set(secrets) - gone)


@pytest.mark.parametrize("count", [3, 300])
def test_few_and_many_secrets_give_the_same_answer(count: int) -> None:
    index = _SecretIndex()
    secrets = [f"{i:04d}-secret-{i * 7919:06d}" for i in range(count)]
    for s in secrets:
        index.add(s)
    text = f"key {secrets[-1]} and {secrets[0]}x and 0000-secret and {secrets[1][:-1]}"
    want = reference(text, set(secrets))
    assert MASK in want
    assert index.redact(text) == want
    # with many prefixes there is no expression: the walk does the work
    assert (index._finder is None) == (count > logs._FINDER_MAX)


def test_the_trie_pattern_matches_exactly_its_words() -> None:
    import re

    words = ["abcdefgh", "abcdxxxx", "a.c*e(g|", "zzzzzzzz"]
    rx = re.compile(_trie_pattern(words))
    for w in words:
        assert rx.fullmatch(w) is not None
    for other in ["abcdefgx", "a.cxe(g|", "abcd", ""]:
        assert rx.fullmatch(other) is None
    assert re.compile(_trie_pattern([])).search("anything") is None
