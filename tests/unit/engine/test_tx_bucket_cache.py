"""``Tx.bucket`` keeps the last bucket record it read or wrote decoded (a command's decider and the projection of
its events read the same bucket): the copy must always equal what the transaction stores, whichever way the
``buckets`` database is written, and a nested transaction's copy must not outlive the transaction."""

from __future__ import annotations

from s4.engine.model import Bucket
from s4.engine.views import keys
from s4.engine.views.env import Views, pack
from s4.engine.views.records import Tx


def _stored(views: Views, name: str) -> Bucket | None:
    with views.env.begin() as txn:
        return Tx(txn, views.dbs).bucket(name)


def test_a_second_read_answers_from_the_decoded_copy(views: Views) -> None:
    with views.env.begin(write=True) as txn:
        tx = Tx(txn, views.dbs)
        tx.put_bucket(Bucket("a", 1, root=7))
        first = tx.bucket("a")
        assert first is not None and first.root == 7
        assert tx.bucket("a") is first
        other = tx.bucket("b")
        assert other is None
        assert tx.bucket("a") is first  # a miss keeps the copy


def test_the_copy_follows_every_write_of_the_buckets_database(views: Views) -> None:
    with views.env.begin(write=True) as txn:
        tx = Tx(txn, views.dbs)
        tx.put_bucket(Bucket("a", 1, versioning=""))
        assert tx.bucket("a") is not None
        tx.put("buckets", keys.bucket_key("a"), pack(Bucket("a", 1, versioning="Enabled").to_record()))
        read = tx.bucket("a")
        assert read is not None and read.versioning == "Enabled"
        tx.delete("buckets", keys.bucket_key("a"))
        assert tx.bucket("a") is None
        tx.put_bucket(Bucket("a", 2, object_count=3))
        again = tx.bucket("a")
        assert again is not None and again.created_ms == 2 and again.object_count == 3


def test_a_changed_bucket_written_back_is_what_is_stored(views: Views) -> None:
    with views.env.begin(write=True) as txn:
        tx = Tx(txn, views.dbs)
        tx.put_bucket(Bucket("a", 1))
    with views.env.begin(write=True) as txn:
        tx = Tx(txn, views.dbs)
        bucket = tx.bucket("a")
        assert bucket is not None
        bucket.object_count += 1
        tx.put_bucket(bucket)
        assert tx.bucket("a") is bucket
    stored = _stored(views, "a")
    assert stored is not None and stored.object_count == 1


def test_an_aborted_nested_transaction_leaves_no_copy_behind(views: Views) -> None:
    with views.env.begin(write=True) as txn:
        outer = Tx(txn, views.dbs)
        outer.put_bucket(Bucket("a", 1))
        child = views.env.begin(write=True, parent=txn)
        inner = Tx(child, views.dbs)
        bucket = inner.bucket("a")
        assert bucket is not None
        bucket.object_count = 5
        inner.put_bucket(bucket)
        child.abort()
        after = Tx(txn, views.dbs).bucket("a")
        assert after is not None and after.object_count == 0
