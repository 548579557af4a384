"""A failed fdatasync of a volume is final for it (engine/volumes/store.py): Linux may drop the pages that failed
to write and reports the error to one fsync only, so a second sync of the same file can succeed over lost bytes.
The write that failed is answered 503 (nothing visible), no later sync of that volume is trusted, and new records
go to a fresh volume."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.engine_io import get, put

from s4.engine import Engine, ErrorCode, S3Error
from s4.engine.volumes.store import VolumeStore, VolumeSyncError

pytestmark = pytest.mark.anyio
_real_fdatasync = os.fdatasync


def _failing_once(match: Callable[[int], bool]) -> Callable[[int], None]:
    """An fdatasync that fails with EIO the first time it is called on a descriptor ``match`` accepts."""
    state = {"failed": False}

    def fdatasync(fd: int) -> None:
        if not state["failed"] and match(fd):
            state["failed"] = True
            raise OSError(errno.EIO, "Input/output error")
        _real_fdatasync(fd)

    return fdatasync


def _is_volume(fd: int) -> bool:
    return os.readlink(f"/proc/self/fd/{fd}").endswith(".vol")


def test_a_failed_sync_is_never_followed_by_a_trusted_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = VolumeStore(tmp_path / "volumes")
    first = store.active
    before = store.append(b"durable before the failure", b"\x01" * 32)
    store.sync([first])
    pending = store.append(b"not yet durable", b"\x02" * 32)
    monkeypatch.setattr(os, "fdatasync", _failing_once(_is_volume))
    with pytest.raises(VolumeSyncError) as failed:
        store.sync([first])
    assert failed.value.errno == errno.EIO and failed.value.volume == first
    # the kernel would answer the next fdatasync with success: the store must not
    with pytest.raises(VolumeSyncError):
        store.sync([first])
    assert store.active != first  # rolled: new records go elsewhere
    after = store.append(b"after the failure", b"\x03" * 32)
    assert after.volume == store.active
    store.sync([after.volume])
    assert store.read_blob(before, 0, before.size) == b"durable before the failure"
    assert pending.volume == first  # written, never acknowledged
    store.close()


async def test_a_put_whose_volume_sync_fails_is_503_and_the_next_goes_to_a_new_volume(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    await engine.create_bucket("bkt")
    await put(engine, "bkt", "kept", b"acknowledged before")
    first = engine.volumes.active
    monkeypatch.setattr(os, "fdatasync", _failing_once(_is_volume))
    with pytest.raises(S3Error) as refused:
        await put(engine, "bkt", "lost", b"never acknowledged")
    assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE and "Retry-After" in refused.value.headers
    with pytest.raises(S3Error) as missing:
        engine.head_object("bkt", "lost")
    assert missing.value.code is ErrorCode.NO_SUCH_KEY
    assert engine.volumes.active != first
    await put(engine, "bkt", "next", b"after the failure")
    assert await get(engine, "bkt", "next") == b"after the failure"
    assert await get(engine, "bkt", "kept") == b"acknowledged before"
