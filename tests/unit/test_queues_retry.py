"""Pure logic: queue order and positions, slot caps, selection, retry policy, breaker."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from nessus_pool import targets as tg
from nessus_pool.errors import (
    PermanentScannerError,
    RateLimitedError,
    ScanApiUnavailableError,
    TransientScannerError,
    ValidationError,
)
from nessus_pool.models import Task
from nessus_pool.queues import PoolQueue, ScannerSlots, select_scanner
from nessus_pool.retry import BreakerState, CircuitBreaker, RetryPolicy
from nessus_pool.targets import parse_targets, total_addresses


def task(seq: int, priority: int = 0) -> Task:
    return Task(
        task_id=f"t{seq}",
        seq=seq,
        pool="p",
        priority=priority,
        name="n",
        targets=["10.0.0.1"],
        created_at_ms=0,
        updated_at_ms=0,
    )


@given(st.lists(st.tuples(st.integers(-3, 3), st.booleans()), max_size=60))
def test_queue_orders_by_priority_then_fifo(ops: list[tuple[int, bool]]) -> None:
    q = PoolQueue()
    live: dict[str, Task] = {}
    for seq, (prio, remove_one) in enumerate(ops):
        t = task(seq, prio)
        q.push(t)
        live[t.task_id] = t
        if remove_one and live:
            victim = sorted(live)[0]
            assert q.remove(victim)
            del live[victim]
    expected = sorted(live.values(), key=lambda t: (-t.priority, t.seq))
    assert list(q) == [t.task_id for t in expected]
    for i, t in enumerate(expected, start=1):
        assert q.position(t.task_id) == i
    assert len(q) == len(live)


@given(
    st.dictionaries(st.integers(0, 80), st.integers(-3, 3), max_size=60),
    st.randoms(use_true_random=False),
)
def test_queue_extend_matches_one_push_at_a_time(
    priorities: dict[int, int], rnd: random.Random
) -> None:
    """Recovery rebuilds a queue with one sort; it must equal pushing the tasks one by one,
    whatever order they arrive in, a task given twice counting once."""
    unique = [task(seq, prio) for seq, prio in priorities.items()]
    tasks = unique + rnd.sample(unique, len(unique) // 3)
    rnd.shuffle(tasks)
    pushed = PoolQueue()
    for t in tasks:
        pushed.push(t)
    extended = PoolQueue()
    first, rest = tasks[: len(tasks) // 2], tasks[len(tasks) // 2 :]
    for t in first:
        extended.push(t)
    rnd.shuffle(rest)
    extended.extend(rest)
    assert list(extended) == list(pushed)
    assert len(extended) == len(pushed) == len({t.task_id for t in tasks})
    for t in tasks:
        assert extended.position(t.task_id) == pushed.position(t.task_id)


def test_slots_never_exceed_capacity_and_selection_prefers_least_loaded() -> None:
    a = ScannerSlots("a", "p", capacity=2, reachable=True)
    b = ScannerSlots("b", "p", capacity=4, reachable=True)
    a.reserve("t1", 1, now_ms=1)
    assert select_scanner([a, b]) is b  # 1/2 > 0/4
    b.reserve("t2", 1, now_ms=2)
    b.reserve("t3", 1, now_ms=3)
    assert select_scanner([a, b]) is a  # 1/2 == 2/4, fewer hosts in flight
    a.reserve("t4", 1, now_ms=4)
    with pytest.raises(RuntimeError):
        a.reserve("t5", 1, now_ms=5)
    assert select_scanner([a, b], requested="a") is None
    b.draining = True
    assert select_scanner([a, b]) is None
    assert a.release("t1") and not a.release("t1")


def test_retry_policy_classifies_errors() -> None:
    p = RetryPolicy(max_attempts=3, base_delay_s=1, max_delay_s=10)
    assert p.should_retry(TransientScannerError("x"), 1)
    assert p.should_retry(TransientScannerError("x"), 2)
    assert not p.should_retry(TransientScannerError("x"), 3)
    assert not p.should_retry(PermanentScannerError("x", status=400), 1)
    assert not p.should_retry(ScanApiUnavailableError(status=412), 1)
    assert p.should_retry(RateLimitedError(retry_after_s=7), 99)
    rng = random.Random(1)
    assert p.wait_s(RateLimitedError(retry_after_s=7), 1, rng) == 7
    for attempt in range(1, 10):
        d = p.delay_s(attempt, rng)
        assert 0 <= d <= min(10, 2 ** (attempt - 1))


def test_breaker_opens_half_opens_and_closes() -> None:
    b = CircuitBreaker(threshold=3, reset_s=10)
    for _ in range(3):
        assert b.allow(0)
        b.failure(0)
    assert b.state is BreakerState.OPEN and not b.allow(5)
    assert b.allow(10)
    assert b.state.name == "HALF_OPEN"
    b.failure(10)
    assert b.state is BreakerState.OPEN and not b.allow(15)
    assert b.allow(20)
    b.success()
    assert b.state.name == "CLOSED" and b.allow(20)


def test_targets_parse_strictly() -> None:
    assert parse_targets("10.0.0.1, 10.0.0.0/30\nhost.Example.com 10.0.0.5-7") == [
        "10.0.0.1",
        "10.0.0.0/30",
        "host.example.com",
        "10.0.0.5-10.0.0.7",
    ]
    assert total_addresses(["10.0.0.0/30", "10.0.0.5-10.0.0.7", "h"]) == 8

    for bad in ("", "10.0.0.300", "a b/c", "10.0.0.9-10.0.0.1", "-bad-.com"):
        with pytest.raises(ValidationError):
            parse_targets(bad)
    with pytest.raises(ValidationError, match="more than 256"):
        parse_targets("10.0.0.0/23", max_addresses=256)
    # digits of other scripts are not an address (they passed as one before: "\\d")
    for lookalike in ("\u0661\u0660.0.0.1", "10.0.0.\u0661", "\uff11.0.0.1"):
        with pytest.raises(ValidationError, match="not an IP address"):
            parse_targets(lookalike)


_OCTETS = st.one_of(
    st.integers(min_value=0, max_value=300).map(str),
    st.from_regex(r"\A[0-9\u0660-\u0669]{1,4}\Z"),
)
_QUADISH = st.tuples(
    st.lists(_OCTETS, min_size=3, max_size=5).map(".".join),
    st.sampled_from(["", " ", ",", "\n", "/24", "-5", ".", " 10.0.0.2"]),
).map("".join)


@given(
    st.one_of(_QUADISH, st.ip_addresses(v=4).map(str), st.text(max_size=20)),
    st.integers(min_value=0, max_value=3),
)
@example("300.0.0.1", 1)
@example("010.0.0.1", 1)
@example("10.0.0.1", 0)
@example("10.0.0.1\n", 1)
def test_one_address_shortcut_answers_as_the_general_parse(raw: str, max_addresses: int) -> None:
    def answer() -> list[str] | str:
        try:
            return parse_targets(raw, max_addresses=max_addresses)
        except ValidationError as exc:
            return f"{exc.field}: {exc}"

    got = answer()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tg, "_CANONICAL_IPV4", re.compile(r"(?!)"))  # the shortcut never taken
        assert got == answer()
