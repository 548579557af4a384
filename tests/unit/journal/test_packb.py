"""``journal.codec.packb`` (a Packer kept per thread) gives exactly ``msgpack.packb(value, use_bin_type=True)``'s
bytes: after a value it could not pack, after a large value, and from several threads at once."""

from __future__ import annotations

import threading
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from s4.journal.codec import packb

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text() | st.binary() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20)


@given(values)
def test_same_bytes_as_msgpack_packb(value: Any) -> None:
    assert packb(value) == msgpack.packb(value, use_bin_type=True)


def test_a_failed_pack_leaves_nothing_behind() -> None:
    with pytest.raises(TypeError):
        packb({"a": [1, object()]})
    assert packb({"b": 1}) == msgpack.packb({"b": 1}, use_bin_type=True)
    assert packb(b"x" * 300_000)[-1:] == b"x"
    assert packb([1]) == b"\x91\x01"


def test_threads_each_get_their_own_bytes() -> None:
    wrong: list[Any] = []

    def work(n: int) -> None:
        for i in range(2000):
            value = {"thread": n, "i": i, "pad": "p" * (i % 50)}
            if packb(value) != msgpack.packb(value, use_bin_type=True):
                wrong.append(value)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
