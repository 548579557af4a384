"""``s4-journal`` against a data directory written by the real Engine: dump, verify, replay, export, repair."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from s4.engine import Engine, EngineOptions
from s4.engine.sequencer import Command, Decision
from s4.engine.views.env import pack, unpack
from s4.engine.volumes.record import HEADER_BYTES
from s4.journal import EventType
from s4.journal.segment import list_segments
from s4.tools.journal_cli import main
from s4.tools.journal_commands.events import parse_time, rfc3339_ms
from s4.tools.replay import diff_views, open_views_readonly, rebuild_views, scan_journal

PASSWORD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2VjcmV0LWhhc2g"
SECRET_KEY = "wJalrXUtnFEMI-very-secret-key"


def add_user(d: Decision, args: dict[str, Any]) -> None:
    """A stand-in for the admin API: the user events carry secrets that dump/export must never print."""
    d.emit(EventType.USER_CREATED, {"user_id": "u1", "username": "alice", "role": "admin",
                                    "password_hash": PASSWORD_HASH})
    d.emit(EventType.CREDENTIAL_CREATED, {"user_id": "u1", "access_key": "AKIAALICE", "secret_key": SECRET_KEY})


async def populate(data_dir: Path) -> None:
    engine = Engine(EngineOptions(data_dir, volume_size_bytes=4096, min_part_bytes=1))
    try:
        engine.sequencer.deciders = {**engine.sequencer.deciders, "test_add_user": add_user}
        await engine.sequencer.execute(Command("test_add_user", {}, actor="root"))
        await engine.create_bucket("photos", actor="alice")
        await engine.create_bucket("logs", actor="alice")
        await engine.set_bucket_config("logs", "versioning", "Enabled")
        for i in range(12):
            stored = await engine.ingestor.ingest_bytes(f"object {i} ".encode() * (20 + i))
            await engine.put_object("photos" if i % 3 else "logs", f"2024/{i:02d}.txt", stored, actor="alice",
                                    metadata={"n": str(i)})
        dup = await engine.ingestor.ingest_bytes(b"object 1 " * 21)  # dedup: same bytes as photos/2024/01.txt
        await engine.put_object("photos", "copy-of-01.txt", dup)
        await engine.put_object_tags("photos", "2024/01.txt", None, {"team": "red"})
        await engine.delete_object("photos", "2024/02.txt")
        await engine.delete_object("logs", "2024/03.txt")
        await engine.rename("photos", "2024/", "archive/2024/", client_token="tok-1")
        upload_id = await engine.create_multipart_upload("logs", "big.bin")
        for n in (1, 2):
            part = await engine.ingestor.ingest_bytes(bytes([n]) * 300)
            await engine.upload_part("logs", "big.bin", upload_id, n, part)
        parts = [(n, hashlib.md5(bytes([n]) * 300).hexdigest()) for n in (1, 2)]
        await engine.complete_multipart_upload("logs", "big.bin", upload_id, parts)
        empty = await engine.ingestor.ingest_bytes(b"")
        await engine.put_object("logs", "empty", empty)
        pending = await engine.create_multipart_upload("logs", "pending.bin")  # left in flight
        await engine.upload_part("logs", "pending.bin", pending, 1, await engine.ingestor.ingest_bytes(b"p" * 99))
        await engine.set_bucket_config("photos", "cors", [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}])
    finally:
        engine.close()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("s4data")
    asyncio.run(populate(data_dir))
    return data_dir


@pytest.fixture
def data_dir(pristine: Path, tmp_path: Path) -> Path:
    """A private copy: tests may damage it."""
    copy = tmp_path / "data"
    shutil.copytree(pristine, copy)
    return copy


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def dump(capsys: pytest.CaptureFixture[str], data_dir: Path, *filters: str) -> list[dict[str, Any]]:
    rc, out, _ = run(capsys, "dump", "--data-dir", data_dir, *filters)
    assert rc == 0
    return [json.loads(line) for line in out.splitlines()]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file's bytes except LMDB's lock file (readers register there by design)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != "lock.mdb"}


def flip_byte(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x20
    path.write_bytes(bytes(raw))


# -- dump ------------------------------------------------------------------------------------------------------------
def test_dump_prints_every_event_with_hex_bytes_and_redacted_secrets(capsys: pytest.CaptureFixture[str],
                                                                      data_dir: Path) -> None:
    events = dump(capsys, data_dir)
    assert [e["seq"] for e in events] == list(range(1, scan_journal(data_dir / "journal").last_seq + 1))
    raw = json.dumps(events)
    assert PASSWORD_HASH not in raw and SECRET_KEY not in raw
    user = next(e for e in events if e["type"] == "user.created")
    cred = next(e for e in events if e["type"] == "credential.created")
    assert user["payload"]["password_hash"] == "<redacted>" and user["actor"] == "root"
    assert cred["payload"]["secret_key"] == "<redacted>" and cred["payload"]["access_key"] == "AKIAALICE"
    put = next(e for e in events if e["type"] == "object.version_put")
    digest, volume, offset, size = put["payload"]["blobs_at"][0]
    assert len(bytes.fromhex(digest)) == 32 and volume.endswith(".vol") and offset >= HEADER_BYTES and size > 0
    assert put["time"].endswith("Z") and parse_time(put["time"]) == put["hlc"] >> 16


def test_dump_filters_by_seq_type_and_bucket(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    assert [e["seq"] for e in dump(capsys, data_dir, "--from-seq", "3", "--to-seq", "5")] == [3, 4, 5]
    buckets = dump(capsys, data_dir, "--type", "bucket.created")
    assert [e["payload"]["bucket"] for e in buckets] == ["photos", "logs"]
    multi = dump(capsys, data_dir, "--type", "multipart.*", "--type", "object.tags_set")
    assert {e["type"] for e in multi} == {"multipart.created", "multipart.part_stored", "multipart.completed",
                                          "object.tags_set"}
    logs = dump(capsys, data_dir, "--bucket", "logs", "--type", "object.*")
    assert logs and all(e["payload"]["bucket"] == "logs" for e in logs)
    assert {e["type"] for e in logs} == {"object.version_put", "object.delete_marker_put"}


def test_dump_filters_by_time_in_epoch_ms_and_rfc3339(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    events = dump(capsys, data_dir)
    times = sorted({e["hlc"] >> 16 for e in events})
    middle = times[len(times) // 2]
    since = dump(capsys, data_dir, "--since", str(middle))
    until = dump(capsys, data_dir, "--until", rfc3339_ms(middle))
    assert since and until and len(since) + len(until) == len(events)
    assert all(e["hlc"] >> 16 >= middle for e in since) and all(e["hlc"] >> 16 < middle for e in until)
    assert dump(capsys, data_dir, "--since", "2000-01-01T00:00:00Z", "--until", "2000-01-02") == []


def test_dump_stops_with_an_error_at_mid_log_corruption(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    segment = list_segments(data_dir / "journal")[0]
    flip_byte(segment, 60)  # inside the first record's payload: nothing before it, a lot after it
    rc, out, err = run(capsys, "dump", "--data-dir", data_dir)
    assert rc == 1 and out == "" and "journal corrupt in segment" in err and segment.name in err


def test_read_only_commands_change_nothing(capsys: pytest.CaptureFixture[str], data_dir: Path,
                                           tmp_path: Path) -> None:
    with open(list_segments(data_dir / "journal")[-1], "ab") as fh:
        fh.write(b"\x05\x00\x00")  # a torn tail: start-up would truncate it, the tools must not
    before = snapshot(data_dir)
    for argv in (["dump"], ["verify"], ["replay"], ["export", "--output", tmp_path / "audit.jsonl"],
                 ["export", "--format", "parquet", "--output", tmp_path / "audit.parquet"], ["repair"]):
        run(capsys, *argv, "--data-dir", data_dir)
    assert snapshot(data_dir) == before


# -- verify ----------------------------------------------------------------------------------------------------------
def test_verify_passes_on_a_clean_data_dir(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    rc, out, _ = run(capsys, "verify", "--data-dir", data_dir)
    assert rc == 0, out
    assert "OK: no problems found" in out and "garbage" not in out
    assert "blobs: " in out and "intact" in out


def test_verify_detects_a_flipped_byte_in_a_volume_record(capsys: pytest.CaptureFixture[str],
                                                          data_dir: Path) -> None:
    views = open_views_readonly(data_dir / "views")
    try:
        with views.read() as txn:
            digest, value = next(iter(txn.cursor(views.dbs["blobs"])))
    finally:
        views.close()
    volume, offset, size, _ = unpack(value)
    flip_byte(data_dir / "volumes" / volume, offset + size // 2)
    rc, out, _ = run(capsys, "verify", "--data-dir", data_dir)
    assert rc == 1
    assert f"volume {volume}: damaged record at offset {offset - HEADER_BYTES}" in out
    assert f"blob {digest.hex()}" in out and "data checksum mismatch" in out


def test_verify_reports_crash_garbage_as_unreferenced_not_corrupt(capsys: pytest.CaptureFixture[str],
                                                                  data_dir: Path) -> None:
    volume = sorted((data_dir / "volumes").glob("*.vol"))[-1]
    with open(volume, "ab") as fh:  # a record whose write never completed, then zeros
        fh.write(b"S4VR" + b"\x01" * 30 + bytes(100))
    rc, out, _ = run(capsys, "verify", "--data-dir", data_dir)
    assert rc == 0, out
    assert f"volume {volume.name}: unreferenced garbage, 134 bytes" in out


def test_verify_resynchronises_after_garbage_in_the_middle_of_a_volume(capsys: pytest.CaptureFixture[str],
                                                                       tmp_path: Path) -> None:
    async def put(engine: Engine, key: str) -> None:
        stored = await engine.ingestor.ingest_bytes(f"payload {key}".encode() * 10)
        await engine.put_object("bucket", key, stored)

    async def before_crash() -> None:
        engine = Engine(EngineOptions(tmp_path / "d"))
        try:
            await engine.create_bucket("bucket")
            await put(engine, "k0")
            engine.volumes.append(b"never referenced" * 4, hashlib.sha256(b"x").digest())  # an upload that died
            active = engine.volumes.directory / engine.volumes.active
        finally:
            engine.close()
        with open(active, "ab") as fh:  # and the torn start of another record
            fh.write(b"\0" * 7 + b"S4VR" + b"\xff" * 9)

    async def after_restart() -> None:  # appends continue after the garbage
        engine = Engine(EngineOptions(tmp_path / "d"))
        try:
            await put(engine, "k1")
            await put(engine, "k2")
        finally:
            engine.close()

    asyncio.run(before_crash())
    asyncio.run(after_restart())
    rc, out, _ = run(capsys, "verify", "--data-dir", tmp_path / "d")
    assert rc == 0, out
    assert "volumes: 1 files, 4 intact records" in out  # the unreferenced record is intact, just dead
    assert "unreferenced garbage, 20 bytes" in out
    assert "blobs: 3 in the index, 3 intact" in out


def test_verify_reports_mid_log_journal_corruption(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    segment = list_segments(data_dir / "journal")[0]
    flip_byte(segment, 100)
    rc, out, _ = run(capsys, "verify", "--data-dir", data_dir)
    assert rc == 1 and f"journal: corruption in segment {segment.name}" in out and "refuses to start" in out


def test_verify_notes_a_torn_journal_tail_without_failing(capsys: pytest.CaptureFixture[str],
                                                          data_dir: Path) -> None:
    with open(list_segments(data_dir / "journal")[-1], "ab") as fh:
        fh.write(bytes(64))
    rc, out, _ = run(capsys, "verify", "--data-dir", data_dir)
    assert rc == 0 and "torn tail" in out and "start-up truncates these 64" in out


# -- replay ----------------------------------------------------------------------------------------------------------
def test_replay_reports_identical_views(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    rc, out, _ = run(capsys, "replay", "--data-dir", data_dir)
    assert rc == 0, out
    assert "IDENTICAL" in out and "versions" in out


def test_rebuild_and_diff_functions(data_dir: Path, tmp_path: Path) -> None:
    rebuilt = rebuild_views(data_dir, tmp_path / "rebuilt")
    live = open_views_readonly(data_dir / "views")
    try:
        assert diff_views(live, rebuilt) == []
        assert rebuilt.last_seq() == live.last_seq() == scan_journal(data_dir / "journal").last_seq
        with rebuilt.env.begin(write=True) as txn:
            txn.put(b"photos", pack({"c": 0}), db=rebuilt.dbs["buckets"])
            txn.put(b"zzz-extra", pack({"c": 0}), db=rebuilt.dbs["buckets"])
            txn.delete(b"AKIAALICE", db=rebuilt.dbs["credentials"])
        diffs = diff_views(live, rebuilt)
        assert len(diffs) == 3
        assert diffs[0].startswith("buckets: key 'photos' differs")
        assert diffs[1].startswith("buckets: key 'zzz-extra' only in B")
        assert diffs[2].startswith("credentials: key 'AKIAALICE' only in A")
        assert len(diff_views(live, rebuilt, limit=2)) == 2
    finally:
        live.close()
        rebuilt.close()
    with pytest.raises(ValueError, match="already holds views"):
        rebuild_views(data_dir, tmp_path / "rebuilt")


def test_replay_reports_differences_and_fails(capsys: pytest.CaptureFixture[str], data_dir: Path,
                                              tmp_path: Path) -> None:
    segment = list_segments(data_dir / "journal")[-1]
    with open(segment, "r+b") as fh:  # lose the last event: the live views are now ahead of the journal
        fh.truncate(segment.stat().st_size - 1)
    rc, out, _ = run(capsys, "replay", "--data-dir", data_dir, "--out", tmp_path / "kept")
    assert rc == 1
    assert "ahead of the journal" in out and "DIFFERENT" in out and "meta: key 'last_seq' differs" in out
    assert (tmp_path / "kept" / "data.mdb").exists()


# -- export ----------------------------------------------------------------------------------------------------------
def test_export_jsonl_to_stdout(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    rc, out, _ = run(capsys, "export", "--data-dir", data_dir, "--bucket", "photos")
    assert rc == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows and {r["bucket"] for r in rows} == {"photos"}
    assert set(rows[0]) == {"time", "seq", "origin", "actor", "type", "bucket", "key", "version_id", "details"}
    put = next(r for r in rows if r["type"] == "object.version_put")
    assert put["key"] == "2024/01.txt" and put["version_id"] == "null" and put["actor"] == "alice"
    details = json.loads(put["details"])
    assert "blobs_at" not in details and "b" not in details["version"] and details["version"]["m"] == {"n": "1"}
    rename = next(r for r in rows if r["type"] == "namespace.prefix_renamed")
    assert rename["key"] == "2024/" and json.loads(rename["details"])["dst"] == "archive/2024/"


def test_export_parquet_is_readable_and_redacted(capsys: pytest.CaptureFixture[str], data_dir: Path,
                                                 tmp_path: Path) -> None:
    target = tmp_path / "audit.parquet"
    rc, _, err = run(capsys, "export", "--data-dir", data_dir, "--format", "parquet", "--output", target)
    assert rc == 0 and "exported" in err
    table = pq.read_table(target)
    assert table.column_names == ["time", "seq", "origin", "actor", "type", "bucket", "key", "version_id",
                                  "details"]
    assert table.num_rows == scan_journal(data_dir / "journal").last_seq
    rows = table.to_pylist()
    assert rows[0]["time"].tzinfo is not None
    cred = next(r for r in rows if r["type"] == "credential.created")
    assert json.loads(cred["details"])["secret_key"] == "<redacted>"
    assert SECRET_KEY not in str(rows) and PASSWORD_HASH not in str(rows)
    versioned = [r for r in rows if r["bucket"] == "logs" and r["type"] == "object.delete_marker_put"]
    assert versioned and versioned[0]["version_id"] not in (None, "null")


def test_export_jsonl_to_a_file_with_filters(capsys: pytest.CaptureFixture[str], data_dir: Path,
                                             tmp_path: Path) -> None:
    target = tmp_path / "audit.jsonl"
    rc, _, _ = run(capsys, "export", "--data-dir", data_dir, "--type", "user.*", "--output", target)
    assert rc == 0
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["type"] for r in rows] == ["user.created"]
    assert json.loads(rows[0]["details"])["password_hash"] == "<redacted>"


def test_export_parquet_needs_an_output(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    rc, _, err = run(capsys, "export", "--data-dir", data_dir, "--format", "parquet")
    assert rc == 2 and "--output" in err


# -- repair ----------------------------------------------------------------------------------------------------------
def test_repair_needs_yes_then_truncates_at_the_corruption(capsys: pytest.CaptureFixture[str],
                                                           data_dir: Path) -> None:
    segment = list_segments(data_dir / "journal")[0]
    total = scan_journal(data_dir / "journal").last_seq
    flip_byte(segment, segment.stat().st_size - 200)
    before = segment.read_bytes()
    rc, out, _ = run(capsys, "repair", "--data-dir", data_dir)
    assert rc == 2 and "re-run with --yes" in out and segment.read_bytes() == before
    assert "LOST: seq" in out  # the views applied the events repair drops: it says so before anything changes
    rc, out, _ = run(capsys, "repair", "--data-dir", data_dir, "--yes")
    assert rc == 0 and "repaired: journal ends at seq" in out and "rebuilt the views" in out
    scan = scan_journal(data_dir / "journal")
    assert scan.damage is None and 0 < scan.last_seq < total
    views = open_views_readonly(data_dir / "views")
    try:  # the views were rebuilt from the repaired journal: the server starts on them
        assert views.last_seq() == scan.last_seq
    finally:
        views.close()
    rc, out, _ = run(capsys, "repair", "--data-dir", data_dir, "--yes")
    assert rc == 0 and "nothing to repair" in out


# -- command line ----------------------------------------------------------------------------------------------------
def test_data_dir_defaults_to_the_environment(capsys: pytest.CaptureFixture[str], data_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S4_DATA_DIR", str(data_dir))
    rc, out, _ = run(capsys, "dump", "--to-seq", "1")
    assert rc == 0 and json.loads(out)["seq"] == 1


def test_missing_or_wrong_data_dir_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("S4_DATA_DIR", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["verify"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["verify", "--data-dir", str(tmp_path)])
    assert "not an S4 data directory" in capsys.readouterr().err


def test_console_script_entry_point(data_dir: Path) -> None:
    exe = shutil.which("s4-journal")
    if exe is None:
        pytest.skip("s4-journal is not installed on PATH")
    done = subprocess.run([exe, "dump", "--data-dir", str(data_dir), "--type", "bucket.created"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["payload"]["bucket"] for line in done.stdout.splitlines()] == ["photos", "logs"]
    done = subprocess.run([exe, "verify", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0 and "OK" in done.stdout
