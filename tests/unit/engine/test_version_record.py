"""The one builder of the version record (model.version_record): what every writer stores round-trips through
ObjectVersion, empty optional fields are left out, and ``t`` is the HLC's wall-clock ms."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from s4.engine.model import BlobRef, ObjectVersion, stamped, version_record
from s4.journal.hlc import pack

texts = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)


@given(version_id=st.text(min_size=1, max_size=36), size=st.integers(0, 2**40), etag=st.text(max_size=40),
       marker=st.booleans(), content_type=st.text(max_size=20),
       blobs=st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.integers(0, 2**30)), max_size=4),
       metadata=texts, headers=texts, checksums=texts, tags=texts,
       part_sizes=st.lists(st.integers(0, 2**30), max_size=4), ms=st.integers(0, 2**47), logical=st.integers(0, 65535))
def test_version_record_round_trips_through_object_version(
        version_id: str, size: int, etag: str, marker: bool, content_type: str, blobs: list[tuple[bytes, int]],
        metadata: dict[str, str], headers: dict[str, str], checksums: dict[str, str], tags: dict[str, str],
        part_sizes: list[int], ms: int, logical: int) -> None:
    hlc = pack(ms, logical)
    rec = stamped(version_record(version_id, size, etag, delete_marker=marker, content_type=content_type,
                                 blobs=[list(b) for b in blobs], metadata=metadata, headers=headers,
                                 checksums=checksums, tags=tags, part_sizes=part_sizes), hlc)
    assert rec["t"] == ms and rec["h"] == hlc
    assert not ({"ct", "b"} & rec.keys() if marker else {"dm"} & rec.keys())
    assert all(rec[k] for k in ("m", "hd", "ck", "tg", "ps") if k in rec)  # empty optional fields are left out
    version = ObjectVersion.from_record("k", rec)
    assert version.to_record() == rec
    assert (version.version_id, version.size, version.etag, version.is_delete_marker) == (version_id, size, etag,
                                                                                          marker)
    assert version.blobs == ([] if marker else [BlobRef(h, s) for h, s in blobs])
    assert (version.metadata, version.tags, version.part_sizes) == (metadata, tags, part_sizes)


def test_version_record_without_id_leaves_it_to_the_decider() -> None:
    assert version_record(None, 3, "e", content_type="text/plain", blobs=[[b"h" * 32, 3]]) == {
        "s": 3, "e": "e", "ct": "text/plain", "b": [[b"h" * 32, 3]]}
