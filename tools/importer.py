"""``s4-admin import``: copy a bucket from another S3 server into S4, online (docs/migration.md).

    s4-admin [--endpoint URL --access-key K --secret-key S] import --source-endpoint URL --source-access-key K
        --source-secret-key S --source-bucket B [--bucket DEST] [--all-versions] [--watch] [--verify]
        [--workers N] [--state FILE] [--interval SECONDS]

Each source version (the current ones, or every version and delete marker with ``--all-versions``) is read with
boto3 and written to S4 with PutObject (a multipart upload for an object the source stored in parts, with its part
sizes, or one over 5 GiB; DeleteObject for a delete marker) carrying S4's import headers (api/s3/imports.py):
S4 then journals the source's Last-Modified as the version's, so lifecycle ages do not restart at migration time.
A key's versions are written oldest first by one worker (S4 orders a key's versions by when it wrote them); keys go
in parallel over a bounded pool.

Resuming: a state file (one line per source version copied, appended and fsynced after S4 acknowledged it) lets a
restarted import skip what is done without scanning the destination. The one window it cannot cover, S4 committed
but the importer died before its line was written, is closed by S4 itself: each write carries an identity of the
source version (``x-amz-s4-import-source``) and S4 answers a second write of one it already holds with the version
it has, writing nothing (engine/imports.py). So no object is stored twice, and at most ``--workers`` objects are
re-sent after a kill.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

TIME_HEADER = "x-amz-s4-import-last-modified"
SOURCE_HEADER = "x-amz-s4-import-source"
HEADERS_PARAM = "S4Headers"  # popped from a call's parameters before botocore validates them (``_with_headers``)
MAX_SINGLE_PUT = 5 * 1024**3  # S3's largest PutObject: larger objects go as a multipart upload
MAX_PARTS = 10_000
PART_BYTES = 64 * 1024 * 1024  # the part size for a large object the source did not upload in parts
SPOOL_BYTES = 16 * 1024 * 1024  # objects up to this size are buffered in memory, larger ones in a temporary file
MIN_INTERVAL, MAX_INTERVAL = 1.0, 3600.0
COPIED_HEADERS = (("ContentType", "ContentType"), ("ContentEncoding", "ContentEncoding"),
                  ("ContentDisposition", "ContentDisposition"), ("ContentLanguage", "ContentLanguage"),
                  ("CacheControl", "CacheControl"))


@dataclass(frozen=True, slots=True)
class SourceVersion:
    """One version (or delete marker) as the source lists it. ``version_id`` None: the current version of a key
    listed without versions."""

    key: str
    version_id: str | None
    last_modified: datetime
    etag: str
    size: int
    delete_marker: bool = False
    latest: bool = True

    @property
    def identity(self) -> str:
        """What S4 records as ``x-amz-s4-import-source`` and the state file holds: the same for the same source
        version, different for a key overwritten in an unversioned source (new ETag or time)."""
        text = "\n".join((self.key, self.version_id or "", self.etag, str(ms(self.last_modified)),
                          "dm" if self.delete_marker else ""))
        return hashlib.sha256(text.encode()).hexdigest()


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms(when: datetime) -> int:
    return (when - EPOCH) // timedelta(milliseconds=1)


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _with_headers(client: Any) -> Any:
    """Let every call of ``client`` take ``S4Headers={name: value}``: added to the request before it is signed
    (botocore validates parameters against the S3 model, so extra headers cannot be passed as parameters)."""
    def take(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        headers = params.pop(HEADERS_PARAM, None)
        if headers:
            context["s4_headers"] = headers

    def add(request: Any, **_: Any) -> None:
        for name, value in (request.context.get("s4_headers") or {}).items():
            request.headers[name] = value

    client.meta.events.register("provide-client-params.s3.*", take)
    client.meta.events.register("before-sign.s3.*", add)
    return client


def make_client(endpoint: str | None, access: str | None, secret: str | None, region: str, workers: int) -> Any:
    config = Config(max_pool_connections=max(10, workers + 2), retries={"max_attempts": 5, "mode": "standard"})
    return _with_headers(boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access,
                                      aws_secret_access_key=secret, region_name=region, config=config))


class State:
    """The source versions copied so far: one identity per line, appended and fsynced once S4 acknowledged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: set[str] = set()
        if path.exists():
            # a torn last line (killed mid-write) is not a full identity and is ignored: that version is resent
            self.done = {line for line in path.read_text().splitlines() if len(line) == 64}
        self._lock = threading.Lock()
        self._file = open(path, "a")  # held for the import's life: close()
        if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            self._file.write("\n")  # end a torn line, so the next identity starts a line of its own

    def add(self, identity: str) -> None:
        with self._lock:
            self._file.write(identity + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self.done.add(identity)

    def close(self) -> None:
        self._file.close()


@dataclass(slots=True)
class Tally:
    copied: int = 0
    markers: int = 0
    skipped: int = 0
    deleted: int = 0
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self) -> dict[str, Any]:
        return {"copied": self.copied, "delete_markers": self.markers, "already_copied": self.skipped,
                "deleted": self.deleted, "failed": len(self.failed)}


def list_source(client: Any, bucket: str, all_versions: bool) -> dict[str, list[SourceVersion]]:
    """Every key's versions to copy, oldest first. S3 lists a key's versions newest first and boto3 hands them over
    as two lists (versions, delete markers), each in that order; some servers (moto) even list every marker after
    the versions. So each list is reversed and the two merged by Last-Modified, a stable sort: among equal times
    (one tick of the source's clock, a second for some servers) each list keeps its own order, the latest goes
    last, and a version goes before a delete marker (docs/migration.md: the one order that cannot be recovered)."""
    found: dict[str, list[SourceVersion]] = {}
    if all_versions:
        pages = list(client.get_paginator("list_object_versions").paginate(Bucket=bucket))
        for page in reversed(pages):
            for v in reversed(page.get("Versions", [])):
                found.setdefault(v["Key"], []).append(SourceVersion(
                    v["Key"], v.get("VersionId") or "null", v["LastModified"], v.get("ETag", "").strip('"'),
                    int(v.get("Size", 0)), False, bool(v.get("IsLatest"))))
        for page in reversed(pages):
            for m in reversed(page.get("DeleteMarkers", [])):
                found.setdefault(m["Key"], []).append(SourceVersion(
                    m["Key"], m.get("VersionId") or "null", m["LastModified"], "", 0, True, bool(m.get("IsLatest"))))
        for versions in found.values():
            versions.sort(key=lambda v: (v.last_modified, v.latest))
    else:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                found[o["Key"]] = [SourceVersion(o["Key"], None, o["LastModified"], o.get("ETag", "").strip('"'),
                                                 int(o.get("Size", 0)))]
    return found


class Importer:
    """One import: the clients, the state file, the tallies, and the stop flag SIGINT sets."""

    def __init__(self, args: argparse.Namespace, source: Any, dest: Any, state: State,
                 progress: Callable[[int], None] = lambda n: None) -> None:
        self.args = args
        self.source, self.dest, self.state = source, dest, state
        self.dest_bucket = args.bucket or args.source_bucket
        self.tally = Tally()
        self.stop = threading.Event()
        self.progress = progress

    def prepare_destination(self) -> None:
        """Create the destination bucket if needed; with ``--all-versions`` from a bucket that versions, turn
        versioning on so the versions are kept."""
        try:
            self.dest.head_bucket(Bucket=self.dest_bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            self.dest.create_bucket(Bucket=self.dest_bucket)
        if self.args.all_versions:
            status = self.source.get_bucket_versioning(Bucket=self.args.source_bucket).get("Status")
            if status in ("Enabled", "Suspended"):
                self.dest.put_bucket_versioning(Bucket=self.dest_bucket,
                                                VersioningConfiguration={"Status": "Enabled"})

    def pending(self, listing: dict[str, list[SourceVersion]]) -> dict[str, list[SourceVersion]]:
        """Each key's versions the state file does not hold."""
        todo: dict[str, list[SourceVersion]] = {}
        for key, versions in listing.items():
            left = [v for v in versions if v.identity not in self.state.done]
            if left:
                todo[key] = left
        return todo

    def run_pass(self, listing: dict[str, list[SourceVersion]]) -> int:
        """Copy what the state file does not hold; the number of versions it had to copy."""
        todo = self.pending(listing)
        total = sum(len(v) for v in todo.values())
        self.tally.skipped = sum(len(v) for v in listing.values()) - total
        self.tally.failed.clear()  # a pass retries what failed before (the state file does not hold it)
        if not todo:
            return 0
        with ThreadPoolExecutor(max_workers=self.args.workers, thread_name_prefix="s4-import") as pool:
            keys: Iterator[str] = iter(todo)
            running: set[Future[None]] = set()
            while True:  # bounded: one submission per key, at most ``workers`` in flight
                while not self.stop.is_set() and len(running) < self.args.workers:
                    key = next(keys, None)
                    if key is None:
                        break
                    running.add(pool.submit(self.copy_key, key, todo[key]))
                if not running:
                    break
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    fut.result()
        return total

    def copy_key(self, key: str, versions: list[SourceVersion]) -> None:
        for version in versions:  # oldest first, one at a time: S4 orders a key's versions by write
            if self.stop.is_set():
                return
            try:
                self.copy_version(version)
            except (ClientError, BotoCoreError, OSError, ValueError) as exc:
                failure = f"{key} {version.version_id or ''}: {exc}"
                sys.stderr.write(f"s4-admin import: failed: {failure}\n")
                with self.tally.lock:
                    self.tally.failed.append(failure)
                return  # the key's later versions would land out of order: the next run retries them
            self.state.add(version.identity)
            self.progress(1)

    def copy_version(self, v: SourceVersion) -> None:
        stamp = {TIME_HEADER: rfc3339(v.last_modified), SOURCE_HEADER: v.identity}
        if v.delete_marker:
            self.dest.delete_object(Bucket=self.dest_bucket, Key=v.key, S4Headers=stamp)
            with self.tally.lock:
                self.tally.markers += 1
            return
        where: dict[str, Any] = {"Bucket": self.args.source_bucket, "Key": v.key}
        if v.version_id is not None:
            where["VersionId"] = v.version_id
        else:
            where["IfMatch"] = f'"{v.etag}"'  # replaced since listed: 412, and the next pass copies the new one
        layout = self._layout(v, where) if "-" in v.etag or v.size > MAX_SINGLE_PUT else None
        if layout is not None:
            self._copy_parts(v, where, layout, stamp)
        else:
            got = self.source.get_object(**where)
            put = self._described(v.key, got, where, stamp)
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as body:
                shutil.copyfileobj(got["Body"], body, 1024 * 1024)
                got["Body"].close()
                body.seek(0)
                self.dest.put_object(Body=body, **put)
        with self.tally.lock:
            self.tally.copied += 1

    def _described(self, key: str, got: dict[str, Any], where: dict[str, Any],
                   headers: dict[str, str]) -> dict[str, Any]:
        """The PutObject/CreateMultipartUpload parameters that carry a source version's metadata, content
        headers and tags (``got``: its GET or HEAD answer)."""
        headers = dict(headers)
        expires = got["ResponseMetadata"].get("HTTPHeaders", {}).get("expires")
        if expires:
            headers["Expires"] = expires  # as the source sent it (boto3 would reformat a parsed date)
        params: dict[str, Any] = {"Bucket": self.dest_bucket, "Key": key, "Metadata": got.get("Metadata") or {},
                                  HEADERS_PARAM: headers}
        for ours, theirs in COPIED_HEADERS:
            if got.get(theirs):
                params[ours] = got[theirs]
        tags = self._tags(where)
        if tags:
            params["Tagging"] = urllib.parse.urlencode(tags)
        return params

    def _layout(self, v: SourceVersion, where: dict[str, Any]) -> list[int] | None:
        """Part sizes to copy ``v`` with a multipart upload: the source's own parts when its ETag is a multipart
        one (HEAD ?partNumber=N gives each part's size: S4 then computes the very same ``md5-N`` ETag, so --verify
        compares it), else equal parts when it is too large for one PutObject; None: one PutObject will do."""
        if "-" in v.etag:
            count = v.etag.rsplit("-", 1)[1]
            if count.isdigit() and 1 <= int(count) <= MAX_PARTS:
                try:
                    sizes = [int(self.source.head_object(**where, PartNumber=n)["ContentLength"])
                             for n in range(1, int(count) + 1)]
                except (ClientError, KeyError, ValueError):
                    sizes = []
                if sizes and sum(sizes) == v.size:
                    return sizes
        if v.size <= MAX_SINGLE_PUT:
            return None
        part = max(PART_BYTES, -(-v.size // MAX_PARTS))
        return [min(part, v.size - offset) for offset in range(0, v.size, part)]

    def _copy_parts(self, v: SourceVersion, where: dict[str, Any], layout: list[int], stamp: dict[str, str]) -> None:
        """A multipart upload, one part at a time (each read with a ranged GET and spooled); the import stamp goes
        on the completion. Any failure aborts the upload."""
        head = self.source.head_object(**where)
        params = self._described(v.key, head, where, {})
        upload = self.dest.create_multipart_upload(**params)["UploadId"]
        try:
            parts, offset = [], 0
            for number, size in enumerate(layout, 1):
                got = self.source.get_object(**where, Range=f"bytes={offset}-{offset + size - 1}")
                with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as body:
                    shutil.copyfileobj(got["Body"], body, 1024 * 1024)
                    got["Body"].close()
                    body.seek(0)
                    sent = self.dest.upload_part(Bucket=self.dest_bucket, Key=v.key, UploadId=upload,
                                                 PartNumber=number, Body=body)
                parts.append({"PartNumber": number, "ETag": sent["ETag"]})
                offset += size
            self.dest.complete_multipart_upload(Bucket=self.dest_bucket, Key=v.key, UploadId=upload,
                                                MultipartUpload={"Parts": parts}, S4Headers=stamp)
        except BaseException:
            try:
                self.dest.abort_multipart_upload(Bucket=self.dest_bucket, Key=v.key, UploadId=upload)
            except (ClientError, BotoCoreError):
                pass  # the failure that got here is the one to report; compaction expires abandoned uploads
            raise

    def _tags(self, where: dict[str, Any]) -> dict[str, str]:
        query = {k: v for k, v in where.items() if k != "IfMatch"}
        try:
            return {t["Key"]: t["Value"] for t in self.source.get_object_tagging(**query).get("TagSet", [])}
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NotImplemented", "NoSuchTagSet"):
                return {}
            raise

    def delete_gone(self, before: set[str], now: set[str]) -> None:
        """``--watch`` without ``--all-versions``: keys the source no longer has are deleted in S4 too."""
        for key in sorted(before - now):
            if self.stop.is_set():
                return
            self.dest.delete_object(Bucket=self.dest_bucket, Key=key)
            self.tally.deleted += 1


def verify(source: Any, dest: Any, source_bucket: str, dest_bucket: str, all_versions: bool) -> list[str]:
    """Differences between the source and S4: keys, delete markers, sizes, Last-Modified (to the second) and
    ETags. A multipart ETag (``md5-N``) hashes the source's part boundaries, which a single PUT does not keep, so
    for those only the size is compared (and the ETag S4 computed is the MD5 of all the bytes it stored)."""
    theirs, ours = list_source(source, source_bucket, all_versions), list_source(dest, dest_bucket, all_versions)
    problems = []
    for key in sorted(set(theirs) | set(ours)):
        a, b = theirs.get(key, []), ours.get(key, [])
        if not b:
            problems.append(f"{key}: missing in S4")
            continue
        if not a:
            problems.append(f"{key}: in S4 but not in the source")
            continue
        if len(a) != len(b):
            problems.append(f"{key}: {len(a)} versions in the source, {len(b)} in S4")
            continue
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            where = f"{key} (version {index + 1} of {len(a)})"
            if x.delete_marker != y.delete_marker:
                problems.append(f"{where}: delete marker in one side only")
            elif x.size != y.size:
                problems.append(f"{where}: size {x.size} in the source, {y.size} in S4")
            elif not x.delete_marker and x.etag != y.etag and _comparable(x.etag, y.etag):
                problems.append(f"{where}: ETag {x.etag} in the source, {y.etag} in S4")
            if ms(x.last_modified) // 1000 != ms(y.last_modified) // 1000:
                problems.append(f"{where}: Last-Modified {rfc3339(x.last_modified)} in the source, "
                                f"{rfc3339(y.last_modified)} in S4")
    return problems


def _comparable(a: str, b: str) -> bool:
    """Whether two ETags of the same bytes must be equal: both plain MD5s, or both multipart ETags of the same part
    count (the importer copies a multipart object with the source's part sizes). A plain MD5 against ``md5-N`` (a
    source that did not answer HEAD ?partNumber=, so S4 got one PutObject) says nothing: the size is compared."""
    if "-" not in a:
        return "-" not in b
    return "-" in b and a.rsplit("-", 1)[1] == b.rsplit("-", 1)[1]


def _progress_bar(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # on stderr: stdout carries the JSON report
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=False)


def run(args: argparse.Namespace) -> int:
    """The ``import`` command: 0 when everything was copied (and verified), 1 on failures or differences, 130
    when SIGINT stopped a one-shot import before it finished (rerun to resume)."""
    workers = max(1, min(args.workers, 64))
    args.workers = workers
    interval = min(max(args.interval, MIN_INTERVAL), MAX_INTERVAL)
    access = args.access_key or os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("S4_ACCESS_KEY_ID")
    secret = args.secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY") or os.environ.get("S4_SECRET_ACCESS_KEY")
    source = make_client(args.source_endpoint, args.source_access_key, args.source_secret_key, args.source_region,
                         workers)
    dest = make_client(args.endpoint, access, secret, args.region, workers)
    dest_bucket = args.bucket or args.source_bucket
    state_path = Path(args.state or f"s4-import-{args.source_bucket}-to-{dest_bucket}.state")
    state = State(state_path)
    bar = _progress_bar(not args.no_progress and sys.stderr.isatty())
    task = bar.add_task(f"{args.source_bucket} -> {dest_bucket}", total=None) if bar else None
    importer = Importer(args, source, dest, state,
                        (lambda n: bar.advance(task, n)) if bar is not None and task is not None else (lambda n: None))

    def stop(_signum: int, _frame: Any) -> None:
        importer.stop.set()

    previous = signal.signal(signal.SIGINT, stop)
    interrupted = False
    try:
        if bar is not None:
            bar.start()
        importer.prepare_destination()
        listing = list_source(source, args.source_bucket, args.all_versions)
        if bar is not None and task is not None:
            bar.update(task, total=sum(len(v) for v in importer.pending(listing).values()))
        importer.run_pass(listing)
        interrupted = importer.stop.is_set()
        seen = set(listing)
        while args.watch and not importer.stop.wait(interval):  # until SIGINT: each round one listing
            try:
                listing = list_source(source, args.source_bucket, args.all_versions)
                if bar is not None and task is not None:
                    added = sum(len(v) for v in importer.pending(listing).values())
                    bar.update(task, total=(bar.tasks[0].total or 0) + added)
                importer.run_pass(listing)
                if not args.all_versions:
                    importer.delete_gone(seen, set(listing))
                seen = set(listing)
            except (ClientError, BotoCoreError) as exc:  # a source or S4 unreachable for a while: the next round
                sys.stderr.write(f"s4-admin import: watch: {exc}\n")
            sys.stdout.write(json.dumps({"watch": importer.tally.report()}) + "\n")
            sys.stdout.flush()
        if args.watch:
            interrupted = False  # --watch ends by SIGINT: a clean stop
    except (ClientError, BotoCoreError) as exc:
        sys.stderr.write(f"s4-admin import: {exc}\n")
        return 1
    finally:
        signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.stop()
        state.close()
    sys.stdout.write(json.dumps(importer.tally.report()) + "\n")
    if interrupted:
        sys.stderr.write(f"s4-admin import: interrupted; run it again to resume (state: {state_path})\n")
        return 130
    code = 1 if importer.tally.failed else 0
    if args.verify:
        problems = verify(source, dest, args.source_bucket, dest_bucket, args.all_versions)
        for problem in problems:
            sys.stderr.write(f"s4-admin import: verify: {problem}\n")
        sys.stdout.write(json.dumps({"verify": "differences" if problems else "identical",
                                     "differences": len(problems)}) + "\n")
        code = code or (1 if problems else 0)
    return code


def add_parser(sub: Any) -> None:
    p = sub.add_parser("import", help="copy a bucket from another S3 server into S4 (online migration)")
    p.add_argument("--source-endpoint", required=True, help="the source server's URL")
    p.add_argument("--source-access-key", default=os.environ.get("S4_IMPORT_SOURCE_ACCESS_KEY"))
    p.add_argument("--source-secret-key", default=os.environ.get("S4_IMPORT_SOURCE_SECRET_KEY"))
    p.add_argument("--source-region", default="us-east-1")
    p.add_argument("--source-bucket", required=True)
    p.add_argument("--bucket", help="the S4 bucket (default: the source bucket's name)")
    p.add_argument("--all-versions", action="store_true", help="every version and delete marker, oldest first")
    p.add_argument("--watch", action="store_true", help="keep polling the source and applying changes until SIGINT")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between --watch polls (1 to 3600)")
    p.add_argument("--verify", action="store_true", help="compare sizes, ETags and times afterwards; 1 on a difference")
    p.add_argument("--workers", type=int, default=8, help="keys copied in parallel (1 to 64)")
    p.add_argument("--state", help="the resume file (default: s4-import-SRC-to-DEST.state in this directory)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is shown only on a terminal)")
    p.set_defaults(func=run)
