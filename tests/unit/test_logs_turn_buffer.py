"""Issue 18: the log handler writes the info lines of one event-loop turn with one write
(one system call per burst, not per line), keeps the order of every line, and holds nothing
past the turn: warnings, lines off the loop, flush and a loop that closes mid-turn write at
once."""

from __future__ import annotations

import asyncio
import logging
import threading

from nessus_pool.logs import TurnBufferedHandler


class Stream:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def lines(self) -> list[str]:
        return "".join(self.writes).splitlines()


def make() -> tuple[logging.Logger, Stream, TurnBufferedHandler]:
    stream = Stream()
    handler = TurnBufferedHandler(stream)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test.turn.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream, handler


async def test_a_turns_info_lines_go_out_in_one_write_at_its_end() -> None:
    logger, stream, _ = make()
    logger.info("one")
    logger.info("two")
    logger.debug("three")
    assert stream.writes == []  # still this turn
    await asyncio.sleep(0)  # the turn ends
    assert len(stream.writes) == 1
    assert stream.lines() == ["one", "two", "three"]
    logger.info("four")
    await asyncio.sleep(0)
    assert len(stream.writes) == 2
    assert stream.lines() == ["one", "two", "three", "four"]


async def test_a_warning_goes_out_at_once_after_what_is_pending() -> None:
    logger, stream, _ = make()
    logger.info("one")
    logger.warning("careful")
    assert stream.lines() == ["one", "careful"]
    assert len(stream.writes) == 1
    await asyncio.sleep(0)
    assert len(stream.writes) == 1  # nothing left for the end of the turn


async def test_a_line_from_another_thread_keeps_the_order() -> None:
    logger, stream, _ = make()
    logger.info("loop first")
    t = threading.Thread(target=lambda: logger.info("from a thread"))
    t.start()
    t.join(5)
    assert stream.lines() == ["loop first", "from a thread"]
    logger.info("loop again")
    await asyncio.sleep(0)
    assert stream.lines() == ["loop first", "from a thread", "loop again"]


def test_without_a_loop_each_line_goes_out_at_once() -> None:
    logger, stream, _ = make()
    logger.info("one")
    assert stream.lines() == ["one"]
    logger.info("two")
    assert stream.lines() == ["one", "two"]


def test_a_loop_closed_mid_turn_loses_nothing() -> None:
    logger, stream, handler = make()

    loop = asyncio.new_event_loop()

    def log_and_stop() -> None:
        logger.info("in the last turn")
        loop.stop()  # the loop ends with this turn: the end of turn never runs

    loop.call_soon(log_and_stop)
    loop.run_forever()
    loop.close()
    assert stream.lines() == []

    async def next_loop() -> None:
        logger.info("in a new loop")
        await asyncio.sleep(0)

    asyncio.run(next_loop())
    assert stream.lines() == ["in the last turn", "in a new loop"]
    logger.info("sync")
    handler.flush()
    assert stream.lines() == ["in the last turn", "in a new loop", "sync"]


async def test_flush_writes_what_is_pending() -> None:
    logger, stream, handler = make()
    logger.info("pending")
    handler.flush()  # logging.shutdown() at exit does this
    assert stream.lines() == ["pending"]
