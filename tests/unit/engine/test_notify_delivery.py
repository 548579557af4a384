"""The notification delivery job over a real engine and journal, with the POST and the backoff sleeps injected:
journal order, filters, the durable cursor, bounded retries with exponential backoff, parking and retrying."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from helpers.engine_io import put

from s4.engine import Engine
from s4.engine.notify.delivery import DeliveryError, Notifier, NotifySettings, backoff
from s4.engine.notify.rules import CONFIG_KIND, Rule, to_record
from s4.engine.notify.store import NotifyStore
from s4.engine.notify.targets import WebhookTarget, arn_of

pytestmark = pytest.mark.anyio
TARGET = WebhookTarget("t1", "http://127.0.0.1:9/unused")


class Receiver:
    """The injected POST: records each delivered message; ``down`` makes it fail."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.down = False
        self.tries = 0

    async def __call__(self, target: WebhookTarget, data: bytes) -> None:
        self.tries += 1
        if self.down:
            raise DeliveryError("HTTP 503")
        self.got.append(json.loads(data))

    def keys(self) -> list[tuple[str, str]]:
        return [(r["Records"][0]["eventName"], r["Records"][0]["s3"]["object"]["key"]) for r in self.got]


async def until(check: Callable[[], bool], what: str) -> None:
    for _ in range(2000):  # bounded: about 20 s of polling at most
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def configure(engine: Engine, prefix: str = "", suffix: str = "") -> None:
    await engine.create_bucket("bkt", actor="user:bob")
    rule = Rule("r1", "Queue", arn_of("t1"), "t1", ("s3:ObjectCreated:*", "s3:ObjectRemoved:*"), prefix, suffix)
    await engine.set_bucket_config("bkt", CONFIG_KIND, to_record([rule]))


def notifier(engine: Engine, receiver: Receiver, sleeps: list[float] | None = None, attempts: int = 3) -> Notifier:
    async def sleep(seconds: float) -> None:
        if sleeps is not None and seconds > 0.05:  # a backoff (polls are 0.01)
            sleeps.append(seconds)
        await asyncio.sleep(0.005)

    return Notifier(engine, [TARGET], NotifySettings(max_attempts=attempts, backoff_s=0.5, backoff_max_s=2.0,
                                                     poll_s=0.01), sleep=sleep, post=receiver)


async def test_one_message_per_matching_change_in_journal_order_and_none_for_filtered_keys(engine: Engine) -> None:
    receiver = Receiver()
    job = notifier(engine, receiver)
    job.start()
    try:
        await configure(engine, prefix="img/", suffix=".jpg")
        await put(engine, "bkt", "img/a.jpg", b"1", actor="user:alice")
        await put(engine, "bkt", "img/a.png", b"2")  # filtered: suffix
        await put(engine, "bkt", "doc/a.jpg", b"3")  # filtered: prefix
        await put(engine, "bkt", "img/b.jpg", b"4")
        await engine.delete_object("bkt", "img/a.jpg")
        await until(lambda: len(receiver.got) >= 3, "3 messages")
        await asyncio.sleep(0.05)
    finally:
        await job.stop()
    assert receiver.keys() == [("ObjectCreated:Put", "img/a.jpg"), ("ObjectCreated:Put", "img/b.jpg"),
                               ("ObjectRemoved:Delete", "img/a.jpg")]
    assert NotifyStore(engine.options.data_dir).cursor("t1") == engine.views.last_seq()
    first = receiver.got[0]["Records"][0]
    assert first["userIdentity"] == {"principalId": "user:alice"}  # who made the change (the journal's actor)
    assert first["s3"]["bucket"]["ownerIdentity"] == {"principalId": "user:bob"}  # whose bucket it is


async def test_a_failing_target_is_retried_with_backoff_then_parked_and_retried_on_request(engine: Engine) -> None:
    receiver, sleeps = Receiver(), []
    receiver.down = True
    job = notifier(engine, receiver, sleeps, attempts=4)
    store = NotifyStore(engine.options.data_dir)
    job.start()
    try:
        await configure(engine)
        await put(engine, "bkt", "k1", b"1")
        await until(lambda: store.count("t1") == 1, "a parked message")
        assert receiver.tries == 4 and sleeps == [0.5, 1.0, 2.0]  # doubled, capped at backoff_max_s
        await until(lambda: store.cursor("t1") == engine.views.last_seq(), "the cursor past the parked event")
        (parked,) = store.listed("t1")
        assert parked.attempts == 4 and "503" in parked.error
        receiver.down = False
        await put(engine, "bkt", "k2", b"2")  # later events are not held up by the parked one
        await until(lambda: len(receiver.got) == 1, "k2 delivered")
        assert store.request_retry("t1") == 1
        await until(lambda: len(receiver.got) == 2, "the parked message delivered")
    finally:
        await job.stop()
    assert receiver.keys() == [("ObjectCreated:Put", "k2"), ("ObjectCreated:Put", "k1")]
    assert store.count("t1") == 0 and store.listed("t1", "retry") == []


async def test_the_cursor_survives_a_restart_and_only_advances_past_answered_events(engine: Engine) -> None:
    receiver = Receiver()
    job = notifier(engine, receiver, attempts=1000)
    job.start()
    store = NotifyStore(engine.options.data_dir)
    try:
        await configure(engine)
        start = engine.views.last_seq()
        await until(lambda: store.cursor("t1") == start, "the configuration's events handled")
        receiver.down = True
        await put(engine, "bkt", "k1", b"1")
        await put(engine, "bkt", "k2", b"2")
        await until(lambda: receiver.tries >= 3, "retries")
    finally:
        await job.stop()  # the process ends while the target is down
    assert store.cursor("t1") == start
    receiver.down = False
    again = notifier(engine, receiver)
    again.start()
    try:
        await until(lambda: len(receiver.got) == 2, "both delivered after the restart")
    finally:
        await again.stop()
    assert receiver.keys() == [("ObjectCreated:Put", "k1"), ("ObjectCreated:Put", "k2")]


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(a, 0.5, 5.0) for a in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff(10_000, 0.5, 60.0) == 60.0


async def test_a_cursor_past_the_journals_end_moves_back_to_it(engine: Engine) -> None:
    """After ``s4-journal repair`` cut the log, its seqs are used again: a cursor left past the end would skip the
    new events of those seqs."""
    receiver = Receiver()
    await configure(engine)
    store = NotifyStore(engine.options.data_dir)
    store.set_cursor("t1", engine.views.last_seq() + 50)
    job = notifier(engine, receiver)
    job.start()
    try:
        await until(lambda: store.cursor("t1") == engine.views.last_seq(), "the cursor moved back")
        await put(engine, "bkt", "after-repair", b"1")
        await until(lambda: len(receiver.got) == 1, "the new event delivered")
    finally:
        await job.stop()
    assert receiver.keys() == [("ObjectCreated:Put", "after-repair")]


async def test_the_cursor_is_saved_while_a_batch_goes_out_not_only_at_its_end(engine: Engine) -> None:
    """A crash in the middle of a long batch resends only what followed the last save (CURSOR_SAVE_S)."""
    await configure(engine)
    await put(engine, "bkt", "k1", b"1")
    await put(engine, "bkt", "k2", b"2")  # both read in one batch by a job started afterwards
    store = NotifyStore(engine.options.data_dir)
    store.set_cursor("t1", engine.views.last_seq() - 2)
    seen_cursor: list[int | None] = []
    receiver = Receiver()

    async def post(target: WebhookTarget, data: bytes) -> None:
        seen_cursor.append(store.cursor("t1"))
        await receiver(target, data)

    ticks = iter(range(0, 10_000, 2))  # every look at the clock is 2 s later
    job = notifier(engine, receiver)
    job.post, job.monotonic = post, lambda: float(next(ticks))
    job.start()
    try:
        await until(lambda: len(receiver.got) == 2, "both delivered")
    finally:
        await job.stop()
    last = engine.views.last_seq()
    assert seen_cursor == [last - 2, last - 1]  # k1's event saved before k2 went out
