"""The read-after-write checker of tests/integration/test_cluster_history.py can fail: each of its rules flags the
history that breaks it, and accepts what the pool may legitimately do (a 503 write seen or not, concurrent writes
in either order, a write whose connection was refused never seen)."""

from __future__ import annotations

from helpers.rw_history import MAYBE, OK, REFUSED, Rec, check


def put(i: int, start: float, end: float, outcome: str = OK, key: str = "k") -> Rec:
    return Rec(i, "put", key, start, end, outcome, f"v{i}".encode())


def delete(i: int, start: float, end: float, outcome: str = OK) -> Rec:
    return Rec(i, "delete", "k", start, end, outcome, None)


def get(i: int, start: float, end: float, value: bytes | None, key: str = "k") -> Rec:
    return Rec(i, "get", key, start, end, OK, value)


def test_a_read_of_the_latest_acknowledged_write_or_of_a_concurrent_one_passes() -> None:
    history = [put(1, 0, 1), get(2, 2, 3, b"v1"), put(3, 4, 6), get(4, 5, 5.5, b"v1"), get(5, 5.6, 7, b"v3"),
               get(6, 8, 9, b"v3"), delete(7, 10, 11), get(8, 12, 13, None)]
    assert check(history) == []


def test_a_read_that_misses_an_acknowledged_write_is_stale() -> None:
    [violation] = check([put(1, 0, 1), put(2, 2, 3), get(3, 4, 5, b"v1")])
    assert violation.startswith("stale read: #3") and "acknowledged (latest) #2" in violation


def test_a_404_after_an_acknowledged_put_is_stale_but_not_after_a_concurrent_delete() -> None:
    assert check([put(1, 0, 1), get(2, 2, 3, None)])[0].startswith("stale read: #2")
    assert check([put(1, 0, 1), delete(2, 1.5, 4, MAYBE), get(3, 2, 3, None)]) == []


def test_a_value_never_written_or_from_a_refused_write_or_read_before_its_write_is_unexplained() -> None:
    assert check([get(1, 0, 1, b"v9")])[0].startswith("unexplained read")
    assert check([put(1, 0, 1, REFUSED), get(2, 2, 3, b"v1")])[0].startswith("unexplained read")
    assert check([get(2, 0, 1, b"v1"), put(1, 2, 3)])[0].startswith("unexplained read")
    assert check([put(1, 0, 1), get(2, 2, 3, b"v1 but not byte-exact")])[0].startswith("unexplained read")


def test_a_maybe_write_may_appear_late_and_never_requires_a_read_to_see_it() -> None:
    history = [put(1, 0, 1), put(2, 2, 3, MAYBE), get(3, 4, 5, b"v1"), get(4, 6, 7, b"v2")]
    assert check(history) == []


def test_a_read_that_goes_back_to_a_superseded_write_is_flagged() -> None:
    # #2 is a 503 (maybe) write seen by #3; #4 then returns #1, which completed before #2 was invoked.
    [violation] = check([put(1, 0, 1), put(2, 2, 3, MAYBE), get(3, 4, 5, b"v2"), get(4, 6, 7, b"v1")])
    assert violation.startswith("read went backwards: #4")
    # Concurrent writes may be read in either order as long as reads do not flip back.
    assert check([put(1, 0, 3), put(2, 0, 3), get(3, 1, 2, b"v2"), get(4, 4, 5, b"v1")]) == []


def test_keys_are_checked_apart() -> None:
    assert check([put(1, 0, 1, key="a"), get(2, 2, 3, None, key="b")]) == []
