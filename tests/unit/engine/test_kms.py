"""The built-in KMS (engine/kms.py, kms_ops.py): keys created, rotated, disabled and enabled through journal events;
SSE-KMS objects readable across rotations and unreadable while their key is disabled; the projection merges peers'
events in any order; no key material in clear in the journal or the views."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from s4.engine import Engine, ErrorCode, S3Error
from s4.engine.crypto import KmsKey, new_object_keys
from s4.engine.iam import IamError
from s4.engine.kms import HANDLERS, VIEW, current_version
from s4.engine.views import keys
from s4.engine.views.env import pack, unpack
from s4.journal import Event, EventType

pytestmark = pytest.mark.anyio


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def put_kms(engine: Engine, key: str, data: bytes, key_id: str, context: str = "e30=") -> None:
    version, material = engine.kms_material(key_id)
    keys_ = new_object_keys(engine.sse_keys, kms=KmsKey(key_id, version, material, context))
    sealer = keys_.cipher.sealer()
    stored = await engine.ingest(_one(data), sealer=sealer)
    await engine.put_object("bkt", key, stored, encryption=dict(keys_.record, pn=[sealer.prefix]))


async def get(engine: Engine, key: str) -> bytes:
    version = engine.head_object("bkt", key)
    return b"".join([p async for p in engine.read_object(version)])


async def test_rotation_keeps_old_objects_readable_and_disable_stops_reads(engine: Engine) -> None:
    await engine.create_bucket("bkt")
    created = await engine.kms_create_key("testkey-1")
    assert created["enabled"] and created["versions"] == 1
    with pytest.raises(IamError) as refused:
        await engine.kms_create_key("testkey-1")
    assert refused.value.status == 409
    old, new = os.urandom(100_000), os.urandom(5000)
    await put_kms(engine, "old", old, "testkey-1")
    v1 = engine.head_object("bkt", "old").encryption["kv"]
    rotated = await engine.kms_rotate_key("testkey-1")
    assert rotated["versions"] == 2 and rotated["current_version"] != v1
    await put_kms(engine, "new", new, "testkey-1")
    assert engine.head_object("bkt", "new").encryption["kv"] == rotated["current_version"]
    assert await get(engine, "old") == old and await get(engine, "new") == new
    await engine.kms_set_key_enabled("testkey-1", False)
    for name in ("old", "new"):
        with pytest.raises(S3Error) as exc:
            await get(engine, name)
        assert exc.value.code is ErrorCode.KMS_DISABLED
    with pytest.raises(S3Error) as exc:
        engine.kms_material("testkey-1")  # nothing new is encrypted under it either
    assert exc.value.code is ErrorCode.KMS_DISABLED
    await engine.kms_set_key_enabled("testkey-1", True)
    assert await get(engine, "old") == old
    with pytest.raises(S3Error) as exc:
        engine.kms_material("no-such-key")
    assert exc.value.code is ErrorCode.KMS_NOT_FOUND
    assert [k["key_id"] for k in engine.kms_list_keys()] == ["testkey-1"]


async def test_context_is_bound_into_the_wrapping(engine: Engine) -> None:
    await engine.create_bucket("bkt")
    await engine.kms_create_key("k")
    await put_kms(engine, "o", b"x" * 10, "k", context="eyJhIjoiYiJ9")
    version = engine.head_object("bkt", "o")
    version.encryption["ctx"] = "eyJhIjoiYyJ9"  # another context: the data key must not open
    with pytest.raises(S3Error) as exc:
        b"".join([p async for p in engine.read_object(version)])
    assert exc.value.code is ErrorCode.INTERNAL_ERROR


async def test_no_key_material_in_clear_on_disk(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    engine = make_engine()
    await engine.kms_create_key("disk-key")
    await engine.kms_rotate_key("disk-key")
    rec = engine._read(lambda tx: tx.packed(VIEW, keys.text_key("disk-key")))
    materials = [engine.kms_material("disk-key", version)[1] for version in rec["vs"]]
    assert len(materials) == 2
    data = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file())
    for material in materials:
        assert material not in data


class FakeTx:
    """Just what the KMS projection uses of Tx: packed reads and puts of one database."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, bytes], bytes] = {}

    def packed(self, db: str, key: bytes) -> Any:
        raw = self.data.get((db, key))
        return None if raw is None else unpack(raw)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self.data[(db, key)] = value


def test_peer_events_merge_in_any_order() -> None:
    """Two nodes created the same key id concurrently, one rotated, one disabled it, one enabled it again: every
    order of applying those events gives the same record (versions are a set, enabled is last-writer-wins)."""
    ms = 1_700_000_000_000
    events = [
        Event(1, (ms << 16) | 1, "n1", EventType.KMS_KEY_CREATED, {"key_id": "k", "version": "a", "material": b"A"}),
        Event(1, (ms << 16) | 2, "n2", EventType.KMS_KEY_CREATED, {"key_id": "k", "version": "b", "material": b"B"}),
        Event(2, ((ms + 5) << 16), "n1", EventType.KMS_KEY_ROTATED, {"key_id": "k", "version": "c", "material": b"C"}),
        Event(3, ((ms + 7) << 16), "n2", EventType.KMS_KEY_UPDATED, {"key_id": "k", "enabled": False}),
        Event(4, ((ms + 9) << 16), "n1", EventType.KMS_KEY_UPDATED, {"key_id": "k", "enabled": True}),
    ]
    results = set()
    for order in itertools.permutations(events):
        tx = FakeTx()
        for event in (*order, *order):  # and each applied twice: idempotent
            HANDLERS[event.type](tx, event)  # type: ignore[arg-type]
        rec = tx.packed(VIEW, keys.text_key("k"))
        assert current_version(rec) == "c" and rec["en"] is True and sorted(rec["vs"]) == ["a", "b", "c"]
        results.add(pack(rec))
    assert len(results) == 1


async def test_a_version_not_here_yet_is_a_retry_not_a_client_error(engine: Engine) -> None:
    """In a pool an object can name a key version whose event has not reached this node yet: 503 with
    Retry-After (the client retries; catch-up brings the event), not 400 for an object that exists."""
    await engine.create_bucket("bkt")
    await engine.kms_create_key("k")
    await put_kms(engine, "o", b"y" * 10, "k")
    version = engine.head_object("bkt", "o")
    for kid, kv in (("k", "a-version-from-elsewhere"), ("key-from-elsewhere", version.encryption["kv"])):
        version.encryption.update(kid=kid, kv=kv)
        with pytest.raises(S3Error) as exc:
            b"".join([p async for p in engine.read_object(version)])
        assert exc.value.code is ErrorCode.SERVICE_UNAVAILABLE and exc.value.headers["Retry-After"] == "1"
