"""Issue 20, pools: a bucket record names the pool it is pinned to (docs/architecture/pools.md, "The cluster-wide
bucket registry"). The create that takes a name pins it; no later change of that life moves it; records written
before pools decode with the defaults (pool "": the registry's own pool) and one-pool records keep their old bytes."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.cluster.cas_rpc import BUCKET_CODEC
from s4.cluster.caspaxos import (
    BucketRecord,
    BucketStatus,
    Outcome,
    abort_delete,
    create_if_absent,
    finish_delete,
    mark_deleting,
)

POOLS = st.sampled_from(["", "pool-1", "pool-2"])
TOKENS = st.sampled_from(["t1", "t2", "t3"])
INCARNATIONS = st.integers(1, 3)
STEPS = st.one_of(
    st.tuples(st.just("create"), TOKENS, POOLS),
    st.tuples(st.just("mark"), TOKENS, st.one_of(st.none(), INCARNATIONS)),
    st.tuples(st.just("finish"), TOKENS, INCARNATIONS),
    st.tuples(st.just("abort"), TOKENS, INCARNATIONS),
)


def apply(current: BucketRecord | None, step: tuple) -> tuple[BucketRecord | None, Outcome]:
    kind, token, arg = step
    if kind == "create":
        fn = create_if_absent("owner", token, arg, 1000 + len(token))
    elif kind == "mark":
        fn = mark_deleting(token, arg)
    elif kind == "finish":
        fn = finish_delete(arg, token)
    else:
        fn = abort_delete(arg, token)
    change = fn(current)
    return change.value, change.outcome.outcome


@settings(max_examples=300, deadline=None)
@given(st.lists(STEPS, max_size=20))
def test_issue20_a_bucket_life_keeps_the_pool_its_create_pinned(steps: list[tuple]) -> None:
    current: BucketRecord | None = None
    pinned: tuple[int, str] | None = None  # (incarnation, pool) of the life that took the name
    for step in steps:
        before = current
        current, outcome = apply(current, step)
        if outcome is Outcome.CREATED and (before is None or before.status is BucketStatus.DELETED):
            assert current is not None and current.pool == step[2] and current.created_ms > 0
            pinned = (current.incarnation, current.pool)
        elif current is not None:
            assert pinned is not None and (current.incarnation, current.pool) == pinned  # nothing moves a bucket
        assert BUCKET_CODEC.decode(BUCKET_CODEC.encode(current)) == current if current is not None else True


def test_issue20_record_without_pool_keeps_format_1_and_old_records_decode_with_defaults() -> None:
    old = BucketRecord(BucketStatus.LIVE, "alice", 2, "tok")
    data = BUCKET_CODEC.encode(old)
    assert msgpack.unpackb(data) == [1, "live", "alice", 2, "tok"]  # byte-identical to the pre-pools format
    assert BUCKET_CODEC.decode(data) == old and old.pool == "" and old.created_ms == 0
    pinned = BucketRecord(BucketStatus.LIVE, "alice", 2, "tok", "pool-2", 1234)
    assert msgpack.unpackb(BUCKET_CODEC.encode(pinned)) == [2, "live", "alice", 2, "tok", "pool-2", 1234]
    assert BUCKET_CODEC.decode(BUCKET_CODEC.encode(pinned)) == pinned


@pytest.mark.parametrize("fields", [[2, "live", "a", 1, "t"], [1, "live", "a", 1, "t", "p", 1],
                                    [2, "live", "a", 1, "t", 5, 1], [3, "live", "a", 1, "t", "p", 1], 7])
def test_issue20_malformed_bucket_records_refused(fields: object) -> None:
    with pytest.raises(ValueError, match="not a bucket record"):
        BUCKET_CODEC.decode(msgpack.packb(fields))
