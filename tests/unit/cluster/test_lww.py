"""Last-writer-wins: (hlc, origin) is a total order, applying is idempotent and order-independent, and the newest
of R answers names exactly the stale replicas for read repair."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from s4.cluster.lww import Version, newest, supersedes


def test_hlc_decides_first_and_origin_breaks_ties() -> None:
    assert Version(2, "a") > Version(1, "z")
    assert Version(5, "b") > Version(5, "a")
    assert not supersedes(Version(5, "a"), Version(5, "a"))  # the same event twice changes nothing
    assert supersedes(Version(1, "a"), None)


versions = st.builds(Version, st.integers(0, 20), st.sampled_from(["n1", "n2", "n3"]))


@given(st.lists(versions, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_replicas_applying_in_any_order_any_number_of_times_converge(events: list[Version],
                                                                     rnd: random.Random) -> None:
    def apply_all(stream: list[Version]) -> Version | None:
        current: Version | None = None
        for v in stream:
            if supersedes(v, current):
                current = v
        return current

    shuffled = events + rnd.sample(events, k=len(events) // 2)  # duplicates, delivered late
    rnd.shuffle(shuffled)
    assert apply_all(events) == apply_all(shuffled) == max(events)


def test_newest_names_the_stale_and_missing_replicas() -> None:
    answers = {"a": ("old", Version(1, "n1")), "b": None, "c": ("new", Version(2, "n1")),
               "d": ("new", Version(2, "n1"))}
    got = newest(answers, lambda a: a[1])
    assert got.value == ("new", Version(2, "n1")) and got.version == Version(2, "n1")
    assert got.source == "c"  # the first replica with the newest version
    assert got.stale == ("a", "b")


def test_newest_of_nothing_is_nothing_and_nobody_is_stale() -> None:
    got = newest({"a": None, "b": None}, lambda v: v)
    assert got.value is None and got.version is None and got.source is None and got.stale == ()


@given(st.dictionaries(st.sampled_from("abcde"), st.none() | versions, min_size=1))
def test_newest_is_the_maximum_and_stale_is_exactly_the_older_answers(answers: dict[str, Version | None]) -> None:
    got = newest(answers, lambda v: v)
    present = [v for v in answers.values() if v is not None]
    assert got.version == (max(present) if present else None)
    assert set(got.stale) == {r for r, v in answers.items() if present and (v is None or v < max(present))}
    if got.source is not None:
        assert answers[got.source] == got.version
